"""DR-3..DR-8 end to end: the utility's VTN simulator notifies our webhook, the saga dispatches
20 facilities through the BMS simulator (SOAP), restores them, measures the reduction from
meter rollups in InfluxDB and reports back to the VTN."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from dr_coordinator.entrypoints.vtn_reporting import SETTLEMENT_WAIT_S
from energy.adapters.influx import InfluxClient, point
from energy.observability.metrics import REGISTRY
from energy.settings import Settings
from energy.stack.process import free_port
from sim.bms.process import SimulatorProcess
from tests.dr.conftest import (
    FLEET,
    PG_TRANSIENT,
    api_server,
    assert_each_command_applied_once,
    coordinator,
    dr_settings,
    healthy,
    make_utility,
    wait_for_state,
)
from tests.waiting import wait_until

BASELINE_KW = 300.0
DURING_KW = 250.0
# Planning 20 facilities (each baseline reads 60 days of rollups) starts at the dispatch moment (start - lead)
# and took 10-16 s at load 10-11 and 31 s at load 18 (CPU-bound: 2 cores shared by everything). With the shared
# tests' 2 s lead and a 15 s event, the event ended before every facility was active: the saga went
# dispatching -> restoring, or the event was "missed". 45 s of lead + the 15 s event give planning twice the
# worst time seen; production's lead is 60 s.
PLANNING_LEAD_S = 45.0
FINAL_STATES = {"completed", "partially_failed", "failed"}
# One simulator process plays all 20 buildings (up to 80 calls at once). At load 13 it accepted connections
# more than 2 s late (production's per-building connect timeout): ConnectTimeout, the facility's breaker
# opened for the shared tests' 60 s, and its restores failed for good. That is a starved local process, not
# a dead BMS (the chaos tests cover those); 10 s still fails a simulator that does not answer at all. The
# call's total bound (5 s) is raised with it, to the connect bound plus production's 5 s for the answer.
SIMULATOR_CONNECT_TIMEOUT_S = 10.0


@pytest_asyncio.fixture(loop_scope="session")
async def private_influx(settings: Settings, stack: Any, uid: str) -> AsyncIterator[InfluxClient]:
    """A database of its own on the shared InfluxDB: the live pipeline's rollups cannot interfere."""
    name = f"dr_test_{uid}"
    cfg = settings.influx.model_copy(update={"database": name})
    client = InfluxClient(cfg, breaker_name=f"influx-{uid}")
    # The rollups' retention policy as the database's default, as the platform reads them from it.
    rp = settings.influx.rollup_retention_policy
    await client.query(f"CREATE DATABASE {name} WITH DURATION 730d NAME {rp}")
    yield client
    await client.query(f"DROP DATABASE {name}")
    await client.close()


def floor(ts: datetime, minutes: int) -> datetime:
    return ts.replace(second=0, microsecond=0) - timedelta(minutes=ts.minute % minutes)


async def write_history(influx: InfluxClient, until: datetime) -> None:
    """60 days of 15 min rollups at BASELINE_KW before ``until`` (the interval baseline's history)."""
    lines = []
    for fid in FLEET:
        t = floor(until, 15) - timedelta(days=61)
        while t < until:
            lines.append(point("facility_rollups", {"facility_id": fid, "window": "15m"}, {"avg_kw": BASELINE_KW}, t))
            t += timedelta(minutes=15)
    for i in range(0, len(lines), 10_000):
        await influx.write_lines(lines[i : i + 10_000])


async def write_event_load(influx: InfluxClient, start: datetime, end: datetime) -> None:
    """15 min and 1 min rollups at DURING_KW over the event's quarter hours / minutes."""
    lines = []
    for fid in FLEET:
        t = floor(start, 15)
        while t < end:
            lines.append(point("facility_rollups", {"facility_id": fid, "window": "15m"}, {"avg_kw": DURING_KW}, t))
            t += timedelta(minutes=15)
        t = floor(start, 1)
        while t < end:
            lines.append(point("facility_rollups", {"facility_id": fid, "window": "1m"}, {"avg_kw": DURING_KW}, t))
            t += timedelta(minutes=1)
    await influx.write_lines(lines)


