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


def register(sub: Any) -> None:
    parser = sub.add_parser("api", help="REST API and dashboard")
    actions = parser.add_subparsers(dest="api_action", required=True)
    p = actions.add_parser("run", help="serve the API on settings.endpoints.api_host:api_port")
    p.set_defaults(handler=_run)
    p = actions.add_parser("seed-users", help="create the development users and API keys of tenant-a and tenant-b")
    p.set_defaults(handler=_seed_users)
