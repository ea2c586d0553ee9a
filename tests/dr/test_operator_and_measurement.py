"""DR-7 guardrail on real forecasts, DR-8 underperformance alert on real rollups, DR-9 operator
controls over the real API, and the outbox relay to a real (private) Kafka broker."""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from dr_coordinator.adapters.store import NewEvent, handle, insert_event
from dr_coordinator.domain.commands import Schedule, StartDispatch
from dr_coordinator.domain.planner import FacilityPlan, Strategy
from dr_coordinator.entrypoints.relay import OutboxRelay
from dr_coordinator.entrypoints.timers import Timers
from dr_coordinator.metrics import UNDERPERFORMING
from energy.adapters.influx import InfluxClient, point
from energy.adapters.kafka import make_producer
from energy.fleet import token_hash
from energy.settings import Settings
from energy.stack.servers import KafkaServer
from energy.stack.topics import ensure_topics_async
from tests.dr.conftest import Utility, api_server, dr_settings, make_utility
from tests.waiting import wait_until


def utcnow() -> datetime:
    return datetime.now(UTC)


async def new_event(
    pool: Any, u: Utility, facilities: list[str], start: datetime, end: datetime, **kw: Any
) -> uuid.UUID:
    async with pool.acquire() as conn, conn.transaction():
        eid, dup = await insert_event(
            conn,
            NewEvent(
                u.utility_id,
                f"ev-{secrets.token_hex(4)}",
                None,
                tuple(facilities),
                start,
                end,
                kw.get("target_kw", 100.0),
                None,
                None,
                0,
                {},
            ),
            utcnow(),
        )
    assert not dup
    return eid


# --- DR-7 ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def forecasts(pool: Any, rows: list[tuple[str, datetime, float, str]]) -> AsyncIterator[None]:
    run_at = utcnow()
    await pool.executemany(
        """INSERT INTO load_forecasts (facility_id, target_ts, run_at, p10_kw, p50_kw, p90_kw, model_version, quality,
                                       seasonal_naive, weather_available, sensor_coverage)
           VALUES ($1, $2, $3, $4 * 0.9, $4, $4 * 1.1, 'dr-test', $5, false, true, 1.0)
           ON CONFLICT (facility_id, target_ts) DO UPDATE SET  -- a forecast `make run` wrote on this stack
             run_at = EXCLUDED.run_at, p10_kw = EXCLUDED.p10_kw, p50_kw = EXCLUDED.p50_kw, p90_kw = EXCLUDED.p90_kw,
             model_version = EXCLUDED.model_version, quality = EXCLUDED.quality,
             seasonal_naive = EXCLUDED.seasonal_naive, weather_available = EXCLUDED.weather_available,
             sensor_coverage = EXCLUDED.sensor_coverage""",
        [(f, ts, run_at, kw, q) for f, ts, kw, q in rows],
    )
    try:
        yield
    finally:
        await pool.executemany(
            "DELETE FROM load_forecasts WHERE facility_id = $1 AND target_ts = $2 AND model_version = 'dr-test'",
            [(f, ts) for f, ts, _, _ in rows],
        )


