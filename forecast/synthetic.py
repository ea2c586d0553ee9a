"""Synthetic facility load and temperature (pure, seeded): for quick training, tests and benchmarks.

Commercial-building shape: base load, occupancy by local hour and weekday, holidays like Sundays,
cooling above 20 C and heating below 12 C, and autocorrelated noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.model.calendar import holiday_dates


def synthetic_temperature(times: pd.DatetimeIndex, latitude: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = times.as_unit("ns").asi8 / 3.6e12  # index resolution varies (pandas 3 defaults to us)
    doy = times.dayofyear.to_numpy()
    season = np.cos(2 * np.pi * (doy - (200 if latitude >= 0 else 20)) / 365.25)
    diurnal = 4 * np.cos(2 * np.pi * ((hours % 24) - 15) / 24)
    daily_noise = np.repeat(rng.normal(0, 2.5, len(times) // 24 + 2), 24)[: len(times)]
    smooth = pd.Series(daily_noise).rolling(24, min_periods=1, center=True).mean().to_numpy()
    return 27 - 0.35 * abs(latitude) + (4 + 0.12 * abs(latitude)) * season + diurnal + smooth


def synthetic_load(times: pd.DatetimeIndex, timezone: str, temp_c: np.ndarray, peak_kw: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    local = times.tz_convert(timezone)
    hour = local.hour.to_numpy() + local.minute.to_numpy() / 60
    dow = local.dayofweek.to_numpy()
    hol = holiday_dates(timezone, range(local.year.min(), local.year.max() + 1))
    off = (dow >= 5) | np.fromiter((d in hol for d in local.date), dtype=bool, count=len(local))
    occupancy = np.clip((hour - 6.5) / 1.5, 0, 1) * np.clip((19.5 - hour) / 1.5, 0, 1)
    occupancy = np.where(off, 0.15 * occupancy, occupancy)
    hvac = 0.025 * np.clip(temp_c - 20, 0, None) + 0.015 * np.clip(12 - temp_c, 0, None)
    noise = pd.Series(rng.normal(0, 0.02, len(times))).ewm(alpha=0.3).mean().to_numpy()
    return peak_kw * np.clip(0.3 + 0.5 * occupancy + hvac * (0.4 + 0.6 * occupancy) + noise, 0.05, None)
