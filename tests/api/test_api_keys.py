"""API keys are shown once at creation and stored hashed -- API keys, gateway keys and meter keys
(issue 17, decision 0009)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from api.keys import ApiKeyScopeError, create_api_key


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _energy(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("energy")
    argv = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "energy.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, env=os.environ.copy())


async def test_a_created_key_is_stored_as_its_sha256_only_and_authenticates_in_its_scope(client, world, pg_pool):
    first = world.a.facility_ids[0]
    key_id, key = await create_api_key(pg_pool, world.a.tenant_id, "analyst", "nightly export", [first])
    assert key.startswith("ek_") and len(key) >= 40
    row = await pg_pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    assert row["key_hash"] == _sha256(key)
    assert all(key not in str(value) for value in row.values())
    me = await client.get("/api/auth/me", headers={"X-Api-Key": key})
    assert me.status_code == 200, me.text
    assert me.json()["kind"] == "api_key" and me.json()["facility_ids"] == [first]


async def test_a_key_cannot_be_scoped_to_another_tenants_facility(world, pg_pool):
    name = f"cross-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ApiKeyScopeError, match=world.b.facility_ids[0]):
        await create_api_key(pg_pool, world.a.tenant_id, "analyst", name, [world.b.facility_ids[0]])
    assert await pg_pool.fetchval("SELECT count(*) FROM api_keys WHERE name = $1", name) == 0


async def test_the_database_refuses_a_clear_text_api_key_or_meter_key(world, pg_pool):
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(
            "INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role) VALUES ($1, $2, 'x', $3, 'analyst')",
            uuid.uuid4(),
            world.a.tenant_id,
            "ek_clear-text-key-that-someone-pasted",
        )
    meter_id = world.a.meter_ids[world.a.facility_ids[0]][0]
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute("UPDATE meters SET api_key_hash = $1 WHERE meter_id = $2", "meter-key-in-clear", meter_id)
    # A digest is accepted.
    await pg_pool.execute("UPDATE meters SET api_key_hash = $1 WHERE meter_id = $2", _sha256("m"), meter_id)


async def test_the_cli_prints_an_api_key_once_and_stores_its_digest(world, pg_pool):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    out = _energy("api", "add-key", "--tenant", world.a.tenant_id, "--role", "analyst", "--name", name)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert out.stdout.count(key) == 1
    assert await pg_pool.fetchval("SELECT key_hash FROM api_keys WHERE name = $1", name) == _sha256(key)
    key_id = await pg_pool.fetchval("SELECT key_id FROM api_keys WHERE name = $1", name)
    revoked = _energy("api", "revoke-key", "--key-id", str(key_id))
    assert revoked.returncode == 0, revoked.stderr
    assert await pg_pool.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1", key_id)


async def test_the_cli_prints_a_gateway_key_once_and_stores_its_digest(world, pg_pool):
    key_id = f"gw-{uuid.uuid4().hex[:8]}"
    out = _energy("ingestion", "add-key", "--key-id", key_id, "--facility", world.a.facility_ids[0])
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert out.stdout.count(key) == 1 and len(key) >= 40
    row = await pg_pool.fetchrow("SELECT * FROM ingestion_gateway_keys WHERE key_id = $1", key_id)
    assert row["key_hash"] == _sha256(key)
    assert all(key not in str(value) for value in row.values())
    await pg_pool.execute("UPDATE ingestion_gateway_keys SET revoked_at = now() WHERE key_id = $1", key_id)
