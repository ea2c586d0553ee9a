"""Worked examples of the interval baselines, each expected value computed by hand below
(day numbers and loads chosen so the arithmetic is checkable on paper)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dr_coordinator.domain import interval_baselines as ib
from dr_coordinator.domain.interval_baselines import Adjustment, Exclusion, Method, Rules
from dr_coordinator.domain.settlement import (
    RunKind,
    changed,
    next_run_kind,
    report_readings,
    settle,
)

LA = ZoneInfo("America/Los_Angeles")
NY = ZoneInfo("America/New_York")
MEL = ZoneInfo("Australia/Melbourne")


def readings(tz: ZoneInfo, first: date, last: date, kw: Callable[[datetime], float | None]) -> dict[datetime, float]:
    """15-minute readings over local days [first, last], keyed by UTC start; kw(local) -> value."""
    out: dict[datetime, float] = {}
    t = datetime.combine(first, time(0), tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), tz).astimezone(UTC)
    while t < end:
        v = kw(t.astimezone(tz))
        if v is not None:
            out[t] = v
        t += timedelta(minutes=15)
    return out


def local(tz: ZoneInfo, y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=tz)


def ctx(
    start: datetime, end: datetime, tz: ZoneInfo, country: str, subdiv: str | None, events: set[date] | None = None
) -> ib.EventContext:
    return ib.EventContext(
        start, end, tz, frozenset(events or set()), ib.holiday_dates(country, subdiv, {start.year - 1, start.year})
    )


def all_equal(values: tuple[float | None, ...], expected: float) -> None:
    assert values, "no interval"
    for v in values:
        assert v == pytest.approx(expected, abs=1e-9)


# --- CAISO 10-in-10 ------------------------------------------------------------------------------


# Weekdays load 100 + day-of-month kW all day; weekends and holidays 50 + day-of-month.
def _weekly(holidays: frozenset[date]) -> Callable[[datetime], float]:
    def kw(lt: datetime) -> float:
        d = lt.date()
        return (50.0 if d.weekday() >= 5 or d in holidays else 100.0) + d.day

    return kw


def _may_event(**rules: object) -> tuple[ib.Baseline, ib.EventContext]:
    # Tuesday 26 May 2026, 17:00-18:00 PDT. Memorial Day (Mon 25 May) is a holiday; Wed 20 May
    # was an earlier event day.
    c = ctx(local(LA, 2026, 5, 26, 17), local(LA, 2026, 5, 26, 18), LA, "US", "CA", {date(2026, 5, 20)})
    r = readings(LA, date(2026, 3, 27), date(2026, 5, 25), _weekly(c.holidays))
    r.update(readings(LA, date(2026, 5, 26), date(2026, 5, 26), lambda lt: 150.0 if lt.hour < 17 else 80.0))
    return ib.compute(Rules(method=Method.CAISO_10IN10, **rules), r, c), c  # type: ignore[arg-type]


def test_caiso_10in10_excludes_holiday_and_earlier_event_day() -> None:
    b, _ = _may_event(adjustment=Adjustment.NONE)
    # Weekdays back from 26 May skipping 25 (holiday) and 20 (event day): 22 21 19 18 15 14 13 12 11 8
    used = [22, 21, 19, 18, 15, 14, 13, 12, 11, 8]
    assert b.days_used == tuple(sorted(date(2026, 5, d) for d in used))
    assert sum(used) == 153
    all_equal(b.kw, 100 + 153 / 10)  # 115.3 kW in each of the four quarter hours
    assert len(b.kw) == 4
    assert b.intervals[0].start == datetime(2026, 5, 27, 0, 0, tzinfo=UTC)  # 17:00 PDT is the next UTC day
    assert b.excluded[date(2026, 5, 25)] is Exclusion.HOLIDAY
    assert b.excluded[date(2026, 5, 20)] is Exclusion.EVENT_DAY
    assert b.excluded[date(2026, 5, 23)] is Exclusion.WEEKEND
    assert b.excluded[date(2026, 5, 7)] is Exclusion.NOT_SELECTED
    assert b.flag is None


def test_caiso_day_of_adjustment_hits_the_plus_20_percent_cap() -> None:
    b, _ = _may_event(adjustment=Adjustment.RATIO)
    # Day-of window 13:00-16:00 reads 150 kW; the same window on the 10 days averages 115.3 kW:
    # ratio 150 / 115.3 = 1.30 -> capped at 1.20 -> 115.3 x 1.2 = 138.36 kW.
    assert b.adjustment_capped
    assert b.adjustment_value == pytest.approx(1.2)
    all_equal(b.kw, 138.36)
    all_equal(b.unadjusted_kw, 115.3)


def test_caiso_additive_variant_is_capped_at_20_percent_of_the_baseline() -> None:
    b, _ = _may_event(adjustment=Adjustment.ADDITIVE)
    # 150 - 115.3 = 34.7 kW, capped at 0.2 x 115.3 = 23.06 kW -> 138.36 kW
    assert b.adjustment_capped
    assert b.adjustment_value == pytest.approx(23.06)
    all_equal(b.kw, 138.36)


def test_caiso_ratio_inside_the_cap_is_applied_as_is() -> None:
    c = ctx(local(LA, 2026, 5, 26, 17), local(LA, 2026, 5, 26, 18), LA, "US", "CA", {date(2026, 5, 20)})
    r = readings(LA, date(2026, 3, 27), date(2026, 5, 25), _weekly(c.holidays))
    r.update(readings(LA, date(2026, 5, 26), date(2026, 5, 26), lambda lt: 126.83))
    b = ib.compute(Rules(method=Method.CAISO_10IN10), r, c)
    assert not b.adjustment_capped
    assert b.adjustment_value == pytest.approx(1.1)  # 126.83 / 115.3
    all_equal(b.kw, 126.83)


def test_caiso_4in4_weekend_event_uses_weekend_and_holiday_days() -> None:
    # Saturday 30 May 2026 14:00-16:00; Sunday 24 May was an event day. Weekend/holiday days back:
    # 25 (Memorial Day, 75 kW), 23 (73), 17 (67), 16 (66) -> (75 + 73 + 67 + 66) / 4 = 70.25 kW
    c = ctx(local(LA, 2026, 5, 30, 14), local(LA, 2026, 5, 30, 16), LA, "US", "CA", {date(2026, 5, 24)})
    r = readings(LA, date(2026, 3, 31), date(2026, 5, 29), _weekly(c.holidays))
    b = ib.compute(Rules(method=Method.CAISO_10IN10, adjustment=Adjustment.NONE, interval_minutes=60), r, c)
    assert b.days_used == (date(2026, 5, 16), date(2026, 5, 17), date(2026, 5, 23), date(2026, 5, 25))
    assert len(b.kw) == 2
    all_equal(b.kw, 70.25)
    assert b.excluded[date(2026, 5, 29)] is Exclusion.WEEKDAY
    assert b.excluded[date(2026, 5, 24)] is Exclusion.EVENT_DAY


# --- PJM CBL ---------------------------------------------------------------------------------------


def test_pjm_cbl_screens_a_low_usage_day_and_applies_the_symmetric_additive_adjustment() -> None:
    # Thursday 11 June 2026, 15:00-17:00 EDT. Weekdays back: 10 9 8 5 4 | 3 ...
    # Event-window loads: 10:100 9:20 8:110 5:90 4:105 3:120, older weekdays 95.
    # Initial window average (100+20+110+90+105)/5 = 85; 25 % of it = 21.25 > 20: day 9 is a
    # low-usage day, replaced by day 3 -> window 10 8 5 4 3; highest 4: 120 110 105 100 -> 108.75.
    # Day-of adjustment window 11:00-14:00 reads 100 kW on the event day and the window's loads
    # equal the day's load on the chosen days -> offset 100 - 108.75 = -8.75 -> CBL 100 kW.
    loads = {10: 100.0, 9: 20.0, 8: 110.0, 5: 90.0, 4: 105.0, 3: 120.0}
    c = ctx(local(NY, 2026, 6, 11, 15), local(NY, 2026, 6, 11, 17), NY, "US", None)

    def kw(lt: datetime) -> float:
        d = lt.date()
        if d == date(2026, 6, 11):
            return 100.0 if lt.hour < 15 else 40.0
        if d.month == 6 and d.day in loads:
            return loads[d.day]
        return 95.0

    r = readings(NY, date(2026, 4, 12), date(2026, 6, 11), kw)
    b = ib.compute(Rules(method=Method.PJM_CBL, interval_minutes=60), r, c)
    assert b.excluded[date(2026, 6, 9)] is Exclusion.LOW_USAGE
    assert b.days_used == (date(2026, 6, 3), date(2026, 6, 4), date(2026, 6, 8), date(2026, 6, 10))
    assert b.excluded[date(2026, 6, 5)] is Exclusion.NOT_SELECTED  # the lowest of the five
    all_equal(b.unadjusted_kw, 108.75)
    assert b.adjustment is Adjustment.ADDITIVE
    assert b.adjustment_value == pytest.approx(-8.75)
    all_equal(b.kw, 100.0)
    s = settle(b, r, target_kw=50.0)
    # metered 40 kW: reduction 60 kW = 120 % of 50 kW, two hours -> 120 kWh
    assert [iv.reduction_kw for iv in s.intervals] == [pytest.approx(60.0)] * 2
    assert s.performance_pct == pytest.approx(120.0)
    assert s.reduction_kwh == pytest.approx(120.0)
    assert s.coverage_pct == pytest.approx(100.0)


def test_pjm_saturday_event_uses_the_highest_two_of_three_saturdays() -> None:
    # Saturday 13 June 2026, 12:00-13:00. Saturdays back: 6 June (60), 30 May (80), 23 May (70).
    # Highest 2: 80 and 70 -> 75 kW. Sundays carry 500 kW, which a weekend-generic rule would use.
    c = ctx(local(NY, 2026, 6, 13, 12), local(NY, 2026, 6, 13, 13), NY, "US", None)
    sat = {date(2026, 6, 6): 60.0, date(2026, 5, 30): 80.0, date(2026, 5, 23): 70.0}

    def kw(lt: datetime) -> float:
        d = lt.date()
        return sat.get(d, 500.0 if d.weekday() == 6 else 65.0 if d.weekday() == 5 else 100.0)

    r = readings(NY, date(2026, 4, 14), date(2026, 6, 12), kw)
    b = ib.compute(Rules(method=Method.PJM_CBL, adjustment=Adjustment.NONE, interval_minutes=60), r, c)
    assert b.days_used == (date(2026, 5, 23), date(2026, 5, 30))
    all_equal(b.kw, 75.0)


# --- DST change days -------------------------------------------------------------------------------


def test_event_on_the_spring_forward_day_in_los_angeles_uses_local_wall_clock() -> None:
    # Sunday 8 March 2026 (clocks 02:00 -> 03:00), event 17:00-18:00 PDT = 00:00-01:00 UTC 9 March.
    # Past days read 100 + day-of-month kW only during 17:00-18:00 local (PST, 01:00 UTC), 10 kW
    # otherwise; weekdays 500 kW at that hour. 4-in-4: Sat 7 Mar (107), Sun 1 Mar (101),
    # Sat 28 Feb (128), Sun 22 Feb (122) -> 114.5 kW.
    c = ctx(local(LA, 2026, 3, 8, 17), local(LA, 2026, 3, 8, 18), LA, "US", "CA")

    def kw(lt: datetime) -> float:
        if lt.hour != 17:
            return 10.0
        return 100.0 + lt.day if ib.is_weekend_or_holiday(lt.date(), c.holidays) else 500.0

    r = readings(LA, date(2026, 1, 7), date(2026, 3, 7), kw)
    b = ib.compute(Rules(method=Method.CAISO_10IN10, adjustment=Adjustment.NONE), r, c)
    assert b.intervals[0].start == datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    assert b.intervals[0].local_start.utcoffset() == timedelta(hours=-7)
    assert b.days_used == (date(2026, 2, 22), date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 7))
    all_equal(b.kw, 114.5)


def test_event_on_the_dst_end_day_in_melbourne_with_easter_holidays() -> None:
    # Sunday 5 April 2026: clocks 03:00 AEDT -> 02:00 AEST; Easter Sunday is a Victorian holiday.
    # Event 18:00-19:00 AEST = 08:00-09:00 UTC (past days' 18:00 was 07:00 UTC).
    # Weekend/holiday days back: Easter Sat 4 Apr (204), Good Friday 3 Apr (203),
    # Sun 29 Mar (229), Sat 28 Mar (228) -> 216 kW. Weekdays read 500 kW at 18:00.
    c = ctx(local(MEL, 2026, 4, 5, 18), local(MEL, 2026, 4, 5, 19), MEL, "AU", "VIC")
    assert date(2026, 4, 3) in c.holidays

    def kw(lt: datetime) -> float:
        if lt.hour != 18:
            return 20.0
        return 200.0 + lt.day if ib.is_weekend_or_holiday(lt.date(), c.holidays) else 500.0

    r = readings(MEL, date(2026, 2, 4), date(2026, 4, 4), kw)
    b = ib.compute(Rules(method=Method.CAISO_10IN10, adjustment=Adjustment.NONE), r, c)
    assert b.intervals[0].start == datetime(2026, 4, 5, 8, 0, tzinfo=UTC)
    assert b.days_used == (date(2026, 3, 28), date(2026, 3, 29), date(2026, 4, 3), date(2026, 4, 4))
    all_equal(b.kw, 216.0)


def test_fall_back_day_history_counts_its_25_hours_as_full_coverage() -> None:
    h = ib.local_history(readings(LA, date(2026, 11, 1), date(2026, 11, 1), lambda lt: 5.0), LA)
    assert h.coverage[date(2026, 11, 1)] == pytest.approx(1.0)  # 100 quarter hours present of 100
    assert len(h.by_day[date(2026, 11, 1)]) == 96  # the repeated hour shares its wall-clock slots


# --- insufficient history ------------------------------------------------------------------------


def test_three_eligible_days_are_flagged_and_the_fallback_named() -> None:
    # Only Mon 1 - Thu 4 June 2026 have data; Wed 3 June is half missing -> 3 eligible weekdays,
    # fewer than the 5 CAISO requires for a 10-in-10.
    c = ctx(local(LA, 2026, 6, 5, 14), local(LA, 2026, 6, 5, 15), LA, "US", "CA")

    def kw(lt: datetime) -> float | None:
        if lt.day == 3 and lt.hour >= 12:
            return None
        return 100.0 + lt.day

    r = readings(LA, date(2026, 6, 1), date(2026, 6, 4), kw)
    b = ib.caiso(ib.local_history(r, LA), r, c, Rules(adjustment=Adjustment.NONE))
    assert b.flag == "insufficient_history"
    assert b.fallback is Method.FORECAST
    assert b.days_used == (date(2026, 6, 1), date(2026, 6, 2), date(2026, 6, 4))
    assert b.excluded[date(2026, 6, 3)] is Exclusion.LOW_COVERAGE
    all_equal(b.kw, 100 + (1 + 2 + 4) / 3)

    fc = {datetime(2026, 6, 5, 21, 0, tzinfo=UTC): 90.0}  # hourly forecast point for 14:00 PDT
    used = ib.compute(Rules(adjustment=Adjustment.NONE), r, c, forecast_kw=fc)
    assert used.method is Method.FORECAST
    assert used.replaced is Method.CAISO_10IN10
    assert used.flag == "insufficient_history"
    assert not used.settlement_grade
    all_equal(used.kw, 90.0)


def test_rules_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Rules(interval_minutes=30)
    with pytest.raises(ValueError):
        Rules(adjustment_start_h=1, adjustment_end_h=2)


# --- regression -------------------------------------------------------------------------------------


def test_regression_recovers_a_time_of_week_and_temperature_load() -> None:
    # load = 50 + 30 during 09-17 on weekdays + 2 kW per degree C above 20; the event day is hot.
    c = ctx(local(LA, 2026, 7, 15, 14), local(LA, 2026, 7, 15, 16), LA, "US", "CA")
    temps: dict[datetime, float] = {}

    def temp(lt: datetime) -> float:
        return 15.0 + (lt.day % 7) * 2.0 + (8.0 if lt.date() == date(2026, 7, 15) else 0.0)

    def kw(lt: datetime) -> float:
        occ = 30.0 if lt.weekday() < 5 and 9 <= lt.hour < 17 else 0.0
        return 50.0 + occ + 2.0 * max(0.0, temp(lt) - 20.0)

    r = readings(LA, date(2026, 5, 16), date(2026, 7, 14), kw)
    t = datetime.combine(date(2026, 5, 16), time(0), LA).astimezone(UTC)
    while t < datetime(2026, 7, 16, 12, tzinfo=UTC):
        temps[t] = temp(t.astimezone(LA))
        t += timedelta(minutes=15)
    b = ib.compute(Rules(method=Method.REGRESSION, interval_minutes=60), r, c, temperature_c=temps)
    # 15 July (a Wednesday, day 15 -> 15 + 1*2 + 8 = 25 C): 50 + 30 + 2 x 5 = 90 kW
    assert b.flag is None
    assert date(2026, 7, 4) not in b.days_used and b.excluded[date(2026, 7, 3)] is Exclusion.HOLIDAY
    for v in b.kw:
        assert v == pytest.approx(90.0, abs=1e-6)


# --- settlement runs ------------------------------------------------------------------------------


def test_settlement_coverage_and_run_kinds() -> None:
    c = ctx(local(LA, 2026, 5, 26, 17), local(LA, 2026, 5, 26, 18), LA, "US", "CA")
    iv = ib.event_intervals(c.start, c.end, LA, 60)
    b = ib.Baseline(Method.FORECAST, iv, (100.0,), (100.0,), Adjustment.NONE, 0.0, False, ())
    t0 = iv[0].start
    partial = {t0: 70.0, t0 + timedelta(minutes=15): 80.0}
    s1 = settle(b, partial, target_kw=40.0)
    # two of four quarter hours: metered 75 kW, reduction 25 kW = 62.5 % of 40, coverage 50 %
    assert s1.intervals[0].metered_kw == pytest.approx(75.0)
    assert s1.performance_pct == pytest.approx(62.5)
    assert s1.coverage_pct == pytest.approx(50.0)
    full = {**partial, t0 + timedelta(minutes=30): 60.0, t0 + timedelta(minutes=45): 50.0}
    s2 = settle(b, full, target_kw=40.0)
    assert s2.intervals[0].metered_kw == pytest.approx(65.0)
    assert changed(s1, s2) and not changed(s2, settle(b, dict(full), 40.0))

    end, lateness = c.end, timedelta(hours=1)
    assert next_run_kind(end - timedelta(seconds=1), end, lateness, set()) is None
    assert next_run_kind(end, end, lateness, set()) is RunKind.PRELIMINARY
    assert next_run_kind(end + timedelta(minutes=5), end, lateness, {RunKind.PRELIMINARY}) is None
    assert next_run_kind(end + lateness, end, lateness, {RunKind.PRELIMINARY}) is RunKind.SETTLEMENT
    assert next_run_kind(end + lateness, end, lateness, {RunKind.SETTLEMENT}) is RunKind.TRUE_UP


def test_openadr_report_intervals_carry_usage_demand_and_baseline() -> None:
    from dr_coordinator.domain.report import ResourceResult, build_interval_report

    c = ctx(local(LA, 2026, 5, 26, 17), local(LA, 2026, 5, 26, 17, 30), LA, "US", "CA")
    iv = ib.event_intervals(c.start, c.end, LA, 15)
    b = ib.Baseline(Method.FORECAST, iv, (100.0, 100.0), (100.0, 100.0), Adjustment.NONE, 0.0, False, ())
    s = settle(b, {iv[0].start: 60.0}, target_kw=40.0)
    report = build_interval_report(
        version="3.1",
        program_id="p",
        event_id="7",
        client_name="ven",
        report_name="r",
        resources=[ResourceResult("fac-1", "restored", tuple(report_readings(s)))],
    )
    intervals = report["resources"][0]["intervals"]
    # 60 kW for a quarter hour = 15 kWh; the second quarter has no reading: no USAGE/DEMAND
    assert [i["intervalPeriod"] for i in intervals] == [
        {"start": "2026-05-27T00:00:00Z", "duration": "PT900S"},
        {"start": "2026-05-27T00:15:00Z", "duration": "PT900S"},
    ]
    assert [i["payloads"] for i in intervals] == [
        [
            {"type": "OPERATING_STATE", "values": ["NORMAL"]},
            {"type": "USAGE", "values": [15.0]},
            {"type": "DEMAND", "values": [60.0]},
            {"type": "BASELINE", "values": [100.0]},
        ],
        [{"type": "OPERATING_STATE", "values": ["NORMAL"]}, {"type": "BASELINE", "values": [100.0]}],
    ]


def test_rules_for_reads_program_overrides_and_refuses_unknown_keys() -> None:
    r = ib.rules_for("pjm_high4of5", {"interval_minutes": 60, "adjustment": "none", "adjustment_start_h": 3})
    assert (r.method, r.interval_minutes, r.adjustment, r.adjustment_start_h) == (
        Method.PJM_CBL,
        60,
        Adjustment.NONE,
        3.0,
    )
    for bad in ({"colour": 1}, {"interval_minutes": "15"}, {"interval_minutes": 20}, {"lookback_days": 90}):
        with pytest.raises(ValueError):
            ib.rules_for("caiso_10in10", bad)
    with pytest.raises(ValueError):
        ib.rules_for("made_up", None)
