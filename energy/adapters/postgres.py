"""asyncpg pool with connect and statement timeouts from settings."""

from __future__ import annotations

import ssl

import asyncpg

from energy.adapters.tls import client_ssl_context
from energy.settings import PostgresSettings


def ssl_option(settings: PostgresSettings) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl=``: off, encrypted without checks ("require"), or verified (verify-full)."""
    if settings.ssl_mode == "disable":
        return False
    if settings.ssl_mode == "require":
        return "require"
    return client_ssl_context(settings.ssl_root_cert)


async def create_pool(
    settings: PostgresSettings, min_size: int | None = None, max_size: int | None = None
) -> asyncpg.Pool:
    timeout_ms = int(settings.command_timeout_s * 1000)
    pool = await asyncpg.create_pool(
        settings.dsn(),
        min_size=min_size if min_size is not None else settings.pool_min,
        max_size=max_size if max_size is not None else settings.pool_max,
        timeout=settings.connect_timeout_s,
        command_timeout=settings.command_timeout_s,
        ssl=ssl_option(settings),
        server_settings={"statement_timeout": str(timeout_ms), "application_name": "energy"},
    )
    assert pool is not None
    return pool
