"""Calendar features in the facility's local time: time of day, day of week, day of year, holidays."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

# timezone -> (country, subdivision) for public holidays; unknown timezones get no holidays.
HOLIDAY_REGION = {
    "Australia/Melbourne": ("AU", "VIC"),
    "Australia/Sydney": ("AU", "NSW"),
    "America/Los_Angeles": ("US", "CA"),
    "America/New_York": ("US", "NY"),
    "America/Chicago": ("US", "IL"),
    "Europe/London": ("GB", "ENG"),
    "Europe/Berlin": ("DE", None),
    "Europe/Paris": ("FR", None),
}
N_CALENDAR = 14


def holiday_dates(timezone: str, years: Iterable[int]) -> set[date]:
    return set(_holiday_dates(timezone, tuple(sorted(set(years)))))


@lru_cache(maxsize=256)
def _holiday_dates(timezone: str, years: tuple[int, ...]) -> frozenset[date]:
    region = HOLIDAY_REGION.get(timezone)
    if region is None:
        return frozenset()
    import holidays

    country, subdiv = region
    return frozenset(holidays.country_holidays(country, subdiv=subdiv, years=list(years)).keys())


def calendar_features(times_utc: pd.DatetimeIndex, timezone: str, holidays: set[date] | None = None) -> np.ndarray:
    """(T, 14) float32: hour-of-day harmonics (4), day-of-week one-hot (7), holiday, day-of-year (2)."""
    local = times_utc.tz_convert(timezone)
    if holidays is None:
        holidays = holiday_dates(timezone, range(local.year.min(), local.year.max() + 1)) if len(local) else set()
    frac = (local.hour.to_numpy() + local.minute.to_numpy() / 60.0) / 24.0
    out = np.zeros((len(local), N_CALENDAR), dtype=np.float32)
    out[:, 0] = np.sin(2 * np.pi * frac)
    out[:, 1] = np.cos(2 * np.pi * frac)
    out[:, 2] = np.sin(4 * np.pi * frac)
    out[:, 3] = np.cos(4 * np.pi * frac)
    out[np.arange(len(local)), 4 + local.dayofweek.to_numpy()] = 1.0
    local_dates = local.date
    out[:, 11] = np.fromiter((d in holidays for d in local_dates), dtype=np.float32, count=len(local))
    doy = local.dayofyear.to_numpy() / 365.25
    out[:, 12] = np.sin(2 * np.pi * doy)
    out[:, 13] = np.cos(2 * np.pi * doy)
    return out