@pytest.mark.slow
async def test_event_over_20_facilities_runs_from_vtn_webhook_to_report(
    settings: Settings,
    stack: Any,
    pg_pool: Any,
    private_influx: InfluxClient,
    uid: str,
    tmp_path: Path,
    finished_spans: Any,
) -> None:
    token = settings.seed.utility_bearer_token.get_secret_value()
    api_port = free_port()
    utility_id = f"util-{uid}"
    callback = f"http://127.0.0.1:{api_port}/api/utility/{utility_id}/openadr3/notifications"
    with (
        SimulatorProcess.start("bms", free_port(), log_dir=tmp_path) as bms,
        SimulatorProcess.start("utility", free_port(), "--callback-url", callback, log_dir=tmp_path) as vtn,
    ):
        vtn_base = vtn.url("/openadr3/3.1.0")
        await make_utility(pg_pool, uid, token, vtn_base)
        s = dr_settings(
            settings,
            bms_base_url=bms.url("/bms"),
            only_utility_ids=utility_id,
            vtn_token=settings.dr.vtn_token,
            dispatch_lead_s=PLANNING_LEAD_S,
            bms_connect_timeout_s=SIMULATOR_CONNECT_TIMEOUT_S,
            bms_total_timeout_s=SIMULATOR_CONNECT_TIMEOUT_S + 5.0,
        )
        s = s.model_copy(update={"endpoints": s.endpoints.model_copy(update={"api_port": api_port})})
        await write_history(private_influx, floor(datetime.now(UTC), 15))
        dispatches_before = REGISTRY.get_sample_value("energy_dr_dispatch_seconds_count") or 0.0
        in_time_before = REGISTRY.get_sample_value("energy_dr_dispatch_seconds_bucket", {"le": "60.0"}) or 0.0
        async with (
            api_server_on(s, api_port),
            kafka_producer(s) as producer,
            coordinator(s, pg_pool, private_influx, producer),
            httpx.AsyncClient(base_url=vtn_base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client,
        ):
            # the start is taken once the servers are up, so a slow start-up cannot put it in the past
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=PLANNING_LEAD_S + 3)
            end = start + timedelta(seconds=15)
            await write_event_load(private_influx, start, end)
            created = await client.post(
                "/events",
                json={
                    "programID": "default",
                    "eventName": f"peak-{uid}",
                    "targets": [{"type": "RESOURCE_NAME", "values": FLEET}],
                    "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": "PT15S"},
                    "intervals": [{"id": 0, "payloads": [{"type": "LOAD_SHED_DELTA_AVAILABLE", "values": [400.0]}]}],
                },
            )
            assert created.status_code == 201, created.text
            vtn_event_id = created.json()["id"]
            dr_event_id = await wait_for_event(pg_pool, utility_id, vtn_event_id)
            assert (
                await wait_for_state(pg_pool, dr_event_id, FINAL_STATES, (end - datetime.now(UTC)).total_seconds() + 60)
                == "completed"
            )
            # the preliminary settlement of every facility, interval by interval, then the report, which waits
            # for them: up to SETTLEMENT_WAIT_S after the end, the product's own bound (a 20 s deadline for the
            # report failed at load 14 while the 20 settlements were still being written)
            await wait_until(
                lambda: pg_pool.fetchval(
                    "SELECT count(*) FROM dr_settlement_runs WHERE dr_event_id = $1 AND kind = 'preliminary'",
                    dr_event_id,
                ),
                accept=lambda settled: settled == len(FLEET),
                timeout_s=SETTLEMENT_WAIT_S,
                what="a preliminary settlement of every facility",
                interval_s=0.2,
                ignore=PG_TRANSIENT,
            )
            await wait_until(
                lambda: pg_pool.fetchval("SELECT reported_at FROM dr_events WHERE dr_event_id = $1", dr_event_id),
                timeout_s=30,
                what="the report to the VTN posted once every facility was settled",
                interval_s=0.2,
                ignore=PG_TRANSIENT,
            )
            reports = (await client.get("/reports")).json()

        # baselines were frozen at dispatch; settlement intervals carry baseline, metered load, reduction
        frozen = await pg_pool.fetch("SELECT facility_id, method FROM dr_baselines WHERE dr_event_id = $1", dr_event_id)
        assert {r["facility_id"] for r in frozen} == set(FLEET)
        intervals = await pg_pool.fetch(
            """SELECT facility_id, baseline_kw, metered_kw, reduction_kw, coverage_pct FROM dr_settlement_intervals
               WHERE dr_event_id = $1 AND version = 1""",
            dr_event_id,
        )
        assert {r["facility_id"] for r in intervals} == set(FLEET)
        for r in intervals:
            assert r["baseline_kw"] == pytest.approx(BASELINE_KW)
            assert r["metered_kw"] == pytest.approx(DURING_KW)
            assert r["reduction_kw"] == pytest.approx(BASELINE_KW - DURING_KW)
            assert r["coverage_pct"] == pytest.approx(100.0)

        # every facility shed and came back
        states = await pg_pool.fetch(
            "SELECT facility_id, state, achieved_kw, baseline_kw FROM dr_event_facilities WHERE dr_event_id = $1",
            dr_event_id,
        )
        assert {r["state"] for r in states} == {"restored"} and len(states) == 20
        assert all(r["baseline_kw"] == pytest.approx(BASELINE_KW) for r in states)
        assert all(r["achieved_kw"] == pytest.approx(BASELINE_KW - DURING_KW) for r in states)

        # each command executed exactly once by the BMS, and every dispatched zone restored
        cmds = await pg_pool.fetch(
            "SELECT idempotency_key, facility_id, zone_id, action, status FROM bms_commands WHERE dr_event_id = $1",
            dr_event_id,
        )
        assert cmds and all(c["status"] == "acknowledged" for c in cmds)
        # (a retry after an answer lost to a timeout under load is a duplicate the BMS answers from its log:
        # applied once, which is what "exactly once" means; counting executions failed on it at load 14)
        assert_each_command_applied_once(bms, [c["idempotency_key"] for c in cmds])
        shed = {(c["facility_id"], c["zone_id"]) for c in cmds if c["action"] != "restore"}
        restored = {(c["facility_id"], c["zone_id"]) for c in cmds if c["action"] == "restore"}
        assert shed == restored and {f for f, _ in shed} == set(FLEET)

        # the transitions are in the append-only log, in order
        chain = [
            r["to_state"]
            for r in await pg_pool.fetch(
                """SELECT to_state FROM dr_event_log
                   WHERE dr_event_id = $1 AND facility_id IS NULL AND to_state IS NOT NULL ORDER BY seq""",
                dr_event_id,
            )
        ]
        assert chain == ["received", "scheduled", "dispatching", "active", "restoring", "completed"]
        assert await pg_pool.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1 AND topic = 'dr-events'", str(dr_event_id)
        ) == len(chain) + 4 * len(FLEET)  # each facility: dispatching, active, restoring, restored

        # metrics the alert rules and dashboards use
        assert (
            REGISTRY.get_sample_value("energy_dr_transitions_total", {"scope": "event", "to_state": "completed"}) >= 1
        )
        assert REGISTRY.get_sample_value("energy_dr_reports_total", {"outcome": "ok"}) >= 1
        # SLO 3: this event's dispatch was measured once, and it was within 60 s of its start
        assert REGISTRY.get_sample_value("energy_dr_dispatch_seconds_count") == dispatches_before + 1
        assert REGISTRY.get_sample_value("energy_dr_dispatch_seconds_bucket", {"le": "60.0"}) == in_time_before + 1

        # the utility got one report with every facility's baseline, demand and delta
        mine = [r for r in reports if r.get("eventID") == vtn_event_id]
        assert len(mine) == 1
        resources = {r["resourceName"]: r for r in mine[0]["resources"]}
        assert set(resources) == set(FLEET)
        payloads = {p["type"]: p["values"][0] for p in resources["fac-001"]["intervals"][0]["payloads"]}
        assert payloads["BASELINE"] == pytest.approx(BASELINE_KW) and payloads["DEMAND"] == pytest.approx(DURING_KW)
        assert payloads["OPERATING_STATE"] == "NORMAL" and payloads["USAGE"] > 0
        # interval by interval, the values of the settlement the report waited for
        settled = await pg_pool.fetch(
            """SELECT interval_start, interval_end, metered_kw, baseline_kw FROM dr_settlement_intervals
               WHERE dr_event_id = $1 AND facility_id = 'fac-001' AND version = 1 ORDER BY interval_start""",
            dr_event_id,
        )
        reported = resources["fac-001"]["intervals"]
        assert [i["intervalPeriod"]["start"] for i in reported] == [
            r["interval_start"].astimezone(UTC).isoformat().replace("+00:00", "Z") for r in settled
        ]
        for interval, row in zip(reported, settled, strict=True):
            got = {p["type"]: p["values"][0] for p in interval["payloads"]}
            assert got["DEMAND"] == pytest.approx(row["metered_kw"]) and got["BASELINE"] == pytest.approx(
                row["baseline_kw"]
            )
        kinds = {d["payloadType"] for d in mine[0]["payloadDescriptors"]}
        assert_one_trace_from_webhook_to_bms(finished_spans.get_finished_spans(), dr_event_id)
        assert kinds == {"OPERATING_STATE", "USAGE", "DEMAND", "BASELINE"}
        assert all(d["objectType"] == "REPORT_PAYLOAD_DESCRIPTOR" for d in mine[0]["payloadDescriptors"])


