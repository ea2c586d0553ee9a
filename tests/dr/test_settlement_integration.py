"""Settlement against real InfluxDB and PostgreSQL: 60 local days of synthetic 15-minute history
(weekly shape, a public holiday, day-level weather coupling, an earlier cancelled event that shed)
and a known shed during the event. The settlement must find that shed within 1 %; readings that
arrive after the preliminary run must produce a trued-up version."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from dr_coordinator.adapters import settlement_store
from dr_coordinator.domain.interval_baselines import Exclusion, Method
from dr_coordinator.domain.settlement import RunKind
from dr_coordinator.entrypoints.baselines import BaselineJob
from dr_coordinator.entrypoints.late_windows import LateWindowListener
from dr_coordinator.entrypoints.settlement import SettlementJob
from energy.adapters.influx import InfluxClient, point
from energy.adapters.kafka import make_producer, security_options, send_event
from energy.observability.metrics import REGISTRY
from energy.settings import Settings
from energy.stack.topics import ensure_topics_async
from schemas.readings import LateWindow, LateWindowEvent
from tests.waiting import wait_until

LA = ZoneInfo("America/Los_Angeles")
EVENT_DAY = date(2026, 9, 8)  # Tuesday after Labor Day (Mon 7 Sep 2026, a US holiday)
EARLIER_EVENT_DAY = date(2026, 9, 2)  # Wednesday: a cancelled event that had already shed
START = datetime.combine(EVENT_DAY, time(16, 0), LA)
END = datetime.combine(EVENT_DAY, time(18, 0), LA)
SHED_KW = 40.0
LATENESS_S = 3600.0


def day_factor(d: date) -> float:
    """Weather coupling: a whole day's load scales with that day's heat (within the +/-20 % cap)."""
    return 1.0 + 0.08 * math.sin(d.toordinal() / 3.0)


def load_kw(lt: datetime) -> float:
    d = lt.date()
    occupied = d.weekday() < 5 and d != date(2026, 9, 7) and 8 <= lt.hour < 19
    base = 120.0 + (180.0 if occupied else 0.0) + 10.0 * math.sin(math.pi * lt.hour / 24)
    return base * day_factor(d)


def metered_kw(lt: datetime) -> float:
    kw = load_kw(lt)
    in_event = START <= lt < END
    shed_earlier = lt.date() == EARLIER_EVENT_DAY and 15 <= lt.hour < 18
    return kw - SHED_KW if in_event else kw - 100.0 if shed_earlier else kw


def quarters(lo: datetime, hi: datetime) -> list[datetime]:
    out, t = [], lo.astimezone(UTC)
    while t < hi:
        out.append(t)
        t += timedelta(minutes=15)
    return out


@pytest_asyncio.fixture(loop_scope="session")
async def private_influx(settings: Settings, stack: Any, uid: str) -> AsyncIterator[InfluxClient]:
    name = f"dr_settle_{uid}"
    client = InfluxClient(settings.influx.model_copy(update={"database": name}), breaker_name=f"influx-{uid}")
    # The rollups' retention policy as the database's default, as the platform reads them from it.
    rp = settings.influx.rollup_retention_policy
    await client.query(f"CREATE DATABASE {name} WITH DURATION 730d NAME {rp}")
    yield client
    await client.query(f"DROP DATABASE {name}")
    await client.close()


async def write(influx: InfluxClient, facility_id: str, stamps: list[datetime]) -> None:
    lines = [
        point(
            "facility_rollups",
            {"facility_id": facility_id, "window": "15m"},
            {"avg_kw": metered_kw(t.astimezone(LA)), "coverage": 1.0},
            t,
        )
        for t in stamps
    ]
    for i in range(0, len(lines), 5000):
        await influx.write_lines(lines[i : i + 5000])


async def make_facility_and_events(pool: Any, uid: str) -> tuple[str, uuid.UUID]:
    facility_id, utility_id = f"fac-mv-{uid}", f"util-mv-{uid}"
    event_id, earlier_id = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO tenants (tenant_id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", f"tenant-mv-{uid}"
        )
        await conn.execute(
            """INSERT INTO facilities (facility_id, tenant_id, name, timezone, latitude, longitude, peak_kw,
                                       country, subdivision)
               VALUES ($1, $2, $1, 'America/Los_Angeles', 37.4, -122.1, 500, 'US', 'CA')""",
            facility_id,
            f"tenant-mv-{uid}",
        )
        await conn.execute(
            """INSERT INTO utilities (utility_id, name, bearer_token_hash, hmac_secret, baseline_method, baseline_rules)
               VALUES ($1, $1, 'x', 'x', 'caiso_10in10', $2::jsonb)""",
            utility_id,
            json.dumps({"interval_minutes": 15, "adjustment": "ratio"}),
        )
        for eid, state, lo, hi in (
            (earlier_id, "cancelled", datetime.combine(EARLIER_EVENT_DAY, time(15), LA), START - timedelta(days=6)),
            (event_id, "completed", START, END),
        ):
            await conn.execute(
                """INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, state, start_at, end_at, target_kw)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""",
                eid,
                utility_id,
                f"ev-{eid}",
                state,
                lo,
                hi,
                SHED_KW,
            )
            await conn.execute(
                """INSERT INTO dr_event_facilities (dr_event_id, facility_id, state, target_kw)
                   VALUES ($1, $2, $3, $4)""",
                eid,
                facility_id,
                "cancelled" if state == "cancelled" else "restored",
                SHED_KW,
            )
        # the cancelled event had been planned (and shed) before it was cancelled
        await conn.execute(
            "INSERT INTO dr_event_log (dr_event_id, facility_id, entry_type, detail) VALUES ($1, $2, 'plan', '{}')",
            earlier_id,
            facility_id,
        )
    return facility_id, event_id


async def test_settlement_finds_the_known_shed_and_trues_up_late_readings(
    settings: Settings, pg_pool: Any, private_influx: InfluxClient, uid: str
) -> None:
    facility_id, event_id = await make_facility_and_events(pg_pool, uid)
    history_lo = datetime.combine(EVENT_DAY - timedelta(days=60), time(0), LA)
    late = quarters(END - timedelta(minutes=30), END)  # the last two quarter hours arrive late
    await write(private_influx, facility_id, [t for t in quarters(history_lo, END) if t not in late])

    # The baseline, as the dispatch transaction freezes it.
    baselines = BaselineJob(pg_pool, private_influx)
    b = await baselines.interval_baseline(event_id, facility_id, START, END, "caiso_10in10", {"interval_minutes": 15})
    assert b.method is Method.CAISO_10IN10 and b.flag is None
    assert len(b.intervals) == 8
    assert b.excluded[date(2026, 9, 7)] is Exclusion.HOLIDAY
    assert b.excluded[EARLIER_EVENT_DAY] is Exclusion.EVENT_DAY
    assert len(b.days_used) == 10
    async with pg_pool.acquire() as conn, conn.transaction():
        assert await settlement_store.freeze_baseline(conn, event_id, facility_id, b, datetime.now(UTC))
        assert not await settlement_store.freeze_baseline(conn, event_id, facility_id, b, datetime.now(UTC))

    now = [END + timedelta(minutes=1)]
    dr = settings.dr.model_copy(update={"settlement_rerun_s": 1.0})
    job = SettlementJob(pg_pool, dr, lambda: now[0], private_influx, baselines, LATENESS_S)

    async def settle() -> int | None:
        return await job.settle_facility(
            event_id, facility_id, START, END, SHED_KW, "caiso_10in10", {"interval_minutes": 15}
        )

    # preliminary at the end: 6 of 8 quarter hours present
    assert await settle() == 1
    assert await settle() is None  # nothing new is due before the lateness bound
    runs = await settlement_store.runs(pg_pool, event_id, facility_id)
    prelim = runs[0].settlement
    assert runs[0].kind is RunKind.PRELIMINARY
    assert prelim.coverage_pct == pytest.approx(75.0)
    assert [iv.coverage_pct for iv in prelim.intervals] == [100.0] * 6 + [0.0] * 2
    assert prelim.reduction_kwh is None  # incomplete intervals: no energy total yet
    for iv in prelim.intervals[:6]:
        assert iv.reduction_kw == pytest.approx(SHED_KW, rel=0.01)
        assert iv.performance_pct == pytest.approx(100.0, rel=0.01)

    # settlement after end + lateness; the late readings had not come yet
    now[0] = END + timedelta(seconds=LATENESS_S + 60)
    assert await settle() == 2
    # the late readings arrive (a backfill); the next re-run trues the settlement up
    await write(private_influx, facility_id, late)
    now[0] += timedelta(minutes=5)
    assert await settle() == 3
    assert await settle() is None  # unchanged values: no new version
    runs = await settlement_store.runs(pg_pool, event_id, facility_id)
    assert [r.kind for r in runs] == [RunKind.PRELIMINARY, RunKind.SETTLEMENT, RunKind.TRUE_UP]
    final = runs[-1].settlement
    assert final.coverage_pct == pytest.approx(100.0)
    assert final.mean_reduction_kw == pytest.approx(SHED_KW, rel=0.01)
    assert final.reduction_kwh == pytest.approx(SHED_KW * 2, rel=0.01)
    assert final.performance_pct == pytest.approx(100.0, rel=0.01)
    head = await pg_pool.fetchrow(
        "SELECT baseline_frozen, baseline_method FROM dr_settlement_runs WHERE dr_event_id = $1 AND version = 3",
        event_id,
    )
    assert head["baseline_frozen"] and head["baseline_method"] == "caiso_10in10"

    # the per-interval values the OpenADR report carries come from the latest version
    report = await settlement_store.report_intervals(pg_pool, event_id)
    version, values = report[facility_id]
    assert version == 3 and len(values) == 8
    for v, iv in zip(values, b.intervals, strict=True):
        expected_demand = metered_kw(iv.start.astimezone(LA))
        assert v.demand_kw == pytest.approx(expected_demand)
        assert v.usage_kwh == pytest.approx(expected_demand * 0.25)
        assert v.baseline_kw == pytest.approx(load_kw(iv.start.astimezone(LA)), rel=0.01)


async def test_a_late_window_event_on_kafka_trues_up_the_settlement_at_once(
    settings: Settings, pg_pool: Any, private_influx: InfluxClient, uid: str
) -> None:
    """Days after the event (past the scheduled re-runs' horizon), a backfill rewrites two quarter
    hours; the aggregation's meter.late_window on Kafka makes the coordinator true up at once."""
    facility_id, event_id = await make_facility_and_events(pg_pool, uid)
    history_lo = datetime.combine(EVENT_DAY - timedelta(days=60), time(0), LA)
    late = quarters(END - timedelta(minutes=30), END)
    await write(private_influx, facility_id, [t for t in quarters(history_lo, END) if t not in late])
    baselines = BaselineJob(pg_pool, private_influx)
    b = await baselines.interval_baseline(event_id, facility_id, START, END, "caiso_10in10", {"interval_minutes": 15})
    async with pg_pool.acquire() as conn, conn.transaction():
        await settlement_store.freeze_baseline(conn, event_id, facility_id, b, datetime.now(UTC))
    now = [END + timedelta(seconds=LATENESS_S + 60)]
    job = SettlementJob(pg_pool, settings.dr, lambda: now[0], private_influx, baselines, LATENESS_S)
    assert await job.settle_facility(event_id, facility_id, START, END, SHED_KW, "caiso_10in10", None) == 1

    topic, group = f"late-windows-{uid}", f"dr-settlement-{uid}"
    s = settings.model_copy(
        update={"dr": settings.dr.model_copy(update={"late_windows_topic": topic, "late_windows_group": group})}
    )
    await ensure_topics_async(settings.kafka.bootstrap_servers, {topic: 1}, security=security_options(settings.kafka))
    now[0] = END + timedelta(days=5)
    await write(private_influx, facility_id, late)  # the backfill
    invalid_before = REGISTRY.get_sample_value("energy_dr_late_windows_total", {"outcome": "invalid"}) or 0.0
    listener = LateWindowListener(s, pg_pool, job, lambda: now[0])
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await asyncio.wait_for(listener.started.wait(), 30)
        await producer.send_and_wait(topic, b"not an event", key=facility_id.encode())  # skipped, counted
        notice = LateWindowEvent.wrap(
            LateWindow(
                facility_id=facility_id,
                window_start=late[0],
                window_end=late[0] + timedelta(minutes=15),
                late_readings=3,
                max_lateness_s=5 * 86400.0,
            ),
            source="aggregation",
            occurred_at=now[0],
        )
        await send_event(producer, topic, facility_id, notice)
        runs = await wait_until(
            lambda: settlement_store.runs(pg_pool, event_id, facility_id),
            accept=lambda found: len(found) == 2,
            timeout_s=30,
            what="the settlement and its true-up",
            interval_s=0.2,
        )
        assert [r.kind for r in runs] == [RunKind.SETTLEMENT, RunKind.TRUE_UP]
        assert runs[0].settlement.coverage_pct == pytest.approx(75.0)
        assert runs[1].settlement.coverage_pct == pytest.approx(100.0)
        assert runs[1].settlement.mean_reduction_kw == pytest.approx(SHED_KW, rel=0.01)
        invalid = REGISTRY.get_sample_value("energy_dr_late_windows_total", {"outcome": "invalid"})
        assert invalid == invalid_before + 1  # the bad record was skipped, not fatal
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await producer.stop()
