"""``energy seed`` history on the real stack (decision 0820): two small facilities of their own, 20
days. The rollups exist over the span and follow the load profile computed here from the profile
functions; a second seed changes nothing (even with its marker gone, the same points are written
again); the forecast service and a CAISO 10-in-10 baseline both work from it."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from dr_coordinator.entrypoints.baselines import BaselineJob
from energy.fleet import HOLIDAY_REGION_BY_CITY, Facility, build_fleet
from energy.seed_history import seed_history
from forecast.service import ForecastService
from forecast.weather.client import build_weather_client
from sim.meters.profile import meter_kw

DAYS = 20
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(days=DAYS)


def _fleet(uid: str) -> list[Facility]:
    """An office (Melbourne) and a retail facility (San Francisco) of three meters, ids of this test only."""
    out = []
    for f in build_fleet(2, 3):
        fid = f"{f.facility_id}-h{uid}"
        meters = tuple(dataclasses.replace(m, meter_id=f"{fid}-{m.meter_id[-3:]}", facility_id=fid) for m in f.meters)
        out.append(dataclasses.replace(f, facility_id=fid, meters=meters))
    return out


async def _register(pg_pool, fleet: list[Facility]) -> None:
    for f in fleet:
        country, subdivision = HOLIDAY_REGION_BY_CITY[f.city]
        await pg_pool.execute(
            """INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude,
                                       criticality_tier, peak_kw, country, subdivision)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            f.facility_id,
            f.tenant_id,
            f.name,
            f.kind,
            f.timezone,
            f.latitude,
            f.longitude,
            f.criticality_tier,
            f.peak_kw,
            country,
            subdivision,
        )


async def _rollups(influx, settings, facility_id: str, window: str) -> dict[datetime, dict]:
    rp = settings.influx.rollup_retention_policy
    series = await influx.query(
        f'SELECT * FROM "{rp}"."facility_rollups" WHERE "facility_id" = $f AND "window" = $w',
        params={"f": facility_id, "w": window},
        epoch="s",
    )
    out = {}
    for s in series:
        for row in s.values:
            rec = dict(zip(s.columns, row, strict=True))
            out[datetime.fromtimestamp(rec.pop("time"), UTC)] = rec
    return out


async def _raw_count(influx, settings, facility_id: str) -> int:
    rp = settings.influx.raw_retention_policy
    series = await influx.query(
        f'SELECT count("active_power_kw") FROM "{rp}"."readings" WHERE "facility_id" = $f', params={"f": facility_id}
    )
    return int(series[0].values[0][1]) if series else 0


@pytest.fixture
async def seeded(stack, settings, pg_pool, influx, uid):
    fleet = _fleet(uid)
    await _register(pg_pool, fleet)
    first = await seed_history(settings, days=DAYS, now=NOW, fleet=fleet)
    yield fleet, first
    ids = [f.facility_id for f in fleet]
    for table in ("load_forecasts", "forecast_runs", "facilities"):  # fleet_history goes with its facility
        await pg_pool.execute(f"DELETE FROM {table} WHERE facility_id = ANY($1::text[])", ids)


