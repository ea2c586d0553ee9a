"""The forecast run's history cache on a real InfluxDB: a later run reads only the newest hours, sees a
late rollup inside them, merges without duplicates, and reads the whole window again after its refresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from energy.adapters.influx import point
from forecast.history import HistoryCache, RollupArrays

RUN_AT = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)


async def _write(influx, settings, fid: str, times: list[datetime], kw: float) -> None:
    lines = [
        point("facility_rollups", {"facility_id": fid, "window": "15m"}, {"avg_kw": kw, "coverage": 1.0}, t)
        for t in times
    ]
    await influx.write_lines(lines, retention_policy=settings.influx.rollup_retention_policy)


def _quarters(start: datetime, end: datetime) -> list[datetime]:
    n = int((end - start) / timedelta(minutes=15))
    return [start + timedelta(minutes=15 * i) for i in range(n)]


async def test_a_later_run_reads_only_the_newest_hours_and_merges_late_rollups(influx, settings, uid) -> None:
    fid = f"hist-{uid}"
    rp = settings.influx.rollup_retention_policy
    start = RUN_AT - timedelta(days=2)
    await _write(influx, settings, fid, _quarters(start, RUN_AT), 10.0)
    cache = HistoryCache(reread=timedelta(hours=2), refresh=timedelta(hours=24))

    first = await cache.read(influx, rp, {fid: start}, RUN_AT)
    assert len(first[fid]) == 2 * 96 and cache.points_read == 2 * 96  # the whole window once

    # next quarter hour: one new rollup, and a late rewrite of a window 1 h back (inside the re-read hours)
    nxt = RUN_AT + timedelta(minutes=15)
    await _write(influx, settings, fid, [RUN_AT], 20.0)
    await _write(influx, settings, fid, [RUN_AT - timedelta(hours=1)], 30.0)
    second = await cache.read(influx, rp, {fid: nxt - timedelta(days=2)}, nxt)
    # re-read from (previous end - 2 h): 8 old windows + the new one
    assert cache.points_read == 2 * 96 + 9
    got = second[fid]
    assert len(got) == 2 * 96 and bool(np.all(np.diff(got.ts) == 900))  # the oldest window left, no duplicate
    assert got.ts[0] == (start + timedelta(minutes=15)).timestamp()
    by_ts = dict(zip(got.ts.tolist(), got.kw.tolist(), strict=True))
    assert by_ts[RUN_AT.timestamp()] == 20.0
    assert by_ts[(RUN_AT - timedelta(hours=1)).timestamp()] == 30.0

    # a rewrite older than the re-read hours is seen only after the refresh (24 h to 48 h, per facility)
    await _write(influx, settings, fid, [RUN_AT - timedelta(hours=10)], 40.0)
    third = await cache.read(influx, rp, {fid: nxt - timedelta(days=2)}, nxt)
    assert (
        dict(zip(third[fid].ts.tolist(), third[fid].kw.tolist(), strict=True))[
            (RUN_AT - timedelta(hours=10)).timestamp()
        ]
        == 10.0
    )
    later = RUN_AT + timedelta(hours=48)
    fourth = await cache.read(influx, rp, {fid: later - timedelta(days=3)}, later)
    # third: again from (end - 2 h), 8 windows; fourth: the whole window [RUN_AT - 1 day, RUN_AT], 96 + 1
    assert cache.points_read == 2 * 96 + 9 + 8 + 97
    assert (
        dict(zip(fourth[fid].ts.tolist(), fourth[fid].kw.tolist(), strict=True))[
            (RUN_AT - timedelta(hours=10)).timestamp()
        ]
        == 40.0
    )


async def test_a_longer_window_than_cached_is_read_in_full(influx, settings, uid) -> None:
    fid = f"hist-{uid}"
    rp = settings.influx.rollup_retention_policy
    await _write(influx, settings, fid, _quarters(RUN_AT - timedelta(days=3), RUN_AT), 5.0)
    cache = HistoryCache()
    short = await cache.read(influx, rp, {fid: RUN_AT - timedelta(days=1)}, RUN_AT)
    long = await cache.read(influx, rp, {fid: RUN_AT - timedelta(days=3)}, RUN_AT)
    assert (len(short[fid]), len(long[fid])) == (96, 3 * 96)
    assert cache.points_read == 96 + 3 * 96


def test_rollup_arrays_of_rollups_are_sorted_and_sliced_half_open() -> None:
    from forecast.history import Rollup

    rs = [Rollup(RUN_AT + timedelta(minutes=15 * i), float(i), 1.0) for i in (3, 1, 2, 0)]
    a = RollupArrays.of(rs)
    assert a.kw.tolist() == [0.0, 1.0, 2.0, 3.0]
    part = a.between((RUN_AT + timedelta(minutes=15)).timestamp(), (RUN_AT + timedelta(minutes=45)).timestamp())
    assert part.kw.tolist() == [1.0, 2.0]
