"""Turn one facility's rollups and weather into model inputs on the grid of the facility's own meter
interval, in its own timezone, with quality flags (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from forecast.dataset import NEUTRAL_TEMP_C, fill_gaps
from forecast.history import Rollup, RollupArrays
from forecast.model.calendar import calendar_features
from forecast.weather.types import HourlyWeather
from schemas.forecasts import ForecastQuality

ROLLUP_MINUTES = 15  # the aggregation's facility rollup window the service reads
STEP = timedelta(minutes=ROLLUP_MINUTES)
MIN_HISTORY_DAYS = 8.0  # a week for the seasonal-naive reference plus a day to backtest the model on
__all__ = ["NEUTRAL_TEMP_C", "Prepared", "Rollup", "RollupArrays", "infer_interval_minutes", "prepare", "quarter_floor"]


@dataclass
class Prepared:
    facility_id: str
    times: pd.DatetimeIndex  # history steps then horizon steps, at the facility's interval
    load: np.ndarray  # history only, gaps filled
    temp_c: np.ndarray  # history + horizon
    calendar: np.ndarray  # history + horizon (without day of year; see day_of_year_calendar)
    history_steps: int
    observed_fraction: float  # share of history steps that had a rollup
    observed_days: float  # from the first observed step to the end of the history
    first_observed: int  # index of the first history step with a rollup
    sensor_coverage: float  # mean coverage over the last day (missing windows count as 0)
    quality: ForecastQuality
    weather_available: bool
    weather_source: str | None = None
    timezone: str = "UTC"
    interval_minutes: int = ROLLUP_MINUTES

    @property
    def steps_per_day(self) -> int:
        return 1440 // self.interval_minutes

    @property
    def horizon_steps(self) -> int:
        return len(self.times) - self.history_steps


def quarter_floor(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


def infer_interval_minutes(timestamps: Sequence[datetime] | np.ndarray) -> int:
    """The facility's data interval seen through its 15 min rollups: a meter that reads every 30 or 60 min
    fills only every second or fourth window (5 min meters fill every 15 min window: 15). ``timestamps``:
    datetimes or epoch seconds."""
    if isinstance(timestamps, np.ndarray):
        secs = np.unique(timestamps)
    else:
        secs = np.unique(np.array([t.timestamp() for t in timestamps]))
    if len(secs) < 3:
        return ROLLUP_MINUTES
    typical = float(np.median(np.diff(secs))) / 60
    return 15 if typical < 22.5 else 30 if typical < 45 else 60


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


@lru_cache(maxsize=64)
def _grid(start_s: float, periods: int, interval_minutes: int) -> pd.DatetimeIndex:
    return pd.date_range(datetime.fromtimestamp(start_s, UTC), periods=periods, freq=f"{interval_minutes}min")


# A run prepares many facilities on the same grid, in a few timezones and weather cells: the calendar and
# the interpolated temperatures are computed once per (grid, timezone) and (grid, cell's weather).
@lru_cache(maxsize=256)
def _calendar(timezone: str, start_s: float, periods: int, interval_minutes: int) -> np.ndarray:
    cal = calendar_features(_grid(start_s, periods, interval_minutes), timezone)
    cal.flags.writeable = False
    return cal


@lru_cache(maxsize=512)
def _temperatures(
    start_s: float, periods: int, interval_minutes: int, past: HourlyWeather | None, forecast: HourlyWeather | None
) -> np.ndarray | None:
    temps = temperatures(_grid(start_s, periods, interval_minutes), [past, forecast])
    if temps is not None:
        temps.flags.writeable = False
    return temps


def prepare(
    facility_id: str,
    timezone: str,
    run_at: datetime,
    history: timedelta,
    horizon: timedelta,
    rollups: Sequence[Rollup] | RollupArrays,
    weather_past: HourlyWeather | None,
    weather_forecast: HourlyWeather | None,
    weather_available: bool,
    stale_after: timedelta,
    weather_source: str | None = None,
    interval_minutes: int | None = None,
) -> Prepared | None:
    """None when the facility has no rollup at all in the history window (nothing to forecast from).
    ``interval_minutes``: the grid; by default the facility's own (:func:`infer_interval_minutes`); the
    rollups inside one grid step are averaged."""
    arrays = rollups if isinstance(rollups, RollupArrays) else RollupArrays.of(rollups)
    ts, kw, cv = arrays.ts, arrays.kw, arrays.coverage
    finite = np.isfinite(kw)
    interval = interval_minutes or infer_interval_minutes(ts[finite])
    step = timedelta(minutes=interval)
    history_steps, horizon_steps = int(history / step), int(horizon / step)
    start = run_at - history_steps * step
    periods = history_steps + horizon_steps
    times = _grid(start.timestamp(), periods, interval)
    idx = np.floor((ts - start.timestamp()) / step.total_seconds()).astype(np.int64)
    ok = finite & (idx >= 0) & (idx < history_steps)
    total = np.zeros(history_steps)
    count = np.zeros(history_steps)
    cov = np.zeros(history_steps)
    np.add.at(total, idx[ok], np.maximum(kw[ok], 0.0))
    np.add.at(count, idx[ok], 1.0)
    np.maximum.at(cov, idx[ok], np.clip(cv[ok], 0.0, 1.0))
    if not ok.any():
        return None
    newest = datetime.fromtimestamp(float(ts[ok].max()), UTC)
    first = datetime.fromtimestamp(float(ts[ok].min()), UTC)
    load = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    observed = float(np.mean(count > 0))
    temps = _temperatures(start.timestamp(), periods, interval, weather_past, weather_forecast)
    if temps is None:
        temps = np.full(len(times), NEUTRAL_TEMP_C)
        weather_available = False
    observed_days = (run_at - first) / timedelta(days=1)
    if observed_days < MIN_HISTORY_DAYS:
        quality = ForecastQuality.INSUFFICIENT_HISTORY
    elif newest + STEP < run_at - stale_after:
        quality = ForecastQuality.DEGRADED_STALE_DATA
    elif not weather_available:
        quality = ForecastQuality.DEGRADED_NO_WEATHER
    else:
        quality = ForecastQuality.FULL
    per_day = 1440 // interval
    return Prepared(
        facility_id=facility_id,
        times=times,
        load=fill_gaps(load, per_day),
        temp_c=temps,
        calendar=_calendar(timezone, start.timestamp(), periods, interval),
        history_steps=history_steps,
        observed_fraction=observed,
        observed_days=observed_days,
        first_observed=int(np.argmax(count > 0)),
        sensor_coverage=float(np.mean(cov[-per_day:])),
        quality=quality,
        weather_available=weather_available,
        weather_source=weather_source,
        timezone=timezone,
        interval_minutes=interval,
    )
