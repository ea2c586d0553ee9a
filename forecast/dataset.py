"""One data path for every series at any meter interval: a regular UTC grid, load (NaN where missing),
temperature (optional), and the calendar in the series' own timezone and holidays (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.model.calendar import calendar_features, set_holiday_flag
from forecast.model.features import INTERVALS_MINUTES, ModelSpec, SeriesBank

NEUTRAL_TEMP_C = 15.0  # used when no temperature is known: a constant carries no information


@dataclass
class SeriesData:
    name: str
    timezone: str
    times: pd.DatetimeIndex  # regular grid, UTC, interval start
    load: np.ndarray  # NaN where missing
    temp_c: np.ndarray | None = None  # None: no temperature for this series
    holiday: np.ndarray | None = None  # the data set's own holiday flag; None: the `holidays` package by timezone

    @property
    def interval_minutes(self) -> int:
        return interval_minutes_of(self.times)


def interval_minutes_of(times: pd.DatetimeIndex) -> int:
    if len(times) < 2:
        raise ValueError("a series needs at least two time steps")
    step = (times[1] - times[0]).total_seconds() / 60
    if step not in INTERVALS_MINUTES or not bool(np.all(np.diff(times.as_unit("ns").asi8) == step * 60e9)):
        raise ValueError(f"not a regular grid of {INTERVALS_MINUTES} minutes")
    return int(step)


def fill_gaps(values: np.ndarray, steps_per_day: int) -> np.ndarray:
    """Missing steps take the value of the same time the previous day, then the next day, then a week
    either side, then the nearest observed value (lags in steps of the series' own interval)."""
    v = np.asarray(values, dtype=np.float64).copy()
    n = len(v)
    for shift in (steps_per_day, -steps_per_day, 7 * steps_per_day, -7 * steps_per_day):
        missing = np.isnan(v)
        if not missing.any():
            return v
        if abs(shift) >= n:
            continue
        shifted = np.full(n, np.nan)
        if shift > 0:
            shifted[shift:] = v[:-shift]  # the value ``shift`` steps earlier
        else:
            shifted[:shift] = v[-shift:]  # the value ``-shift`` steps later
        v[missing] = shifted[missing]
    missing = np.isnan(v)
    if missing.all():
        return v
    if missing.any():
        last_seen = np.maximum.accumulate(np.where(~missing, np.arange(n), -1))
        first = int(np.argmax(~missing))
        v = v[np.where(last_seen >= 0, last_seen, first)]
    return v


def series_calendar(s: SeriesData, day_of_year: bool, year_end: bool = False) -> np.ndarray:
    if s.holiday is None:
        return calendar_features(s.times, s.timezone, day_of_year=day_of_year, year_end=year_end)
    cal = calendar_features(s.times, s.timezone, holidays=set(), day_of_year=day_of_year, year_end=year_end)
    set_holiday_flag(cal, s.times.tz_convert(s.timezone).dayofweek.to_numpy(), np.asarray(s.holiday, dtype=bool))
    return cal


def build_bank(series: list[SeriesData], spec: ModelSpec) -> SeriesBank:
    parts = []
    for s in series:
        if s.interval_minutes != spec.interval_minutes:
            raise ValueError(f"{s.name}: {s.interval_minutes} min data for a {spec.interval_minutes} min model")
        temp = s.temp_c if s.temp_c is not None else np.full(len(s.times), NEUTRAL_TEMP_C)
        parts.append((fill_gaps(s.load, spec.steps_per_day), temp, series_calendar(s, spec.day_of_year, spec.year_end)))
    return SeriesBank.build(parts, spec.steps_per_day)


def extend(s: SeriesData, steps: int) -> SeriesData:
    """The series with ``steps`` more steps (calendar continued, load NaN, temperature and holiday repeated)
    so the last origins can run although their later leads have no actual."""
    if steps <= 0:
        return s
    step = s.times[1] - s.times[0]
    times = s.times.append(pd.date_range(s.times[-1] + step, periods=steps, freq=step))
    return SeriesData(
        s.name,
        s.timezone,
        times,
        np.concatenate([s.load, np.full(steps, np.nan)]),
        None if s.temp_c is None else np.concatenate([s.temp_c, np.repeat(s.temp_c[-1], steps)]),
        None if s.holiday is None else np.concatenate([s.holiday, np.zeros(steps, dtype=bool)]),
    )
