"""Per-interval customer baselines in the facility's local time. Pure: no I/O.

A baseline answers "what would this facility have drawn in each interval of the event without
it". Every method here works on the facility's *local* calendar: the event's intervals are keyed
by their local wall-clock start (``HH:MM``) and matched against the same wall-clock interval on
past local days, so a DST change or an evening event that falls on the next UTC day does not
shift the window. Rules, sources and simplifications: docs/decisions/0430-dr-interval-baselines.md.

Inputs are 15-minute mean-kW readings keyed by their UTC start (the aggregation's ``15m``
rollup). Hourly baselines average the four quarter hours of each local hour.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import numpy as np

READING = timedelta(minutes=15)
HISTORY_DAYS = 60  # the look-back the adapters read; each method narrows it


class Method(StrEnum):
    CAISO_10IN10 = "caiso_10in10"
    PJM_CBL = "pjm_high4of5"
    REGRESSION = "regression_towt"
    FORECAST = "forecast"


class Adjustment(StrEnum):
    NONE = "none"
    RATIO = "ratio"  # CAISO day-of (multiplicative), capped
    ADDITIVE = "additive"  # CAISO additive variant (capped) / PJM symmetric additive (uncapped)


class Exclusion(StrEnum):
    EVENT_DAY = "event_day"
    HOLIDAY = "holiday"
    WEEKEND = "weekend"
    WEEKDAY = "weekday"
    LOW_COVERAGE = "low_coverage"
    LOW_USAGE = "low_usage"
    OUTSIDE_LOOKBACK = "outside_lookback"
    NOT_SELECTED = "not_selected"  # eligible, but older than the days needed or not among the highest


@dataclass(frozen=True)
class Rules:
    """A program's baseline parameters (defaults: the published rules, see decision 0430)."""

    method: Method = Method.CAISO_10IN10
    interval_minutes: int = 15  # 15 or 60
    lookback_days: int = 45
    min_coverage: float = 0.9  # a day with less of its readings present is not a baseline day
    adjustment: Adjustment = Adjustment.RATIO
    adjustment_cap: float = 0.20  # CAISO +/-20 %
    adjustment_start_h: float = 4.0  # adjustment window [event start - 4 h, event start - 1 h)
    adjustment_end_h: float = 1.0
    # CAISO
    weekday_days: int = 10
    weekend_days: int = 4
    caiso_min_weekday_days: int = 5
    caiso_min_weekend_days: int = 4
    # PJM
    pjm_weekday_window: int = 5
    pjm_weekday_highest: int = 4
    pjm_weekend_window: int = 3
    pjm_weekend_highest: int = 2
    pjm_low_usage_ratio: float = 0.25
    # regression
    regression_min_days: int = 28
    fallback: Method = Method.FORECAST

    def __post_init__(self) -> None:
        if self.interval_minutes not in (15, 60):
            raise ValueError("interval_minutes must be 15 or 60")
        if not 0 <= self.adjustment_cap < 1:
            raise ValueError("adjustment_cap must be in [0, 1)")
        if not self.adjustment_start_h > self.adjustment_end_h >= 0:
            raise ValueError("adjustment window must end after it starts and not after the event start")
        if not 0 < self.min_coverage <= 1:
            raise ValueError("min_coverage must be in (0, 1]")


@dataclass(frozen=True)
class Interval:
    start: datetime  # UTC
    end: datetime  # UTC
    local_start: datetime  # facility local time