@pytest.mark.parametrize(("policy", "degraded_strategy"), [("fixed_percentage", "fixed_percentage"), ("hold", "hold")])
async def test_degraded_forecast_switches_to_the_policy_fallback_and_the_choice_is_recorded(
    settings: Settings, pg_pool: Any, uid: str, policy: str, degraded_strategy: str
) -> None:
    u = await make_utility(pg_pool, uid, f"t-{uid}", method="forecast")
    start = datetime(2031, 1, 6, tzinfo=UTC) + timedelta(minutes=15 * random.randrange(10_000))
    end = start + timedelta(minutes=30)
    eid = await new_event(pg_pool, u, ["fac-001", "fac-003"], start, end)
    rows = [
        (f, start + timedelta(minutes=15 * i), 200.0, q)
        for f, q in (("fac-001", "full"), ("fac-003", "degraded_no_weather"))
        for i in range(2)
    ]
    s = dr_settings(settings, forecast_policy=policy)
    timers = Timers(pg_pool, s.dr, utcnow, None, None, None, [u.utility_id])
    async with forecasts(pg_pool, rows):
        await handle(pg_pool, eid, Schedule(), utcnow)
        await timers.planning.dispatch(eid)
    facs = {
        r["facility_id"]: r
        for r in await pg_pool.fetch(
            "SELECT facility_id, state, strategy, target_kw FROM dr_event_facilities WHERE dr_event_id = $1", eid
        )
    }
    assert facs["fac-001"]["strategy"] == "forecast" and facs["fac-001"]["state"] == "dispatching"
    assert facs["fac-003"]["strategy"] == degraded_strategy
    if policy == "hold":
        assert facs["fac-003"]["state"] == "opted_out"
        assert not await pg_pool.fetchval(
            "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND facility_id = 'fac-003'", eid
        )
        # the manual override: an operator releases the hold and the fallback plan is dispatched
        key = await api_key(pg_pool, "tenant-a", "operator", ["fac-001", "fac-003"])
        async with api_server(s) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            resp = await client.post(
                f"/api/dr/operator/events/{eid}/facilities/fac-003/release-hold", headers={"X-Api-Key": key}
            )
            again = await client.post(
                f"/api/dr/operator/events/{eid}/facilities/fac-003/release-hold", headers={"X-Api-Key": key}
            )
        assert resp.status_code == 200, resp.text
        assert again.status_code == 409
        released = await pg_pool.fetchrow(
            "SELECT state, strategy FROM dr_event_facilities WHERE dr_event_id = $1 AND facility_id = 'fac-003'", eid
        )
        assert (released["state"], released["strategy"]) == ("dispatching", "fixed_percentage")
        assert (
            await pg_pool.fetchval(
                "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND facility_id = 'fac-003'", eid
            )
            == 4
        )
    else:
        cmds = await pg_pool.fetch(
            "SELECT zone_id, value FROM bms_commands WHERE dr_event_id = $1 AND facility_id = 'fac-003'", eid
        )
        assert {c["zone_id"] for c in cmds} == {"hvac-1", "hvac-2", "hvac-3", "hvac-4"}
    assert await pg_pool.fetchval("SELECT strategy FROM dr_events WHERE dr_event_id = $1", eid) == (
        f"mixed:{','.join(sorted(['forecast', degraded_strategy]))}"
    )
    plan_log = await pg_pool.fetch(
        "SELECT facility_id, detail FROM dr_event_log WHERE dr_event_id = $1 AND entry_type = 'plan'", eid
    )
    assert {json.loads(r["detail"])["strategy"] for r in plan_log} == {"forecast", degraded_strategy}
    await pg_pool.execute("UPDATE bms_commands SET status = 'superseded' WHERE dr_event_id = $1", eid)


# --- DR-8 alert ----------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def private_influx(settings: Settings, stack: Any, uid: str) -> AsyncIterator[InfluxClient]:
    name = f"dr_alert_{uid}"
    client = InfluxClient(settings.influx.model_copy(update={"database": name}), breaker_name=f"influx-a-{uid}")
    # The rollups' retention policy as the database's default, as the platform reads them from it.
    rp = settings.influx.rollup_retention_policy
    await client.query(f"CREATE DATABASE {name} WITH DURATION 730d NAME {rp}")
    yield client
    await client.query(f"DROP DATABASE {name}")
    await client.close()


