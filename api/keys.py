"""API keys for services and scripts: generated here, shown once, stored as SHA-256 only.

The clear key is returned to the caller of :func:`create_api_key` and never written anywhere;
PostgreSQL keeps its SHA-256 hex digest (a CHECK constraint refuses anything else, migration
0520), the same digest :mod:`api.auth` looks up for every ``X-Api-Key`` request.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from energy.fleet import token_hash

KEY_PREFIX = "ek_"  # recognisable in a leaked-secret scan; the rest is 256 random bits


class ApiKeyScopeError(ValueError):
    """A facility of the requested scope does not exist or belongs to another tenant."""


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_api_key(
    pool: Any,
    tenant_id: str,
    role: str,
    name: str,
    facility_ids: list[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[uuid.UUID, str]:
    """A new key of ``tenant_id`` scoped to ``facility_ids`` (default: every facility of the
    tenant); returns its id and the clear key, which exists nowhere else afterwards."""
    key, key_id = new_api_key(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        owned = {
            r["facility_id"]
            for r in await conn.fetch("SELECT facility_id FROM facilities WHERE tenant_id = $1", tenant_id)
        }
        scope = sorted(owned) if facility_ids is None else sorted(set(facility_ids))
        foreign = [f for f in scope if f not in owned]
        if foreign:
            raise ApiKeyScopeError(f"not facilities of tenant {tenant_id}: {', '.join(foreign)}")
        await conn.execute(
            """INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            key_id,
            tenant_id,
            name,
            token_hash(key),
            role,
            expires_at,
        )
        await conn.executemany(
            "INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2)",
            [(key_id, f) for f in scope],
        )
    return key_id, key


async def revoke_api_key(pool: Any, key_id: uuid.UUID) -> bool:
    async with pool.acquire() as conn:
        done = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
        )
    return bool(done.endswith(" 1"))
