"""Calendar features in the facility's local time: time of day, day of week, holidays, and day of year
only when the training history spans a full year (otherwise it would extrapolate, see decision 0302)."""

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
    "Australia/Brisbane": ("AU", "QLD"),
    "Australia/Adelaide": ("AU", "SA"),
    "Australia/Perth": ("AU", "WA"),
    "America/Los_Angeles": ("US", "CA"),
    "America/New_York": ("US", "NY"),
    "America/Chicago": ("US", "IL"),
    "America/Denver": ("US", "CO"),
    "Europe/London": ("GB", "ENG"),
    "Europe/Berlin": ("DE", None),
    "Europe/Paris": ("FR", None),
    "Europe/Madrid": ("ES", None),
    "Europe/Amsterdam": ("NL", None),
}
SUNDAY_COLUMN = 4 + 6
N_BASE_CALENDAR = 11  # hour-of-day harmonics (4), day-of-week one-hot (7); a public holiday counts as a Sunday
YEAR_DAYS = 365
# The year-end break: most businesses close or run short-staffed between Christmas Eve and New Year's Day,
# days the public holiday calendars do not mark (vic_elec: 10-20 % below the same weekday three weeks before).
YEAR_END_BREAK = ((12, 24), (1, 1))  # (month, day) of its first and last day, inclusive


def n_calendar(day_of_year: bool, year_end: bool = False) -> int:
    return N_BASE_CALENDAR + (2 if day_of_year else 0) + (1 if year_end else 0)


def year_end_column(day_of_year: bool) -> int:
    return N_BASE_CALENDAR + (2 if day_of_year else 0)


def in_year_end_break(month: np.ndarray, day: np.ndarray) -> np.ndarray:
    (first_month, first_day), (last_month, last_day) = YEAR_END_BREAK
    return ((month == first_month) & (day >= first_day)) | ((month == last_month) & (day <= last_day))


def spans_a_year(times: pd.DatetimeIndex) -> bool:
    """Day-of-year features are only used when the training history covers every day of the year once."""
    return len(times) > 1 and (times[-1] - times[0]) >= pd.Timedelta(days=YEAR_DAYS)


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


def set_holiday_flag(out: np.ndarray, dayofweek: np.ndarray, is_holiday: np.ndarray) -> None:
    """Day-of-week one-hot in columns 4..10, with holidays moved to Sunday."""
    out[:, 4:11] = 0.0
    out[np.arange(len(out)), np.where(is_holiday, 6, dayofweek) + 4] = 1.0


def calendar_features(
    times_utc: pd.DatetimeIndex,
    timezone: str,
    holidays: set[date] | None = None,
    day_of_year: bool = False,
    year_end: bool = False,
) -> np.ndarray:
    """(T, n_calendar(day_of_year, year_end)) float32. Every column is bounded and periodic within a week (or
    a year, for the day-of-year pair and the year-end flag), so a week of training history covers the range of
    every future value. A public holiday is encoded as a Sunday rather than as a flag of its own: a short
    history rarely holds a holiday, and a flag never seen in training would be an extrapolation. ``year_end``:
    a flag of the year-end break, only with a year of history, where training has seen one (``spec_for``)."""
    local = times_utc.tz_convert(timezone)
    if holidays is None:
        holidays = holiday_dates(timezone, range(local.year.min(), local.year.max() + 1)) if len(local) else set()
    frac = (local.hour.to_numpy() + local.minute.to_numpy() / 60.0) / 24.0
    out = np.zeros((len(local), n_calendar(day_of_year, year_end)), dtype=np.float32)
    out[:, 0] = np.sin(2 * np.pi * frac)
    out[:, 1] = np.cos(2 * np.pi * frac)
    out[:, 2] = np.sin(4 * np.pi * frac)
    out[:, 3] = np.cos(4 * np.pi * frac)
    days = local.tz_localize(None).to_numpy().astype("datetime64[D]")
    is_holiday = np.isin(days, np.array(sorted(holidays), dtype="datetime64[D]"))
    set_holiday_flag(out, local.dayofweek.to_numpy(), is_holiday)
    if day_of_year:
        doy = local.dayofyear.to_numpy() / 365.25
        out[:, N_BASE_CALENDAR] = np.sin(2 * np.pi * doy)
        out[:, N_BASE_CALENDAR + 1] = np.cos(2 * np.pi * doy)
    if year_end:
        out[:, year_end_column(day_of_year)] = in_year_end_break(local.month.to_numpy(), local.day.to_numpy())
    return out
