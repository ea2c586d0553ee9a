"""Customer baselines: what a facility would have used during the event without it. Pure.

Rules (see docs/decisions/0401-dr-baselines.md for sources and simplifications):

* ``forecast``: the forecast load (p50) over the event window.
* ``caiso_10in10``: the mean load over the event window on the 10 most recent eligible days
  (weekdays, not event days, within a 45-day look-back), times a day-of adjustment ratio
  ``actual / baseline`` over the adjustment window before the event, capped at +/-20 %.
* ``pjm_high4of5``: of the 5 most recent eligible weekdays, the 4 with the highest mean load
  over the event window, averaged; plus a symmetric additive adjustment (actual - baseline over
  the adjustment window before the event).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

LOOKBACK_DAYS = 45
CAISO_DAYS = 10
CAISO_ADJUSTMENT_CAP = 0.20
PJM_WINDOW_DAYS = 5
PJM_HIGHEST = 4


@dataclass(frozen=True)
class DayLoad:
    """One past day's mean kW in the event's window and in the adjustment window before it."""

    day: date
    event_window_kw: float
    adjustment_window_kw: float | None = None
    event_day: bool = False  # the facility was in a DR event that day: not eligible


@dataclass(frozen=True)
class Baseline:
    method: str
    kw: float
    unadjusted_kw: float
    days_used: tuple[date, ...]
    adjustment: float  # ratio (caiso) or kW offset (pjm); 1.0 / 0.0 when none


class InsufficientHistoryError(ValueError):
    pass


def eligible_days(history: Sequence[DayLoad], event_day: date) -> list[DayLoad]:
    """Weekdays before the event day, not event days, within the look-back; newest first."""
    days = [
        d
        for d in history
        if d.day < event_day and (event_day - d.day).days <= LOOKBACK_DAYS and d.day.weekday() < 5 and not d.event_day
    ]
    return sorted(days, key=lambda d: d.day, reverse=True)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def caiso_10in10(history: Sequence[DayLoad], event_day: date, day_of_adjustment_kw: float | None) -> Baseline:
    days = eligible_days(history, event_day)[:CAISO_DAYS]
    if not days:
        raise InsufficientHistoryError("no eligible day in the look-back window")
    unadjusted = _mean([d.event_window_kw for d in days])
    ratio = 1.0
    adj_days = [d.adjustment_window_kw for d in days if d.adjustment_window_kw is not None]
    if day_of_adjustment_kw is not None and adj_days:
        base_adj = _mean(adj_days)
        if base_adj > 0:
            ratio = day_of_adjustment_kw / base_adj
            ratio = max(1 - CAISO_ADJUSTMENT_CAP, min(1 + CAISO_ADJUSTMENT_CAP, ratio))
    return Baseline("caiso_10in10", unadjusted * ratio, unadjusted, tuple(d.day for d in days), ratio)


def pjm_high4of5(history: Sequence[DayLoad], event_day: date, day_of_adjustment_kw: float | None) -> Baseline:
    window = eligible_days(history, event_day)[:PJM_WINDOW_DAYS]
    if not window:
        raise InsufficientHistoryError("no eligible day in the look-back window")
    chosen = sorted(window, key=lambda d: d.event_window_kw, reverse=True)[:PJM_HIGHEST]
    unadjusted = _mean([d.event_window_kw for d in chosen])
    offset = 0.0
    adj_days = [d.adjustment_window_kw for d in chosen if d.adjustment_window_kw is not None]
    if day_of_adjustment_kw is not None and adj_days:
        offset = day_of_adjustment_kw - _mean(adj_days)
    return Baseline(
        "pjm_high4of5", max(0.0, unadjusted + offset), unadjusted, tuple(sorted(d.day for d in chosen)), offset
    )


def forecast_baseline(forecast_kw: Sequence[float]) -> Baseline:
    if not forecast_kw:
        raise InsufficientHistoryError("no forecast for the event window")
    mean = _mean(forecast_kw)
    return Baseline("forecast", mean, mean, (), 1.0)


def achieved_reduction_kw(baseline_kw: float, actual_kw: float) -> float:
    return baseline_kw - actual_kw


def underperforming(achieved_kw: float, target_kw: float, ratio: float) -> bool:
    return target_kw > 0 and achieved_kw < ratio * target_kw
