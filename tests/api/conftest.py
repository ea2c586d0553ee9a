"""Fixtures of the API tests: an app on the real stack, and per-test tenants with principals.

Each test builds its own two tenants (``World``) with unique ids, facilities, users of every
role and an API key, so tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest_asyncio

from api.app import create_app
from api.auth import TokenKeys, issue_token
from api.passwords import hash_password
from energy.adapters.influx import point
from energy.fleet import token_hash

PASSWORD = "correct horse battery staple"


@dataclass
class Tenant:
    tenant_id: str
    facility_ids: list[str]
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> auth headers
    emails: dict[str, str] = field(default_factory=dict)
    api_key: str = ""
    meter_ids: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class World:
    a: Tenant
    b: Tenant


async def make_tenant(pg_pool: Any, settings: Any, tag: str, n_facilities: int = 2, meters: int = 2) -> Tenant:
    tenant_id = f"t{tag}"
    facility_ids = [f"f{tag}-{i}" for i in range(1, n_facilities + 1)]
    tenant = Tenant(tenant_id, facility_ids)
    keys = TokenKeys.from_settings(settings)
    async with pg_pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)", tenant_id, f"Tenant {tag}")
        for i, fid in enumerate(facility_ids, start=1):
            await conn.execute(
                """INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude, peak_kw)
                   VALUES ($1, $2, $3, 'office', 'Europe/London', 51.5, -0.1, 500)""",
                fid,
                tenant_id,
                f"Test facility {tag} {i}",
            )
            tenant.meter_ids[fid] = [f"{fid}-m{j:02d}" for j in range(1, meters + 1)]
            for mid in tenant.meter_ids[fid]:
                await conn.execute(
                    "INSERT INTO meters (meter_id, facility_id, meter_type, rated_kw) VALUES ($1, $2, 'submeter', 100)",
                    mid,
                    fid,
                )
        for role in ("operator", "analyst", "facility_manager"):
            user_id = uuid.uuid4()
            email = f"{role}-{tag}@example.test"
            await conn.execute(
                "INSERT INTO users (user_id, tenant_id, email, role, password_hash) VALUES ($1, $2, $3, $4, $5)",
                user_id,
                tenant_id,
                email,
                role,
                hash_password(PASSWORD),
            )
            scope = facility_ids[:1] if role == "facility_manager" else facility_ids
            await conn.executemany(
                "INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2)",
                [(user_id, f) for f in scope],
            )
            token, _ = issue_token(user_id, tenant_id, role, keys, 3600, datetime.now(UTC))
            tenant.headers[role] = {"Authorization": f"Bearer {token}"}
            tenant.emails[role] = email
        key_id = uuid.uuid4()
        tenant.api_key = f"key-{tag}-{uuid.uuid4().hex}"
        await conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role) VALUES ($1, $2, $3, $4, 'analyst')",
            key_id,
            tenant_id,
            f"key {tag}",
            token_hash(tenant.api_key),
        )
        await conn.executemany(
            "INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2)",
            [(key_id, f) for f in facility_ids],
        )
        tenant.headers["api_key"] = {"X-Api-Key": tenant.api_key}
    return tenant


@pytest_asyncio.fixture(loop_scope="session")
async def world(pg_pool: Any, settings: Any, uid: str) -> World:
    return World(await make_tenant(pg_pool, settings, f"a{uid}"), await make_tenant(pg_pool, settings, f"b{uid}"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api_app(stack: Any, settings: Any) -> AsyncIterator[Any]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(loop_scope="session")
async def client(api_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=30) as c:
        yield c


def reading_lines(facility_id: str, meter_id: str, ts_ns: int, kw: float, seq: int = 0) -> str:
    return point(
        "readings",
        {"facility_id": facility_id, "meter_id": meter_id},
        {
            "active_power_kw": float(kw),
            "reactive_power_kvar": 1.0,
            "voltage_v": 230.0,
            "current_a": 10.0,
            "energy_kwh": 1000.0 + seq,
            "seq": seq,
            "anomalies": "",
            "reading_id": f"{meter_id}-{seq}",
        },
        ts_ns,
    )


def rollup_line(
    facility_id: str,
    window: str,
    ts_ns: int,
    avg_kw: float,
    measurement: str = "facility_rollups",
    meter_id: str | None = None,
) -> str:
    tags = {"facility_id": facility_id, "window": window}
    if meter_id:
        tags["meter_id"] = meter_id
    return point(
        measurement,
        tags,
        {
            "energy_kwh": avg_kw / 60,
            "energy_register_kwh": avg_kw / 60,
            "avg_kw": float(avg_kw),
            "min_kw": avg_kw - 1.0,
            "max_kw": avg_kw + 1.0,
            "sample_count": 4,
            "coverage": 1.0,
        },
        ts_ns,
    )


def with_overrides(settings: Any, **groups: dict[str, Any]) -> Any:
    """A copy of the settings with some fields of some groups replaced, e.g. api={"export_page_rows": 100}."""
    update = {name: getattr(settings, name).model_copy(update=values) for name, values in groups.items()}
    return settings.model_copy(update=update)


@contextlib.asynccontextmanager
async def running_app(settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app of its own (own cache, breakers, limiter) with an in-process client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=30) as c:
            yield app, c


def now_ns() -> int:
    return time.time_ns()


async def wait_until_serving(app: Any, port: int, deadline_s: float = 30.0) -> None:
    """Until the app's lifespan has run *and* its port accepts connections: uvicorn binds the
    socket only after the lifespan startup, so the lifespan alone leaves a window."""
    import asyncio

    from tests.waiting import wait_until

    async def serving() -> bool:
        if getattr(app.state, "current_cache", None) is None:
            return False
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(
        serving, timeout_s=deadline_s, what=f"the app serving on port {port}", interval_s=0.05, ignore=(OSError,)
    )
