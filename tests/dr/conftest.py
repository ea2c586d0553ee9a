"""Fixtures of the DR tests: a private utility (own id and credentials, enrolled in the seeded
fleet), the BMS and utility simulators as separate processes, the real API served over HTTP,
and an in-process coordinator scoped to the test's utility (so parallel runs never meet)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from dr_coordinator.adapters.ven_credentials import credentials_box, seal_hmac
from energy.settings import Settings
from energy.stack.process import free_port
from sim.bms.process import SimulatorProcess
from tests.waiting import wait_until

FLEET = [f"fac-{i:03d}" for i in range(1, 21)]
# What a poll of the test database may meet on a loaded machine (its 2 s statement timeout) or while a chaos
# test restarts PostgreSQL: "not yet" for the poll, not a failure of what is tested.
PG_TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
)
FINAL = ["completed", "partially_failed", "failed", "cancelled"]
_CREATED_UTILITIES: set[str] = set()


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def _cancel_leftover_events(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Events a test leaves open would be dispatched by any unscoped coordinator later: close them."""
    yield
    if not _CREATED_UTILITIES or "pg_pool" not in request.fixturenames:
        return
    pool = request.getfixturevalue("pg_pool")
    await pool.execute(
        "UPDATE dr_events SET state = 'cancelled' WHERE utility_id = ANY($1::text[]) AND state <> ALL($2::text[])",
        sorted(_CREATED_UTILITIES),
        FINAL,
    )
    await pool.execute(
        """UPDATE bms_commands SET status = 'superseded' WHERE status IN ('pending', 'in_flight')
           AND dr_event_id IN (SELECT dr_event_id FROM dr_events WHERE utility_id = ANY($1::text[]))""",
        sorted(_CREATED_UTILITIES),
    )
    # Their VTNs were this test's simulators: a later `make run` on the same stack must not poll them.
    await pool.execute(
        "UPDATE utilities SET active = false WHERE utility_id = ANY($1::text[])", sorted(_CREATED_UTILITIES)
    )
    _CREATED_UTILITIES.clear()


@dataclass
class Utility:
    utility_id: str
    token: str
    hmac_secret: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def dr_settings(settings: Settings, **dr: Any) -> Settings:
    """The shared settings with DR timings short enough for tests."""
    base = {
        "dispatch_lead_s": 2.0,
        "poll_interval_s": 0.2,
        "min_event_duration_s": 5.0,
        "max_start_skew_s": 5.0,
        "bms_retry_base_s": 0.2,
        "bms_retry_max_s": 1.0,
        "bms_lease_s": 4.0,
        "bms_breaker_reset_s": 60.0,
        "reconcile_interval_s": 3600.0,
        "restore_retry_interval_s": 3600.0,
        "webhook_rate_per_s": 200.0,
        "webhook_burst": 2000,
        "webhook_queue_size": 5000,
    }
    base.update(dr)
    return settings.model_copy(update={"dr": settings.dr.model_copy(update=base)})


