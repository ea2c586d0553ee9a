"""Settlement of one facility's DR event, interval by interval. Pure: no I/O.

Per interval: baseline kW, metered kW (mean of the 15-minute readings present), reduction kW,
target kW, performance % (reduction / target) and coverage % (readings present / expected).
An interval the event covers only in part (an event that does not start or end on the quarter
hour, such as a two-minute demo) is clipped to the event and measured on the 1-minute readings
inside it: the quarter's mean would mix minutes outside the event with the shed (decision 0820).
Runs: ``preliminary`` at the event's end, ``settlement`` once the aggregation's lateness bound
has passed, ``true_up`` whenever a later run's values differ (decision 0431).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dr_coordinator.domain.interval_baselines import READING, Baseline
from dr_coordinator.domain.report import IntervalReading


class RunKind(StrEnum):
    PRELIMINARY = "preliminary"
    SETTLEMENT = "settlement"
    TRUE_UP = "true_up"


@dataclass(frozen=True)
class SettlementInterval:
    start: datetime  # UTC
    end: datetime
    local_start: datetime
    baseline_kw: float | None
    metered_kw: float | None
    reduction_kw: float | None
    target_kw: float | None
    performance_pct: float | None
    coverage_pct: float

    @property
    def hours(self) -> float:
        return (self.end - self.start) / timedelta(hours=1)


@dataclass(frozen=True)
class FacilitySettlement:
    intervals: tuple[SettlementInterval, ...]
    baseline_kwh: float | None
    metered_kwh: float | None
    reduction_kwh: float | None
    mean_reduction_kw: float | None
    performance_pct: float | None
    coverage_pct: float


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return 100.0 * part / whole


MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class MinuteReadings:
    """1-minute mean kW and each rollup's coverage, keyed by UTC minute start (``1m`` rollups)."""

    kw: Mapping[datetime, float]
    coverage: Mapping[datetime, float]


def _measure(
    lo: datetime,
    hi: datetime,
    step: timedelta,
    readings: Mapping[datetime, float],
    coverage: Mapping[datetime, float] | None,
) -> tuple[float | None, float]:
    """Mean of the readings of the steps starting in [floor(lo), hi), and coverage % of those steps."""
    t = lo - timedelta(seconds=lo.timestamp() % step.total_seconds())
    vals: list[float] = []
    covered = 0.0
    expected = 0
    while t < hi:
        expected += 1
        v = readings.get(t)
        if v is not None:
            vals.append(v)
            covered += 1.0 if coverage is None else coverage.get(t, 1.0)
        t += step
    return (sum(vals) / len(vals) if vals else None), (100.0 * covered / expected if expected else 0.0)


def settle(
    baseline: Baseline,
    readings: Mapping[datetime, float],
    target_kw: float | None,
    coverage: Mapping[datetime, float] | None = None,
    event: tuple[datetime, datetime] | None = None,
    minutes: MinuteReadings | None = None,
) -> FacilitySettlement:
    """``coverage`` is each reading's own share of expected samples (the rollup's), 1 when absent.
    ``event`` (start, end): intervals it covers only in part are clipped to it and measured on
    ``minutes`` (no minute readings: no metered load, coverage 0)."""
    rows = []
    for iv, base in zip(baseline.intervals, baseline.kw, strict=True):
        lo, hi = iv.start, iv.end
        if event is not None:
            lo, hi = max(lo, event[0]), min(hi, event[1])
        if lo >= hi:
            continue
        if (lo, hi) == (iv.start, iv.end):
            metered, coverage_pct = _measure(lo, hi, READING, readings, coverage)
        elif minutes is None:
            metered, coverage_pct = None, 0.0
        else:
            metered, coverage_pct = _measure(lo, hi, MINUTE, minutes.kw, minutes.coverage)
        reduction = None if base is None or metered is None else base - metered
        rows.append(
            SettlementInterval(
                lo,
                hi,
                iv.local_start + (lo - iv.start),
                base,
                metered,
                reduction,
                target_kw,
                _pct(reduction, target_kw),
                coverage_pct,
            )
        )
    hours = sum(r.hours for r in rows)

    def energy(values: list[float | None]) -> float | None:
        if not rows or any(v is None for v in values):
            return None
        return sum(v * r.hours for v, r in zip(values, rows, strict=True) if v is not None)

    base_kwh = energy([r.baseline_kw for r in rows])
    metered_kwh = energy([r.metered_kw for r in rows])
    red_kwh = None if base_kwh is None or metered_kwh is None else base_kwh - metered_kwh
    mean_red = None if red_kwh is None or hours <= 0 else red_kwh / hours
    overall_coverage = sum(r.coverage_pct * r.hours for r in rows) / hours if hours > 0 else 0.0
    return FacilitySettlement(
        tuple(rows), base_kwh, metered_kwh, red_kwh, mean_red, _pct(mean_red, target_kw), overall_coverage
    )


def changed(previous: FacilitySettlement | None, current: FacilitySettlement, tolerance_kw: float = 1e-6) -> bool:
    """Whether a re-run differs from the stored version (a true-up is written only then)."""
    if previous is None or len(previous.intervals) != len(current.intervals):
        return True
    for a, b in zip(previous.intervals, current.intervals, strict=True):
        for x, y in ((a.metered_kw, b.metered_kw), (a.baseline_kw, b.baseline_kw)):
            if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > tolerance_kw):
                return True
        if abs(a.coverage_pct - b.coverage_pct) > 1e-9:
            return True
    return False


def next_run_kind(now: datetime, end: datetime, lateness: timedelta, done: set[RunKind]) -> RunKind | None:
    """Which run is due: preliminary once the event ended, the settlement once end + lateness has
    passed, true-ups after that (the caller stores one only when the values changed)."""
    if now < end:
        return None
    if now < end + lateness:
        return None if RunKind.PRELIMINARY in done else RunKind.PRELIMINARY
    return RunKind.TRUE_UP if RunKind.SETTLEMENT in done else RunKind.SETTLEMENT


def report_readings(s: FacilitySettlement) -> list[IntervalReading]:
    """The settlement's intervals as the OpenADR report's values: USAGE (kWh), DEMAND (kW), BASELINE (kW);
    an interval without metered load reports its baseline only."""
    return [
        IntervalReading(
            r.start,
            r.end,
            usage_kwh=None if r.metered_kw is None else r.metered_kw * r.hours,
            demand_kw=r.metered_kw,
            baseline_kw=r.baseline_kw,
        )
        for r in s.intervals
    ]