@dataclass(frozen=True)
class Baseline:
    method: Method
    intervals: tuple[Interval, ...]
    kw: tuple[float | None, ...]  # one value per interval, adjusted
    unadjusted_kw: tuple[float | None, ...]
    adjustment: Adjustment
    adjustment_value: float  # ratio (1.0 = none) or additive kW (0.0 = none)
    adjustment_capped: bool
    days_used: tuple[date, ...]
    excluded: Mapping[date, Exclusion] = field(default_factory=dict)
    flag: str | None = None  # "insufficient_history" when the method lacked the days it needs
    fallback: Method | None = None  # the method a settlement should use instead when flagged
    settlement_grade: bool = True  # False for the planning-only forecast baseline
    replaced: Method | None = None  # the program's method this fallback stands in for

    def as_dict(self) -> dict[str, object]:
        return {
            "method": self.method.value,
            "adjustment": self.adjustment.value,
            "adjustment_value": self.adjustment_value,
            "adjustment_capped": self.adjustment_capped,
            "days_used": [d.isoformat() for d in self.days_used],
            "excluded": {d.isoformat(): r.value for d, r in sorted(self.excluded.items())},
            "flag": self.flag,
            "fallback": self.fallback.value if self.fallback else None,
            "settlement_grade": self.settlement_grade,
            "replaced": self.replaced.value if self.replaced else None,
        }


class InsufficientHistoryError(ValueError):
    pass


# --- calendar --------------------------------------------------------------------------------


def holiday_dates(country: str | None, subdivision: str | None, years: Iterable[int]) -> frozenset[date]:
    """Public holidays of the facility's country/subdivision (the ``holidays`` package's calendar)."""
    if not country:
        return frozenset()
    return _holiday_dates(country, subdivision or None, tuple(sorted(set(years))))


@functools.lru_cache(maxsize=256)
def _holiday_dates(country: str, subdivision: str | None, years: tuple[int, ...]) -> frozenset[date]:
    # Building a country's calendar costs milliseconds; planning a fleet asked it once per facility.
    cal = holidays_lib.country_holidays(country, subdiv=subdivision, years=list(years))
    return frozenset(cal.keys())


def is_weekend_or_holiday(day: date, holidays: frozenset[date]) -> bool:
    return day.weekday() >= 5 or day in holidays


def event_intervals(start: datetime, end: datetime, tz: ZoneInfo, interval_minutes: int) -> tuple[Interval, ...]:
    """The event window cut into intervals aligned to the local clock (15-min or hourly)."""
    step = timedelta(minutes=interval_minutes)
    start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    # Offsets are whole quarter hours in every zone we settle; align on the UTC grid of the step,
    # which coincides with the local grid for 15-min steps and whole-hour offsets.
    first = start_utc - timedelta(seconds=(start_utc.timestamp() % step.total_seconds()))
    out = []
    t = first
    while t < end_utc:
        out.append(Interval(t, t + step, t.astimezone(tz)))
        t += step
    return tuple(out)


def _wall(local: datetime) -> time:
    return local.time().replace(tzinfo=None, fold=0)


@dataclass(frozen=True)
class LocalHistory:
    """15-minute readings regrouped by local day and wall-clock quarter hour."""

    tz: ZoneInfo
    by_day: Mapping[date, Mapping[time, float]]  # local date -> wall-clock quarter start -> kW
    coverage: Mapping[date, float]  # share of the local day's quarter hours present