async def test_reduction_below_80_percent_of_target_after_grace_period_raises_the_alert(
    settings: Settings, pg_pool: Any, private_influx: InfluxClient, uid: str
) -> None:
    u = await make_utility(pg_pool, uid, f"t-{uid}", method="forecast")
    now = utcnow()
    eid = await new_event(pg_pool, u, ["fac-001", "fac-003"], now - timedelta(minutes=10), now + timedelta(minutes=10))
    await handle(pg_pool, eid, Schedule(), utcnow)
    plans = {f: FacilityPlan(f, Strategy.FORECAST, 20.0, 200.0, 0.0, ()) for f in ("fac-001", "fac-003")}
    await handle(pg_pool, eid, StartDispatch(plans, "forecast"), utcnow)
    assert await pg_pool.fetchval("SELECT state FROM dr_events WHERE dr_event_id = $1", eid) == "active"
    await pg_pool.execute("UPDATE dr_event_facilities SET baseline_kw = 200 WHERE dr_event_id = $1", eid)
    lines = []
    for m in range(0, 11):
        ts = (now - timedelta(minutes=m)).replace(second=0, microsecond=0)
        lines.append(
            point("facility_rollups", {"facility_id": "fac-001", "window": "1m"}, {"avg_kw": 195.0}, ts)
        )  # 5 kW
        lines.append(
            point("facility_rollups", {"facility_id": "fac-003", "window": "1m"}, {"avg_kw": 178.0}, ts)
        )  # 22 kW
    await private_influx.write_lines(lines)
    s = dr_settings(settings, underperformance_after_s=60.0)
    timers = Timers(pg_pool, s.dr, utcnow, private_influx, None, None, [u.utility_id])
    await timers.reconciliation.watch_active(eid)
    assert UNDERPERFORMING.labels(str(eid), "fac-001")._value.get() == 1
    assert UNDERPERFORMING.labels(str(eid), "fac-003")._value.get() == 0


# --- DR-9 ----------------------------------------------------------------------------------------


async def api_key(pool: Any, tenant_id: str, role: str, facilities: list[str]) -> str:
    key, key_id = f"k-{secrets.token_hex(12)}", uuid.uuid4()
    await pool.execute(
        "INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role) VALUES ($1, $2, 'dr test', $3, $4)",
        key_id,
        tenant_id,
        token_hash(key),
        role,
    )
    await pool.executemany(
        "INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2)",
        [(key_id, f) for f in facilities],
    )
    return key


