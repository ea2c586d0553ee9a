"""FC-3: forecast writes are upserts; a retried run never fails and an older run never overwrites a newer one."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from forecast.read import latest_forecast, latest_run
from forecast.store import FacilityForecast, save_forecast, save_forecasts

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def _forecast(fid: str, run_at: datetime, level: float, steps: int = 8, quality: str = "full") -> FacilityForecast:
    targets = [T0 + timedelta(minutes=15 * i) for i in range(steps)]
    return FacilityForecast(
        facility_id=fid,
        run_at=run_at,
        model_version="test-v1",
        quality=quality,
        seasonal_naive=False,
        weather_available=True,
        sensor_coverage=0.9,
        targets=targets,
        p10=[level - 10] * steps,
        p50=[level] * steps,
        p90=[level + 10] * steps,
    )


async def test_retried_run_rewrites_same_rows_without_unique_violation(pg_pool, make_facility) -> None:
    fid = await make_facility()
    fc = _forecast(fid, T0 - timedelta(hours=1), 100.0)
    for _ in range(3):
        assert await save_forecast(pg_pool, fc) == 8
    rows = await latest_forecast(pg_pool, fid, T0, T0 + timedelta(hours=2))
    assert len(rows) == 8
    assert all(r.p50_kw == 100.0 and r.run_at == fc.run_at for r in rows)
    assert await pg_pool.fetchval("SELECT count(*) FROM forecast_runs WHERE facility_id = $1", fid) == 1


async def test_older_run_never_overwrites_newer_forecast(pg_pool, make_facility) -> None:
    fid = await make_facility()
    newer = _forecast(fid, T0 - timedelta(minutes=15), 200.0)
    older = _forecast(fid, T0 - timedelta(hours=2), 50.0, steps=12)
    await save_forecast(pg_pool, newer)
    await save_forecast(pg_pool, older)  # a late retry of an older run
    rows = await latest_forecast(pg_pool, fid, T0, T0 + timedelta(hours=3))
    assert [r.p50_kw for r in rows[:8]] == [200.0] * 8
    # targets only the older run covers are still filled by it
    assert [r.p50_kw for r in rows[8:]] == [50.0] * 4
    run = await latest_run(pg_pool, fid)
    assert run is not None and run.run_at == newer.run_at


async def test_concurrent_runs_leave_the_newest_run_everywhere(pg_pool, make_facility) -> None:
    fid = await make_facility()
    runs = [_forecast(fid, T0 - timedelta(minutes=15 * k), 100.0 + k) for k in range(1, 9)]
    # each run twice (a retry), all at once, in an order where older runs often land last
    await asyncio.gather(*(save_forecast(pg_pool, fc) for fc in reversed(runs + runs)))
    rows = await latest_forecast(pg_pool, fid, T0, T0 + timedelta(hours=2))
    assert len(rows) == 8
    assert {r.run_at for r in rows} == {runs[0].run_at}
    assert {r.p50_kw for r in rows} == {101.0}


async def test_read_window_is_half_open_and_rejects_naive_times(pg_pool, make_facility) -> None:
    fid = await make_facility()
    await save_forecast(pg_pool, _forecast(fid, T0, 20.0))
    rows = await latest_forecast(pg_pool, fid, T0 + timedelta(minutes=15), T0 + timedelta(minutes=45))
    assert [r.target_ts for r in rows] == [T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)]
    assert rows[0].quality == "full" and rows[0].model_version == "test-v1" and rows[0].sensor_coverage == 0.9
    with pytest.raises(ValueError):
        await latest_forecast(pg_pool, fid, T0.replace(tzinfo=None), T0 + timedelta(hours=1))


async def test_quantile_order_violation_is_rejected_before_writing(pg_pool, make_facility) -> None:
    fid = await make_facility()
    bad = _forecast(fid, T0, 100.0)
    bad = dataclasses.replace(bad, p10=[150.0] * 8)
    with pytest.raises(ValueError):
        await save_forecast(pg_pool, bad)
    assert await latest_forecast(pg_pool, fid, T0, T0 + timedelta(hours=2)) == []


async def test_many_facilities_in_one_write_each_get_their_own_rows_and_the_newest_run_guard(
    pg_pool, make_facility
) -> None:
    a, b, c = [await make_facility() for _ in range(3)]
    newer_c = _forecast(c, T0 - timedelta(minutes=15), 300.0)
    await save_forecast(pg_pool, newer_c)
    run_at = T0 - timedelta(hours=1)
    sent = await save_forecasts(
        pg_pool, [_forecast(a, run_at, 100.0), _forecast(b, run_at, 200.0, steps=4), _forecast(c, run_at, 1.0)]
    )
    assert sent == 8 + 4 + 8
    got = {fid: await latest_forecast(pg_pool, fid, T0, T0 + timedelta(hours=3)) for fid in (a, b, c)}
    assert [r.p50_kw for r in got[a]] == [100.0] * 8 and [r.p50_kw for r in got[b]] == [200.0] * 4
    assert [r.p50_kw for r in got[c]] == [300.0] * 8  # the older run in the batch left the newer one alone
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM forecast_runs WHERE facility_id = ANY($1::text[])", [a, b, c]) == 4
    )  # a, b, and both runs of c


async def test_one_bad_forecast_in_a_batch_writes_nothing(pg_pool, make_facility) -> None:
    a, b = await make_facility(), await make_facility()
    bad = dataclasses.replace(_forecast(b, T0, 100.0), p90=[90.0] * 8)
    with pytest.raises(ValueError):
        await save_forecasts(pg_pool, [_forecast(a, T0, 100.0), bad])
    assert await latest_forecast(pg_pool, a, T0, T0 + timedelta(hours=2)) == []


async def test_points_land_at_their_own_targets_and_values_for_every_interval(pg_pool, make_facility) -> None:
    # the points are expanded by PostgreSQL from (first target, step, count) and flat quantile arrays (1040):
    # each facility's rows must carry its own times and its own values, at its own meter interval
    a, b = await make_facility(), await make_facility()
    hourly = dataclasses.replace(
        _forecast(a, T0, 0.0, steps=3),
        targets=[T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)],
        p10=[1.0, 2.0, 3.0],
        p50=[1.5, 2.5, 3.5],
        p90=[2.0, 3.0, 4.0],
        interval_minutes=60,
    )
    quarter = dataclasses.replace(_forecast(b, T0, 0.0, steps=2), p10=[7.0, 8.0], p50=[7.5, 8.5], p90=[9.0, 9.5])
    assert await save_forecasts(pg_pool, [hourly, quarter]) == 5
    got_a = await latest_forecast(pg_pool, a, T0, T0 + timedelta(hours=3))
    assert [(r.target_ts, r.p10_kw, r.p50_kw, r.p90_kw) for r in got_a] == [
        (T0, 1.0, 1.5, 2.0),
        (T0 + timedelta(hours=1), 2.0, 2.5, 3.0),
        (T0 + timedelta(hours=2), 3.0, 3.5, 4.0),
    ]
    got_b = await latest_forecast(pg_pool, b, T0, T0 + timedelta(hours=3))
    assert [(r.target_ts, r.p10_kw, r.p50_kw, r.p90_kw) for r in got_b] == [
        (T0, 7.0, 7.5, 9.0),
        (T0 + timedelta(minutes=15), 8.0, 8.5, 9.5),
    ]


async def test_targets_not_spaced_by_the_interval_or_nan_quantiles_are_rejected(pg_pool, make_facility) -> None:
    fid = await make_facility()
    gap = dataclasses.replace(
        _forecast(fid, T0, 100.0, steps=3), targets=[T0, T0 + timedelta(minutes=15), T0 + timedelta(minutes=45)]
    )
    with pytest.raises(ValueError, match="15 min apart"):
        await save_forecast(pg_pool, gap)
    hourly_label = dataclasses.replace(_forecast(fid, T0, 100.0), interval_minutes=60)  # 15 min targets
    with pytest.raises(ValueError, match="60 min apart"):
        await save_forecast(pg_pool, hourly_label)
    nan = dataclasses.replace(_forecast(fid, T0, 100.0), p50=[float("nan")] * 8)
    with pytest.raises(ValueError, match="p10 <= p50 <= p90"):
        await save_forecast(pg_pool, nan)
    assert await latest_forecast(pg_pool, fid, T0, T0 + timedelta(hours=2)) == []
