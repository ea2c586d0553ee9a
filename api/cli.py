"""``energy api run``: serve the REST API and dashboard."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from api.app import run
    from energy.settings import get_settings

    return run(get_settings())


def _seed_users(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from energy.seed import SeedRefusedError, seed_api_principals
    from energy.settings import get_settings

    try:
        print(asyncio.run(seed_api_principals(get_settings())))
    except SeedRefusedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_key(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from datetime import UTC, datetime, timedelta

    from api.keys import ApiKeyScopeError, create_api_key
    from energy.adapters.postgres import create_pool
    from energy.settings import get_settings

    expires_at = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None

    async def add() -> tuple[Any, str]:
        pool = await create_pool(get_settings().postgres, min_size=1, max_size=1)
        try:
            return await create_api_key(pool, args.tenant, args.role, args.name, args.facility, expires_at)
        finally:
            await pool.close()

    try:
        key_id, key = asyncio.run(add())
    except ApiKeyScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"API key {key_id} ({args.role} of {args.tenant}; shown once, stored as SHA-256):")
    print(key)
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    from api.keys import revoke_api_key
    from energy.adapters.postgres import create_pool
    from energy.settings import get_settings

    async def revoke() -> bool:
        pool = await create_pool(get_settings().postgres, min_size=1, max_size=1)
        try:
            return await revoke_api_key(pool, uuid.UUID(args.key_id))
        finally:
            await pool.close()

    done = asyncio.run(revoke())
    print(f"API key {args.key_id} {'revoked' if done else 'was unknown or already revoked'}")
    return 0 if done else 1


def register(sub: Any) -> None:
    parser = sub.add_parser("api", help="REST API and dashboard")
    actions = parser.add_subparsers(dest="api_action", required=True)
    p = actions.add_parser("run", help="serve the API on settings.endpoints.api_host:api_port")
    p.set_defaults(handler=_run)
    p = actions.add_parser("seed-users", help="create the development users and API keys of tenant-a and tenant-b")
    p.set_defaults(handler=_seed_users)
    p = actions.add_parser("add-key", help="create an API key (printed once; only its SHA-256 is stored)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--role", required=True, choices=["operator", "analyst", "facility_manager"])
    p.add_argument("--name", required=True, help="what the key is for, e.g. the script using it")
    p.add_argument("--facility", action="append", default=None, help="scope (repeatable; default: the whole tenant)")
    p.add_argument("--expires-days", type=int, default=None)
    p.set_defaults(handler=_add_key)
    p = actions.add_parser("revoke-key", help="revoke an API key by its id")
    p.add_argument("--key-id", required=True)
    p.set_defaults(handler=_revoke_key)

    from api.export_cli import register as register_export

    register_export(sub)