async def test_operator_sees_timeline_opts_a_facility_out_and_cancels_others_are_refused(
    settings: Settings, pg_pool: Any, uid: str
) -> None:
    """fac-001/003 belong to tenant-a, fac-002 to tenant-b (the seeded fleet alternates tenants)."""
    u = await make_utility(pg_pool, uid, f"t-{uid}")
    start = utcnow() + timedelta(hours=3)
    eid = await new_event(pg_pool, u, ["fac-001", "fac-003", "fac-002"], start, start + timedelta(minutes=30))
    operator = await api_key(pg_pool, "tenant-a", "operator", ["fac-001", "fac-003"])
    analyst = await api_key(pg_pool, "tenant-a", "analyst", ["fac-001", "fac-003"])
    other_tenant = await api_key(pg_pool, "tenant-b", "operator", ["fac-002"])
    platform = await api_key(pg_pool, "tenant-a", "platform_admin", [])
    only_b = await new_event(pg_pool, u, ["fac-004"], start, start + timedelta(minutes=30))
    async with api_server(dr_settings(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        op, op_b, admin_ = {"X-Api-Key": operator}, {"X-Api-Key": other_tenant}, {"X-Api-Key": platform}
        assert (
            await client.get(f"/api/dr/operator/events/{eid}/timeline", headers={"X-Api-Key": analyst})
        ).status_code == 403
        assert (
            await client.post(f"/api/dr/operator/events/{eid}/cancel", headers={"X-Api-Key": analyst})
        ).status_code == 403
        assert (await client.get(f"/api/dr/operator/events/{only_b}/timeline", headers=op)).status_code == 404
        # The shared event: each tenant's operator sees only its own facilities.
        mine = (await client.get(f"/api/dr/operator/events/{eid}/timeline", headers=op)).json()
        assert [f["facility_id"] for f in mine["facilities"]] == ["fac-001", "fac-003"]
        received = next(e for e in mine["entries"] if e["entry_type"] == "received")
        assert sorted(received["detail"]["facilities"]) == ["fac-001", "fac-003"]
        theirs = (await client.get(f"/api/dr/operator/events/{eid}/timeline", headers=op_b)).json()
        assert [f["facility_id"] for f in theirs["facilities"]] == ["fac-002"]
        out = await client.post(f"/api/dr/operator/events/{eid}/facilities/fac-003/opt-out", headers=op)
        assert out.status_code == 200, out.text
        for action in ("opt-out", "release-hold"):
            foreign = await client.post(f"/api/dr/operator/events/{eid}/facilities/fac-002/{action}", headers=op)
            assert foreign.status_code == 404, (action, foreign.text)
        again = await client.post(f"/api/dr/operator/events/{eid}/facilities/fac-003/opt-out", headers=op)
        assert again.status_code == 409
        # Neither tenant's operator may cancel the whole (shared) event; the platform role may.
        for headers in (op, op_b):
            refused = await client.post(f"/api/dr/operator/events/{eid}/cancel", headers=headers)
            assert refused.status_code == 403, refused.text
        assert (await pg_pool.fetchval("SELECT state FROM dr_events WHERE dr_event_id = $1", eid)) == "received"
        cancel = await client.post(f"/api/dr/operator/events/{eid}/cancel", headers=admin_)
        assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled", cancel.text
        assert (await client.post(f"/api/dr/operator/events/{eid}/cancel", headers=admin_)).status_code == 409
        tl = (await client.get(f"/api/dr/operator/events/{eid}/timeline", headers=admin_)).json()
    states = {f["facility_id"]: f["state"] for f in tl["facilities"]}
    assert states == {"fac-001": "cancelled", "fac-002": "cancelled", "fac-003": "opted_out"}
    kinds = [e["entry_type"] for e in tl["entries"]]
    assert kinds[0] == "received" and kinds.count("operator_action") == 2
    assert tl["state"] == "cancelled" and tl["version"] == 2


# --- outbox relay ---------------------------------------------------------------------------------


@pytest.mark.chaos
async def test_outbox_relay_publishes_every_row_once_the_paused_broker_returns(
    settings: Settings, pg_pool: Any, private_server: Any, uid: str
) -> None:
    topic = f"dr-relay-{uid}"
    broker = private_server(KafkaServer)
    kafka = settings.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{broker.port}", "request_timeout_s": 2.0}
    )
    await ensure_topics_async(kafka.bootstrap_servers, {topic: 1})
    ids = [uuid.uuid4() for _ in range(50)]
    await pg_pool.executemany(
        "INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, 'k', $3, '{}'::jsonb)",
        [(i, topic, json.dumps({"event_id": str(i)}).encode()) for i in ids],
    )
    producer = make_producer(kafka, request_timeout_ms=2000)
    await producer.start()
    relay = OutboxRelay(pg_pool, producer, utcnow, batch=20, send_timeout_s=3, topics=[topic])
    try:
        assert await relay.publish_once() == 20
        broker.pause()
        with pytest.raises(Exception):  # noqa: B017 - any broker error; the rows must stay unpublished
            await relay.publish_once()
        assert await relay.backlog() == 30
        broker.resume()

        async def published_all() -> bool:  # the test drives the relay: one publish per poll until none is left
            return await relay.publish_once() == 0 and await relay.backlog() == 0

        await wait_until(
            published_all,
            timeout_s=30,
            what="the backlog published after the broker resumed",
            interval_s=0.2,
            ignore=(Exception,),
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        while len(seen) < len(ids):
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for records in batch.values():
                seen |= {json.loads(r.value)["event_id"] for r in records}
    finally:
        await consumer.stop()
    assert seen == {str(i) for i in ids}