async def make_utility(
    pool: Any, uid: str, token: str, vtn_base_url: str | None = None, method: str = "caiso_10in10"
) -> Utility:
    u = Utility(f"util-{uid}", token, f"hmac-{uid}")
    _CREATED_UTILITIES.add(u.utility_id)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO utilities (utility_id, name, vtn_base_url, bearer_token_hash, hmac_secret,
                                      hmac_secret_encrypted, baseline_method)
               VALUES ($1, $2, $3, $4, '', $5, $6)""",
            u.utility_id,
            f"Test utility {uid}",
            vtn_base_url,
            hashlib.sha256(token.encode()).hexdigest(),
            seal_hmac(credentials_box(), u.utility_id, u.hmac_secret),  # sealed at rest as onboarding does (0930)
            method,
        )
        await conn.executemany(
            "INSERT INTO facility_enrollments (utility_id, facility_id) VALUES ($1, $2)",
            [(u.utility_id, f) for f in FLEET],
        )
    return u


@pytest_asyncio.fixture(loop_scope="session")
async def utility(pg_pool: Any, uid: str) -> Utility:
    return await make_utility(pg_pool, uid, f"token-{uid}")


@pytest.fixture
def bms_sim(stack: Any, tmp_path: Path) -> Iterator[SimulatorProcess]:
    with SimulatorProcess.start("bms", free_port(), log_dir=tmp_path) as sim:
        yield sim


@contextlib.asynccontextmanager
async def api_server(settings: Settings) -> AsyncIterator[str]:
    """The real API (api.app.create_app) over HTTP on a free port, in this event loop."""
    from api.app import create_app
    from energy.observability.http import serve_app

    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_app(create_app(settings), "127.0.0.1", port, stop))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await wait_until(
            lambda: healthy(client), timeout_s=60, what=f"API /healthz on {base}", ignore=(httpx.TransportError,)
        )
    try:
        yield base
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def coordinator(settings: Settings, pool: Any, influx: Any, producer: Any = None) -> AsyncIterator[Any]:
    from dr_coordinator.adapters.bms_soap import SoapBmsGateway
    from dr_coordinator.service import Coordinator

    gateway = SoapBmsGateway(settings.dr)
    coord = Coordinator(settings, pool, gateway, influx, producer)
    stop = asyncio.Event()
    task = asyncio.create_task(coord.run(stop))
    try:
        # Started and warmed up before the test goes on: a test that times an event from "now" must not
        # count the coordinator's start-up (seconds on a loaded machine) against the event's lead.
        await wait_until(lambda: coord.warmed.is_set() or task.done(), timeout_s=60, what="coordinator warmed up")
        if task.done():
            task.result()  # the coordinator stopped during its start: its error, not a later timeout
        yield coord
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await coord.timers_report_close()
        await gateway.close()


async def wait_for_state(pool: Any, dr_event_id: uuid.UUID, states: set[str], timeout_s: float) -> str:
    return str(
        await wait_until(
            lambda: pool.fetchval("SELECT state FROM dr_events WHERE dr_event_id = $1", dr_event_id),
            accept=lambda state: state in states,
            timeout_s=timeout_s,
            what=f"event {dr_event_id} in {sorted(states)}",
            interval_s=0.2,
            ignore=PG_TRANSIENT,
        )
    )


async def healthy(client: httpx.AsyncClient) -> bool:
    return (await client.get("/healthz")).status_code == 200


def event_body(
    event_id: str, start: datetime, duration_s: float, facilities: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "start": start.isoformat(),
        "duration_s": duration_s,
        "target_kw": 100.0,
    }
    if facilities is not None:
        body["facilities"] = facilities
    body.update(kw)
    return body


def soon(seconds: float = 4.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def admin(sim: SimulatorProcess, path: str, body: dict[str, Any] | None = None) -> Any:
    with httpx.Client(base_url=sim.base_url, timeout=5) as c:
        resp = c.post(f"/_admin/{path}", json=body) if body is not None else c.get(f"/_admin/{path}")
        resp.raise_for_status()
        return resp.json()


def assert_each_command_applied_once(sim: SimulatorProcess, keys: Iterable[str]) -> None:
    """Every command of ``keys`` changed its zone exactly once, counted per command (facility,
    zone, operation, value) whatever its keys: a command sent again under a new key fails on
    "twice". Duplicates of a key (a retry after a lost answer) are allowed: the BMS answers them
    from its log and counts them in /_admin/executions."""
    wanted = set(keys)
    assert wanted, "no commands to check"
    records = [r for r in admin(sim, "commands") if r["idempotency_key"] in wanted]
    assert {r["idempotency_key"] for r in records} == wanted, "a command never reached the BMS"
    per_command = Counter((r["facility_id"], r["zone_id"], r["operation"], r["value"]) for r in records)
    twice = {c: n for c, n in per_command.items() if n != 1}
    assert not twice, f"executed more than once: {twice}"
    applied = admin(sim, "applied")
    assert all(applied.get(k) == 1 for k in wanted), {k: applied.get(k) for k in wanted if applied.get(k) != 1}