async def test_history_rollups_follow_the_profile_and_a_second_seed_changes_nothing(
    seeded, settings, pg_pool, influx
) -> None:
    fleet, first = seeded
    assert first.facilities == 2 and (first.start, first.end) == (START, NOW)
    quarters = DAYS * 96
    office, retail = fleet
    for f in fleet:
        q = await _rollups(influx, settings, f.facility_id, "15m")
        hours = await _rollups(influx, settings, f.facility_id, "1h")
        # Every quarter of the span has a rollup unless all three meters were out at once (rare).
        assert 0.97 * quarters <= len(q) <= quarters
        assert min(q) >= START and max(q) < NOW
        assert len(hours) >= 0.97 * DAYS * 24
        assert await _rollups(influx, settings, f.facility_id, "1m") == {}  # no minute resolution in history
        complete = [t for t, r in q.items() if r["sample_count"] == 3 and r["anomaly_count"] == 0]
        assert len(complete) > 0.9 * quarters
        for t in complete:
            r = q[t]
            # The profile, computed here without noise at the middle of the quarter: the readings
            # deviate by at most the simulator's +-3 % noise per meter.
            expected = sum(meter_kw(m, f, t + timedelta(minutes=7, seconds=30)) for m in f.meters)
            assert r["avg_kw"] == pytest.approx(expected, rel=0.031), t
            assert r["energy_kwh"] == pytest.approx(r["avg_kw"] / 4, rel=1e-9)
            assert r["coverage"] == 1.0
        full_hours = [h for h in hours if all(h + timedelta(minutes=15 * k) in complete for k in range(4))]
        for h in full_hours[:50]:
            four = [q[h + timedelta(minutes=15 * k)]["avg_kw"] for k in range(4)]
            assert hours[h]["avg_kw"] == pytest.approx(sum(four) / 4, rel=1e-9)
            assert hours[h]["max_kw"] == pytest.approx(max(four), rel=1e-9)

    # Weekly and daily shape, in each facility's own zone: the office is busy at weekday noon, quiet
    # at 3 am and at weekends; the retail shop is open on Sunday afternoon.
    # Only quarters with every meter reporting and nothing anomalous: the seeded faults (a meter out, a
    # spike) are real history, but they are not the profile this part checks.
    def clean(rows: dict[datetime, dict]) -> dict[datetime, dict]:
        return {t: r for t, r in rows.items() if r["sample_count"] == 3 and r["anomaly_count"] == 0}

    q = clean(await _rollups(influx, settings, office.facility_id, "15m"))

    def local(f: Facility, t: datetime) -> datetime:
        return t.astimezone(ZoneInfo(f.timezone))

    noon = [r["avg_kw"] for t, r in q.items() if local(office, t).hour == 12 and local(office, t).weekday() < 5]
    night = [r["avg_kw"] for t, r in q.items() if local(office, t).hour == 3]
    sunday = [r["avg_kw"] for t, r in q.items() if local(office, t).hour == 12 and local(office, t).weekday() == 6]
    assert min(noon) > 2 * max(night) and min(noon) > 2 * max(sunday)
    rq = clean(await _rollups(influx, settings, retail.facility_id, "15m"))
    r_sunday = [r["avg_kw"] for t, r in rq.items() if local(retail, t).hour == 14 and local(retail, t).weekday() == 6]
    r_night = [r["avg_kw"] for t, r in rq.items() if local(retail, t).hour == 3]
    assert min(r_sunday) > 2 * max(r_night)

    # Idempotent: a second seed writes nothing; with the marker gone it writes the very same points.
    before = {
        f.facility_id: (
            await _rollups(influx, settings, f.facility_id, "15m"),
            await _raw_count(influx, settings, f.facility_id),
        )
        for f in fleet
    }
    again = await seed_history(settings, days=DAYS, now=NOW + timedelta(hours=5), fleet=fleet)
    assert (again.facilities, again.already, again.readings) == (0, 2, 0)
    await pg_pool.execute("DELETE FROM fleet_history WHERE facility_id = $1", office.facility_id)
    redo = await seed_history(settings, days=DAYS, now=NOW + timedelta(hours=5), fleet=fleet)
    assert redo.facilities == 1 and (redo.start, redo.end) == (START, NOW)  # the fleet's end, not the clock's
    after = {
        f.facility_id: (
            await _rollups(influx, settings, f.facility_id, "15m"),
            await _raw_count(influx, settings, f.facility_id),
        )
        for f in fleet
    }
    assert after == before
    assert before[office.facility_id][1] == first.readings - before[retail.facility_id][1]