@contextlib.asynccontextmanager
async def kafka_producer(s: Settings) -> Any:
    """A real producer, so the coordinator's outbox relay publishes the event's rows to Kafka."""
    from energy.adapters.kafka import make_producer

    producer = make_producer(s.kafka)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def assert_one_trace_from_webhook_to_bms(spans: Any, dr_event_id: Any) -> None:
    """OPS-1: one trace follows the event from the utility's webhook call through the saga to every
    BMS SOAP call, each span the child of the one that caused it, and across the Kafka outbox."""
    mine = [s for s in spans if (s.attributes or {}).get("dr_event_id") == str(dr_event_id)]
    trace_ids = {s.context.trace_id for s in mine}
    assert len(trace_ids) == 1, f"{len(trace_ids)} traces for one event"
    trace = [s for s in spans if s.context.trace_id in trace_ids]
    by_id = {s.context.span_id: s for s in trace}
    webhook = [s for s in trace if s.kind.name == "SERVER" and "/openadr3/notifications" in s.name]
    assert webhook, sorted({s.name for s in trace})
    commands = [s for s in trace if s.name == "dr.bms.command"]
    soap = [s for s in trace if s.name.startswith("bms.soap.")]
    published = [s for s in trace if s.name.startswith("dr.outbox.publish")]
    assert commands and len(soap) >= len(commands) and published
    # every command's SOAP call under the command's span, which is under the saga span that issued it
    # (reconciliation's status calls hang under the timer step that made them)
    under_commands = [c for c in soap if by_id[c.parent.span_id].name == "dr.bms.command"]
    assert len(under_commands) >= len(commands)
    assert {by_id[c.parent.span_id].name for c in soap} <= {"dr.bms.command", "dr.timers.step"}
    for command in commands:
        assert by_id[command.parent.span_id].name == "dr.saga.handle"
    for span in published:
        assert by_id[span.parent.span_id].name in {"dr.saga.handle", webhook[0].name} or span.parent.is_remote


def api_server_on(s: Settings, port: int) -> Any:
    return _api_on(s, port)


@contextlib.asynccontextmanager
async def _api_on(s: Settings, port: int) -> AsyncIterator[str]:
    from api.app import create_app
    from energy.observability.http import serve_app

    stop = asyncio.Event()
    task = asyncio.create_task(serve_app(create_app(s), "127.0.0.1", port, stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as c:
        await wait_until(
            lambda: healthy(c), timeout_s=60, what=f"API /healthz on port {port}", ignore=(httpx.TransportError,)
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await task


async def wait_for_event(pool: Any, utility_id: str, utility_event_id: str, timeout_s: float = 15) -> Any:
    return await wait_until(
        lambda: pool.fetchval(
            """SELECT dr_event_id FROM dr_events
               WHERE utility_id = $1 AND (utility_event_id = $2 OR vtn_event_id = $2)""",
            utility_id,
            utility_event_id,
        ),
        timeout_s=timeout_s,
        what=f"the VTN's event {utility_event_id} taken by the webhook",
        interval_s=0.2,
        ignore=PG_TRANSIENT,
    )


_ = (json, api_server)
