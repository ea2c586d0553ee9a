"""``energy ingestion run`` (the service) and ``energy ingestion add-key`` (a gateway API key)."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from ingestion.service import main

    return main()


def _add_key(args: argparse.Namespace) -> int:
    import asyncio
    import secrets

    from energy.adapters.postgres import create_pool
    from energy.fleet import token_hash
    from energy.settings import get_settings
    from ingestion.registry import upsert_gateway_key

    key = secrets.token_urlsafe(32)

    async def add() -> None:
        pool = await create_pool(get_settings().postgres, min_size=1, max_size=1)
        try:
            await upsert_gateway_key(pool, args.key_id, token_hash(key), args.facility)
        finally:
            await pool.close()

    asyncio.run(add())
    print(f"gateway key {args.key_id} for {args.facility or 'every facility'} (shown once, stored as SHA-256):")
    print(key)
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("ingestion", help="MQTT/HTTP ingestion of meter readings into Kafka")
    actions = parser.add_subparsers(dest="action", required=True)
    p = actions.add_parser("run", help="run the ingestion service (MQTT subscriber + POST /v1/readings)")
    p.set_defaults(handler=_run)
    p = actions.add_parser("add-key", help="create (or rotate) a gateway API key for POST /v1/readings")
    p.add_argument("--key-id", required=True)
    p.add_argument("--facility", default=None, help="facility the key may post for (default: any)")
    p.set_defaults(handler=_add_key)