async def test_forecast_and_dr_baseline_come_from_the_history(seeded, settings, pg_pool, influx) -> None:
    fleet, _ = seeded
    office = fleet[0]
    async with httpx.AsyncClient() as http:
        service = ForecastService(settings, pg_pool, influx, build_weather_client(settings.forecast, http, pg_pool))
        summary = await service.run_once(run_at=NOW, facility_ids=[office.facility_id])
    assert summary.written == 1
    rows = await pg_pool.fetch(
        "SELECT target_ts, p50_kw FROM load_forecasts WHERE facility_id = $1 ORDER BY target_ts", office.facility_id
    )
    p50 = [r["p50_kw"] for r in rows]
    assert len(p50) == 96
    assert max(p50) > 2 * min(p50)  # an office's day, not a flat line
    run = await pg_pool.fetchrow(
        "SELECT quality, weather_available FROM forecast_runs WHERE facility_id = $1", office.facility_id
    )
    # Enough history; "full" exactly when the weather simulator answered (it is not started for tests).
    assert run["quality"] == ("full" if run["weather_available"] else "degraded_no_weather")

    # An afternoon event on the next weekday: the CAISO 10-in-10 baseline finds its ten days.
    tz = ZoneInfo(office.timezone)
    day = NOW.astimezone(tz).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    start = datetime(day.year, day.month, day.day, 14, tzinfo=tz).astimezone(UTC)
    job = BaselineJob(pg_pool, influx)
    b = await job.interval_baseline(uuid.uuid4(), office.facility_id, start, start + timedelta(hours=1), "caiso_10in10")
    assert b.method.value == "caiso_10in10" and b.flag is None, b.as_dict()
    assert len(b.days_used) == 10
    assert all(kw is not None and kw > 0 for kw in b.unadjusted_kw)


def test_history_points_are_the_aggregations_line_protocol() -> None:
    """The bulk formatting writes what ``aggregation.lines`` writes for the same reading and rollup."""
    import numpy as np

    from aggregation import lines
    from aggregation.domain.rollup import Rollup
    from aggregation.domain.state import RollupRow, WindowKey
    from energy.seed_history import raw_lines, rollup_lines
    from schemas.readings import Anomaly, MeterReading
    from sim.meters.history import MeterHistory

    t = int(START.timestamp())
    h = MeterHistory(
        "fac-001-m01",
        np.array([t, t + 900]),
        np.array([36.584, 300.0]),
        np.array([15.585, 12.5]),
        np.array([234.15, 229.8]),
        np.array([169.828, 55.0]),
        np.array([37426.146, 37500.0]),
        np.array([0, 1]),
        np.array([False, True]),
    )
    got = raw_lines("fac-001", h)
    for i, line in enumerate(got):
        rid = line.split('reading_id="')[1].split('"')[0]
        assert str(uuid.UUID(rid)) == rid
        reading = MeterReading(
            reading_id=uuid.UUID(rid),
            meter_id="fac-001-m01",
            facility_id="fac-001",
            ts=datetime.fromtimestamp(int(h.ts_s[i]), UTC),
            active_power_kw=float(h.active_power_kw[i]),
            reactive_power_kvar=float(h.reactive_power_kvar[i]),
            voltage_v=float(h.voltage_v[i]),
            current_a=float(h.current_a[i]),
            energy_kwh=float(h.energy_kwh[i]),
            seq=int(h.seq[i]),
            anomalies=(Anomaly.POWER_ABOVE_RATING,) if h.above_rating[i] else (),
            received_at=datetime.now(UTC),
        )
        assert line == lines.raw_line(reading)
    assert raw_lines("fac-001", h)[1] != raw_lines("fac-001", h)[0]
    import pandas as pd

    ru = Rollup(9.146, 0.25, 36.584, 36.0, 37.5, 1, 1.0, 0)
    frame = pd.DataFrame([{"meter_id": "fac-001-m01", "start": t, **ru.fields()}])
    (line,) = rollup_lines("fac-001", "15m", frame)
    assert line == lines.rollup_line(RollupRow("fac-001", "fac-001-m01", WindowKey("15m", t * 10**9), ru))
    frame = pd.DataFrame([{"meter_id": None, "start": t, **ru.fields()}])
    (line,) = rollup_lines("fac-001", "1h", frame)
    assert line == lines.rollup_line(RollupRow("fac-001", None, WindowKey("1h", t * 10**9), ru))
