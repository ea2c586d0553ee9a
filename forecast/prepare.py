"""Turn one facility's rollups and weather into model inputs on a 15 min grid, with quality flags (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from forecast.model.calendar import calendar_features
from forecast.weather.types import HourlyWeather
from schemas.forecasts import ForecastQuality

STEP = timedelta(minutes=15)
STEPS_PER_DAY = 96
NEUTRAL_TEMP_C = 15.0  # used when no temperature at all is known (flagged degraded_no_weather)


@dataclass(frozen=True)
class Rollup:
    ts: datetime  # window start, UTC
    avg_kw: float
    coverage: float


@dataclass
class Prepared:
    facility_id: str
    times: pd.DatetimeIndex  # history steps then horizon steps
    load: np.ndarray  # history only, gaps filled
    temp_c: np.ndarray  # history + horizon
    calendar: np.ndarray  # history + horizon
    history_steps: int
    observed_fraction: float  # share of history steps that had a rollup
    sensor_coverage: float  # mean coverage over the last day (missing windows count as 0)
    quality: ForecastQuality
    weather_available: bool
    weather_source: str | None = None


def quarter_floor(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


def fill_gaps(values: np.ndarray, steps_per_day: int = STEPS_PER_DAY) -> np.ndarray:
    """Missing steps take the value of the same time the previous day, then the next day, then the nearest."""
    s = pd.Series(values, dtype="float64")
    for shift in (steps_per_day, -steps_per_day, 7 * steps_per_day, -7 * steps_per_day):
        if not s.isna().any():
            break
        s = s.fillna(s.shift(shift))
    return s.ffill().bfill().to_numpy(dtype=np.float64)


def temperatures(times: pd.DatetimeIndex, sources: Sequence[HourlyWeather | None]) -> np.ndarray | None:
    """Hourly values of all sources (later sources win) interpolated onto ``times``; None when there are none."""
    by_time: dict[float, float] = {}
    for w in sources:
        if w is not None:
            by_time.update({t.timestamp(): v for t, v in zip(w.times, w.temp_c, strict=True)})
    if not by_time:
        return None
    xs = np.array(sorted(by_time))
    ys = np.array([by_time[x] for x in xs])
    return np.interp(times.as_unit("ns").asi8 / 1e9, xs, ys)  # index resolution varies (pandas 3: us)


def prepare(
    facility_id: str,
    timezone: str,
    run_at: datetime,
    history_steps: int,
    horizon: int,
    rollups: Sequence[Rollup],
    weather_past: HourlyWeather | None,
    weather_forecast: HourlyWeather | None,
    weather_available: bool,
    stale_after: timedelta,
    weather_source: str | None = None,
) -> Prepared | None:
    """None when the facility has no rollup at all in the history window (nothing to forecast from)."""
    start = run_at - history_steps * STEP
    times = pd.date_range(start, periods=history_steps + horizon, freq="15min")
    load = np.full(history_steps, np.nan)
    cov = np.zeros(history_steps)
    newest: datetime | None = None
    for r in rollups:
        i = int((r.ts - start) / STEP)
        if 0 <= i < history_steps and np.isfinite(r.avg_kw):
            load[i] = max(0.0, r.avg_kw)
            cov[i] = min(1.0, max(0.0, r.coverage))
            newest = r.ts if newest is None or r.ts > newest else newest
    if newest is None:
        return None
    observed = float(np.mean(~np.isnan(load)))
    temps = temperatures(times, [weather_past, weather_forecast])
    if temps is None:
        temps = np.full(len(times), NEUTRAL_TEMP_C)
        weather_available = False
    if newest + STEP < run_at - stale_after:
        quality = ForecastQuality.DEGRADED_STALE_DATA
    elif not weather_available:
        quality = ForecastQuality.DEGRADED_NO_WEATHER
    else:
        quality = ForecastQuality.FULL
    return Prepared(
        facility_id=facility_id,
        times=times,
        load=fill_gaps(load),
        temp_c=temps,
        calendar=calendar_features(times, timezone),
        history_steps=history_steps,
        observed_fraction=observed,
        sensor_coverage=float(np.mean(cov[-STEPS_PER_DAY:])),
        quality=quality,
        weather_available=weather_available,
        weather_source=weather_source,
    )
