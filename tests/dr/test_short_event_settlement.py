"""An event off the quarter-hour grid (the two-minute demo) is settled on what it covered: its
partly covered intervals are clipped to the event and measured on the 1-minute rollups inside it
(decision 0820), never on a quarter's mean that mixes unshed minutes in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dr_coordinator.domain.interval_baselines import Adjustment, Baseline, Method, event_intervals
from dr_coordinator.domain.settlement import MinuteReadings, settle

TZ = ZoneInfo("Europe/London")
Q = datetime(2026, 7, 1, 14, 0, tzinfo=UTC)


def baseline(start: datetime, end: datetime, kw: float) -> Baseline:
    ivs = event_intervals(start, end, TZ, 15)
    return Baseline(Method.CAISO_10IN10, ivs, (kw,) * len(ivs), (kw,) * len(ivs), Adjustment.NONE, 1.0, False, ())


def minute(k: int) -> datetime:
    return Q + timedelta(minutes=k)


def test_two_minute_event_inside_a_quarter_is_measured_on_its_minutes() -> None:
    start, end = minute(3) + timedelta(seconds=20), minute(5) + timedelta(seconds=20)  # 14:03:20-14:05:20
    b = baseline(start, end, 200.0)
    quarter = {Q: 190.0}  # the quarter's mean: 13 minutes without the shed
    mins = MinuteReadings({minute(3): 150.0, minute(4): 140.0, minute(5): 160.0, minute(9): 999.0}, {})
    s = settle(b, quarter, target_kw=50.0, coverage={Q: 1.0}, event=(start, end), minutes=mins)
    (row,) = s.intervals
    assert (row.start, row.end) == (start, end)
    assert row.metered_kw == pytest.approx((150 + 140 + 160) / 3)  # minutes 3, 4, 5; not minute 9
    assert row.reduction_kw == pytest.approx(200 - 150)
    assert row.performance_pct == pytest.approx(100.0)
    assert row.coverage_pct == pytest.approx(100.0)
    assert s.metered_kwh == pytest.approx(150.0 * 2 / 60)  # two minutes of energy, not a quarter's
    assert row.local_start == start.astimezone(TZ)


def test_missing_minutes_lower_coverage_and_no_minutes_mean_no_metered_load() -> None:
    start, end = minute(3), minute(7)
    b = baseline(start, end, 200.0)
    mins = MinuteReadings({minute(3): 100.0, minute(5): 120.0}, {minute(3): 1.0, minute(5): 0.5})
    (row,) = settle(b, {Q: 190.0}, 50.0, event=(start, end), minutes=mins).intervals
    assert row.metered_kw == pytest.approx(110.0)
    assert row.coverage_pct == pytest.approx(100 * 1.5 / 4)
    (row,) = settle(b, {Q: 190.0}, 50.0, event=(start, end), minutes=None).intervals
    assert row.metered_kw is None and row.coverage_pct == 0.0


def test_event_across_quarters_clips_the_ends_and_keeps_whole_quarters_on_15_min_rollups() -> None:
    start, end = minute(10), minute(32)  # 14:10-14:32: part of Q1, all of Q2, part of Q3
    b = baseline(start, end, 200.0)
    quarters = {Q: 500.0, Q + timedelta(minutes=15): 180.0, Q + timedelta(minutes=30): 500.0}
    mins = MinuteReadings({minute(k): 170.0 + k for k in range(0, 45)}, {})
    s = settle(b, quarters, 50.0, event=(start, end), minutes=mins)
    assert [(r.start, r.end) for r in s.intervals] == [
        (minute(10), minute(15)),
        (minute(15), minute(30)),
        (minute(30), minute(32)),
    ]
    first, whole, last = s.intervals
    assert first.metered_kw == pytest.approx(170 + (10 + 11 + 12 + 13 + 14) / 5)
    assert whole.metered_kw == pytest.approx(180.0)  # the quarter's own rollup
    assert last.metered_kw == pytest.approx(170 + 30.5)
    assert sum(r.hours for r in s.intervals) == pytest.approx(22 / 60)


def test_without_an_event_window_the_intervals_are_the_baselines() -> None:
    b = baseline(minute(3), minute(5), 200.0)
    (row,) = settle(b, {Q: 190.0}, 50.0).intervals
    assert (row.start, row.end, row.metered_kw) == (Q, Q + timedelta(minutes=15), 190.0)