def local_history(readings: Mapping[datetime, float], tz: ZoneInfo) -> LocalHistory:
    """Regroup UTC-keyed readings by local date. The repeated hour of a DST fall-back is averaged
    by wall clock (both 01:15s feed one 01:15 value); the day's coverage counts real quarters."""
    sums: dict[date, dict[time, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[date, int] = defaultdict(int)
    for ts, kw in readings.items():
        if kw is None or not math.isfinite(kw):
            continue
        local = ts.astimezone(tz)
        sums[local.date()][_wall(local)].append(kw)
        counts[local.date()] += 1
    by_day = {d: {w: sum(v) / len(v) for w, v in slots.items()} for d, slots in sums.items()}
    coverage = {d: n / _quarters_in_day(d, tz) for d, n in counts.items()}
    return LocalHistory(tz, by_day, coverage)


def _quarters_in_day(day: date, tz: ZoneInfo) -> int:
    lo = datetime.combine(day, time(0), tz).astimezone(UTC)
    hi = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    return round((hi - lo) / READING)


def _slot_values(day: Mapping[time, float], local_start: datetime, interval_minutes: int) -> float | None:
    """Mean kW of a past day over the wall-clock interval starting at ``local_start``'s time.
    None when any quarter is missing (the interval's value would be biased)."""
    vals = []
    base = datetime.combine(date(2000, 1, 3), _wall(local_start))
    for k in range(interval_minutes // 15):
        w = (base + k * READING).time()
        if w not in day:
            return None
        vals.append(day[w])
    return sum(vals) / len(vals)


def _window_mean(day: Mapping[time, float], walls: Sequence[time]) -> float | None:
    vals = [day[w] for w in walls if w in day]
    return sum(vals) / len(vals) if len(vals) == len(walls) and vals else None


# --- day selection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    """Past days of the event's day type, newest first, with every other day's exclusion reason."""

    days: tuple[date, ...]
    excluded: dict[date, Exclusion]


def candidate_days(
    event_day: date,
    history: LocalHistory,
    *,
    event_days: frozenset[date],
    holidays: frozenset[date],
    lookback_days: int,
    min_coverage: float,
    weekend_rule: bool,
    same_weekday_group: Sequence[int] | None = None,
) -> Candidates:
    """Eligible days before ``event_day`` within the look-back: of the event's day type (weekday,
    or weekend/holiday when ``weekend_rule``), not DR event days, with enough data."""
    days: list[date] = []
    excluded: dict[date, Exclusion] = {}
    for back in range(1, HISTORY_DAYS + 1):
        d = event_day - timedelta(days=back)
        if back > lookback_days:
            if d in history.by_day:
                excluded[d] = Exclusion.OUTSIDE_LOOKBACK
            continue
        weekend_like = is_weekend_or_holiday(d, holidays)
        if d in event_days:
            excluded[d] = Exclusion.EVENT_DAY
        elif not weekend_rule and d in holidays:
            excluded[d] = Exclusion.HOLIDAY
        elif not weekend_rule and weekend_like:
            excluded[d] = Exclusion.WEEKEND
        elif weekend_rule and not weekend_like:
            excluded[d] = Exclusion.WEEKDAY
        elif weekend_rule and same_weekday_group is not None and not _in_group(d, holidays, same_weekday_group):
            excluded[d] = Exclusion.WEEKEND
        elif history.coverage.get(d, 0.0) < min_coverage:
            excluded[d] = Exclusion.LOW_COVERAGE
        else:
            days.append(d)
    return Candidates(tuple(days), excluded)


def _in_group(d: date, holidays: frozenset[date], group: Sequence[int]) -> bool:
    # PJM: Saturdays match Saturdays; Sundays and holidays match Sundays and holidays.
    weekday = 6 if d in holidays else d.weekday()
    return weekday in group


# --- the methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventContext:
    start: datetime
    end: datetime
    tz: ZoneInfo
    event_days: frozenset[date]  # local dates of earlier DR events (incl. cancelled/missed that shed)
    holidays: frozenset[date]

    @property
    def event_day(self) -> date:
        return self.start.astimezone(self.tz).date()


def _adjustment_walls(ctx: EventContext, rules: Rules) -> list[time]:
    lo = ctx.start - timedelta(hours=rules.adjustment_start_h)
    hi = ctx.start - timedelta(hours=rules.adjustment_end_h)
    walls = []
    t = lo.astimezone(UTC)
    while t < hi:
        walls.append(_wall(t.astimezone(ctx.tz)))
        t += READING
    return walls


def _day_of_mean(readings: Mapping[datetime, float], ctx: EventContext, rules: Rules) -> float | None:
    lo = (ctx.start - timedelta(hours=rules.adjustment_start_h)).astimezone(UTC)
    hi = (ctx.start - timedelta(hours=rules.adjustment_end_h)).astimezone(UTC)
    vals = []
    t = lo
    while t < hi:
        v = readings.get(t)
        if v is None:
            return None
        vals.append(v)
        t += READING
    return sum(vals) / len(vals) if vals else None


def _average_days(
    history: LocalHistory, days: Sequence[date], intervals: Sequence[Interval], interval_minutes: int
) -> tuple[float | None, ...]:
    out: list[float | None] = []
    for iv in intervals:
        vals = [_slot_values(history.by_day[d], iv.local_start, interval_minutes) for d in days]
        present = [v for v in vals if v is not None]
        out.append(sum(present) / len(present) if present else None)
    return tuple(out)


def _apply_adjustment(
    unadjusted: tuple[float | None, ...],
    history: LocalHistory,
    days: Sequence[date],
    day_of_kw: float | None,
    walls: Sequence[time],
    kind: Adjustment,
    cap: float | None,
) -> tuple[tuple[float | None, ...], float, bool]:
    """Adjusted values, the adjustment (ratio or kW) and whether it hit its cap."""
    neutral = 1.0 if kind is Adjustment.RATIO else 0.0
    if kind is Adjustment.NONE or day_of_kw is None or not days:
        return unadjusted, neutral, False
    per_day = [_window_mean(history.by_day[d], walls) for d in days]
    present = [v for v in per_day if v is not None]
    if not present:
        return unadjusted, neutral, False
    base = sum(present) / len(present)
    if kind is Adjustment.RATIO:
        if base <= 0:
            return unadjusted, neutral, False
        raw = day_of_kw / base
        value = raw if cap is None else min(1 + cap, max(1 - cap, raw))
        return tuple(None if u is None else u * value for u in unadjusted), value, value != raw
    raw = day_of_kw - base
    value = raw if cap is None else min(cap * base, max(-cap * base, raw))
    return tuple(None if u is None else max(0.0, u + value) for u in unadjusted), value, value != raw


def caiso(history: LocalHistory, readings: Mapping[datetime, float], ctx: EventContext, rules: Rules) -> Baseline:
    """CAISO 10-in-10 (weekday events) / 4-in-4 (weekend and holiday events), with the day-of
    adjustment over the configurable pre-event window, capped at +/- ``adjustment_cap``."""
    weekend = is_weekend_or_holiday(ctx.event_day, ctx.holidays)
    need = rules.weekend_days if weekend else rules.weekday_days
    minimum = rules.caiso_min_weekend_days if weekend else rules.caiso_min_weekday_days
    cands = candidate_days(
        ctx.event_day,
        history,
        event_days=ctx.event_days,
        holidays=ctx.holidays,
        lookback_days=rules.lookback_days,
        min_coverage=rules.min_coverage,
        weekend_rule=weekend,
    )
    used = cands.days[:need]
    excluded = dict(cands.excluded)
    excluded.update({d: Exclusion.NOT_SELECTED for d in cands.days[need:]})
    intervals = event_intervals(ctx.start, ctx.end, ctx.tz, rules.interval_minutes)
    unadjusted = _average_days(history, used, intervals, rules.interval_minutes)
    kw, value, capped = _apply_adjustment(
        unadjusted,
        history,
        used,
        _day_of_mean(readings, ctx, rules),
        _adjustment_walls(ctx, rules),
        rules.adjustment,
        rules.adjustment_cap,
    )
    b = Baseline(
        Method.CAISO_10IN10, intervals, kw, unadjusted, rules.adjustment, value, capped, tuple(sorted(used)), excluded
    )
    return _flag(b, len(used) < minimum, rules)


def pjm_cbl(history: LocalHistory, readings: Mapping[datetime, float], ctx: EventContext, rules: Rules) -> Baseline:
    """PJM Customer Baseline Load: weekday events use the highest 4 of the 5 most recent eligible
    weekdays (low-usage days screened and replaced by earlier days); Saturday events the highest 2
    of the 3 most recent Saturdays, Sunday/holiday events of Sundays and holidays. Symmetric
    additive adjustment (uncapped) over the pre-event window."""
    weekend = is_weekend_or_holiday(ctx.event_day, ctx.holidays)
    group: Sequence[int] | None = None
    if weekend:
        group = (5,) if ctx.event_day.weekday() == 5 and ctx.event_day not in ctx.holidays else (6,)
    window = rules.pjm_weekend_window if weekend else rules.pjm_weekday_window
    highest = rules.pjm_weekend_highest if weekend else rules.pjm_weekday_highest
    cands = candidate_days(
        ctx.event_day,
        history,
        event_days=ctx.event_days,
        holidays=ctx.holidays,
        lookback_days=rules.lookback_days,
        min_coverage=rules.min_coverage,
        weekend_rule=weekend,
        same_weekday_group=group,
    )
    intervals = event_intervals(ctx.start, ctx.end, ctx.tz, rules.interval_minutes)
    excluded = dict(cands.excluded)

    def event_usage(d: date) -> float | None:
        vals = _average_days(history, [d], intervals, rules.interval_minutes)
        present = [v for v in vals if v is not None]
        return sum(present) / len(present) if present else None

    usage = {d: event_usage(d) for d in cands.days}
    pool = [d for d in cands.days if usage[d] is not None]
    # Low-usage screen: a day whose event-window usage is below the ratio x the average of the
    # initial window is replaced by the next older day; repeated until the window holds no such day.
    chosen = pool[:window]
    rest = pool[window:]
    reference = _mean_of([usage[d] for d in chosen])
    while reference is not None and reference > 0:
        low = [d for d in chosen if (usage[d] or 0.0) < rules.pjm_low_usage_ratio * reference]
        if not low:
            break
        for d in low:
            excluded[d] = Exclusion.LOW_USAGE
            chosen.remove(d)
        while len(chosen) < window and rest:
            nxt = rest.pop(0)
            if (usage[nxt] or 0.0) < rules.pjm_low_usage_ratio * reference:
                excluded[nxt] = Exclusion.LOW_USAGE
                continue
            chosen.append(nxt)
    excluded.update({d: Exclusion.NOT_SELECTED for d in rest})
    ranked = sorted(chosen, key=lambda d: (usage[d] or 0.0, d), reverse=True)
    used = ranked[:highest]
    excluded.update({d: Exclusion.NOT_SELECTED for d in ranked[highest:]})
    unadjusted = _average_days(history, used, intervals, rules.interval_minutes)
    kind = Adjustment.NONE if rules.adjustment is Adjustment.NONE else Adjustment.ADDITIVE
    kw, value, capped = _apply_adjustment(
        unadjusted,
        history,
        used,
        _day_of_mean(readings, ctx, rules),
        _adjustment_walls(ctx, rules),
        kind,
        None,
    )
    b = Baseline(Method.PJM_CBL, intervals, kw, unadjusted, kind, value, capped, tuple(sorted(used)), excluded)
    return _flag(b, len(used) < highest, rules)


def _mean_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


TEMPERATURE_KNOTS_C = (10.0, 15.0, 20.0, 25.0, 30.0)


def _temperature_features(temp_c: float) -> list[float]:
    """Piecewise-linear temperature segments (the CalTRACK/LBNL time-of-week-and-temperature form)."""
    edges = (-math.inf, *TEMPERATURE_KNOTS_C, math.inf)
    feats = []
    for lo, hi in itertools.pairwise(edges):
        if lo == -math.inf:
            feats.append(min(temp_c, hi))
        else:
            feats.append(max(0.0, min(temp_c, hi) - lo))
    return feats


def _time_of_week(local: datetime, interval_minutes: int) -> int:
    return (local.weekday() * 24 * 60 + local.hour * 60 + local.minute) // interval_minutes


def _fit_time_of_week(bins: np.ndarray, y: np.ndarray, temps: np.ndarray) -> tuple[dict[int, float], np.ndarray]:
    """Least squares of y on one indicator per time-of-week bin plus the temperature segments,
    solved by within-bin demeaning (Frisch-Waugh-Lovell): the same fit as the full design matrix,
    without building a rows x (bins + segments) matrix. Returns each seen bin's level and the
    temperature coefficients (empty without temperatures)."""
    uniq, inverse = np.unique(bins, return_inverse=True)
    counts = np.bincount(inverse)
    y_mean = np.bincount(inverse, weights=y) / counts
    segments = temps.shape[1] if temps.ndim == 2 else 0
    if not segments:
        return {int(b): float(v) for b, v in zip(uniq, y_mean, strict=True)}, np.zeros(0)
    t_mean = np.stack([np.bincount(inverse, weights=temps[:, j]) / counts for j in range(segments)], axis=1)
    beta: np.ndarray = np.linalg.lstsq(temps - t_mean[inverse], y - y_mean[inverse], rcond=None)[0]
    levels = y_mean - t_mean @ beta
    return {int(b): float(v) for b, v in zip(uniq, levels, strict=True)}, beta


def regression(
    history: LocalHistory,
    ctx: EventContext,
    rules: Rules,
    temperature_c: Mapping[datetime, float] | None = None,
) -> Baseline:
    """A CalTRACK-style time-of-week (+ temperature when given) regression fitted by least squares
    on the eligible days of the look-back (any day type: time of week carries the weekly shape)."""
    excluded: dict[date, Exclusion] = {}
    days: list[date] = []
    for back in range(1, HISTORY_DAYS + 1):
        d = ctx.event_day - timedelta(days=back)
        if back > rules.lookback_days:
            if d in history.by_day:
                excluded[d] = Exclusion.OUTSIDE_LOOKBACK
        elif d in ctx.event_days:
            excluded[d] = Exclusion.EVENT_DAY
        elif d in ctx.holidays:
            excluded[d] = Exclusion.HOLIDAY
        elif history.coverage.get(d, 0.0) < rules.min_coverage:
            excluded[d] = Exclusion.LOW_COVERAGE
        else:
            days.append(d)
    intervals = event_intervals(ctx.start, ctx.end, ctx.tz, rules.interval_minutes)
    use_temp = bool(temperature_c)

    def temp_at(utc: datetime) -> list[float] | None:
        if not use_temp:
            return []
        assert temperature_c is not None
        t = temperature_c.get(utc)
        return None if t is None else _temperature_features(t)

    bins: list[int] = []
    ys: list[float] = []
    ts: list[list[float]] = []
    for d in days:
        day = history.by_day[d]
        for iv in _day_intervals(d, ctx.tz, rules.interval_minutes):
            y = _slot_values(day, iv.local_start, rules.interval_minutes)
            t = temp_at(iv.start)
            if y is None or t is None:
                continue
            bins.append(_time_of_week(iv.local_start, rules.interval_minutes))
            ys.append(y)
            ts.append(t)
    kw: tuple[float | None, ...] = tuple(None for _ in intervals)
    if ys:
        intercepts, beta = _fit_time_of_week(np.asarray(bins), np.asarray(ys), np.asarray(ts, dtype=float))
        out: list[float | None] = []
        for iv in intervals:
            t = temp_at(iv.start)
            level = intercepts.get(_time_of_week(iv.local_start, rules.interval_minutes))
            if t is None or level is None:
                out.append(None)
            else:
                out.append(max(0.0, level + float(np.dot(beta, t)) if t else level))
        kw = tuple(out)
    b = Baseline(Method.REGRESSION, intervals, kw, kw, Adjustment.NONE, 0.0, False, tuple(sorted(days)), excluded)
    return _flag(b, len(days) < rules.regression_min_days, rules)


def _day_intervals(day: date, tz: ZoneInfo, interval_minutes: int) -> tuple[Interval, ...]:
    lo = datetime.combine(day, time(0), tz)
    hi = datetime.combine(day + timedelta(days=1), time(0), tz)
    return event_intervals(lo, hi, tz, interval_minutes)


def forecast(forecast_kw: Mapping[datetime, float], ctx: EventContext, rules: Rules) -> Baseline:
    """The platform's load forecast (p50) over the event's intervals: a planning baseline."""
    intervals = event_intervals(ctx.start, ctx.end, ctx.tz, rules.interval_minutes)
    kw = tuple(_forecast_at(forecast_kw, iv) for iv in intervals)
    b = Baseline(Method.FORECAST, intervals, kw, kw, Adjustment.NONE, 0.0, False, (), {}, settlement_grade=False)
    if any(v is None for v in kw):
        return replace(b, flag="insufficient_history", fallback=None)
    return b


def _forecast_at(forecast_kw: Mapping[datetime, float], iv: Interval) -> float | None:
    vals = [kw for ts, kw in forecast_kw.items() if iv.start <= ts < iv.end]
    if vals:
        return sum(vals) / len(vals)
    # a coarser forecast (hourly) covering a 15-minute interval
    covering = [kw for ts, kw in forecast_kw.items() if ts <= iv.start and ts + timedelta(hours=1) >= iv.end]
    return covering[-1] if covering else None


def _flag(b: Baseline, insufficient: bool, rules: Rules) -> Baseline:
    if not insufficient:
        return b
    fallback = rules.fallback if rules.fallback is not b.method else Method.FORECAST
    return replace(b, flag="insufficient_history", fallback=fallback)


def compute(
    rules: Rules,
    readings: Mapping[datetime, float],
    ctx: EventContext,
    *,
    temperature_c: Mapping[datetime, float] | None = None,
    forecast_kw: Mapping[datetime, float] | None = None,
) -> Baseline:
    """The program's method; when it is flagged ``insufficient_history`` the named fallback is
    computed instead, and the result keeps the flag and names the method it replaced."""
    history = local_history(readings, ctx.tz)
    primary = _run(rules.method, rules, history, readings, ctx, temperature_c, forecast_kw)
    if primary.flag is None or primary.fallback is None:
        return primary
    fb = _run(primary.fallback, rules, history, readings, ctx, temperature_c, forecast_kw)
    if all(v is None for v in fb.kw):
        return primary
    return replace(fb, flag=primary.flag, fallback=primary.fallback, replaced=primary.method)


def _run(
    method: Method,
    rules: Rules,
    history: LocalHistory,
    readings: Mapping[datetime, float],
    ctx: EventContext,
    temperature_c: Mapping[datetime, float] | None,
    forecast_kw: Mapping[datetime, float] | None,
) -> Baseline:
    if method is Method.CAISO_10IN10:
        return caiso(history, readings, ctx, rules)
    if method is Method.PJM_CBL:
        return pjm_cbl(history, readings, ctx, rules)
    if method is Method.REGRESSION:
        return regression(history, ctx, rules, temperature_c)
    return forecast(forecast_kw or {}, ctx, rules)


_RULE_TYPES: dict[str, type] = {
    "interval_minutes": int,
    "lookback_days": int,
    "min_coverage": float,
    "adjustment": str,
    "adjustment_cap": float,
    "adjustment_start_h": float,
    "adjustment_end_h": float,
    "weekday_days": int,
    "weekend_days": int,
    "caiso_min_weekday_days": int,
    "caiso_min_weekend_days": int,
    "pjm_low_usage_ratio": float,
    "regression_min_days": int,
    "fallback": str,
}


def rules_for(method: str, overrides: Mapping[str, object] | None) -> Rules:
    """A program's rules: its method and the overrides it stores (``utilities.baseline_rules``).
    Raises ValueError naming the offending key; the look-back can never exceed the history read."""
    kwargs: dict[str, object] = {"method": Method(method)}
    for key, value in (overrides or {}).items():
        kind = _RULE_TYPES.get(key)
        if kind is None:
            raise ValueError(f"unknown baseline rule {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"baseline rule {key!r} must be a {kind.__name__}")
        if kind is int and not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"baseline rule {key!r} must be a whole number")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"baseline rule {key!r} must be a string")
        if kind in (int, float) and isinstance(value, str):
            raise ValueError(f"baseline rule {key!r} must be a number")
        if key == "adjustment":
            kwargs[key] = Adjustment(str(value))
        elif key == "fallback":
            kwargs[key] = Method(str(value))
        else:
            kwargs[key] = kind(value)
    rules = Rules(**kwargs)  # type: ignore[arg-type]
    if not 1 <= rules.lookback_days <= HISTORY_DAYS:
        raise ValueError(f"lookback_days must be within 1..{HISTORY_DAYS}")
    return rules
