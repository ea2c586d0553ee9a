"""Deterministic, plausible weather per location and hour (pure functions, no I/O).

Temperature = seasonal mean by latitude and hemisphere + a diurnal cycle in local solar time +
a smooth day-to-day anomaly derived from a hash of the grid cell and the date, so the same
location and hour always gives the same value, and nearby points get nearly the same weather.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta


def _daily_anomaly(lat: float, lon: float, day: date) -> float:
    key = f"{round(lat * 4) / 4:.2f}:{round(lon * 4) / 4:.2f}:{day.isoformat()}".encode()
    h = int.from_bytes(hashlib.sha256(key).digest()[:4], "big") / 2**32
    return (h - 0.5) * 6.0  # +-3 C


def _smooth_anomaly(lat: float, lon: float, ts: datetime) -> float:
    """Anomaly interpolated between consecutive days, so there are no jumps at midnight."""
    day = ts.date()
    frac = (ts.hour + ts.minute / 60) / 24
    a = _daily_anomaly(lat, lon, day)
    b = _daily_anomaly(lat, lon, day + timedelta(days=1))
    return a + (b - a) * frac


def temperature_c(lat: float, lon: float, ts: datetime) -> float:
    ts = ts.astimezone(UTC)
    doy = ts.timetuple().tm_yday
    # warmest around day 200 in the north, day 20 in the south
    season = math.cos(2 * math.pi * (doy - (200 if lat >= 0 else 20)) / 365.25)
    mean = 27.0 - 0.35 * abs(lat)
    amplitude = 4.0 + 0.12 * abs(lat)
    solar_hour = (ts.hour + ts.minute / 60 + lon / 15.0) % 24
    diurnal = 4.0 * math.cos(2 * math.pi * (solar_hour - 15) / 24)  # warmest mid-afternoon
    return round(mean + amplitude * season + diurnal + _smooth_anomaly(lat, lon, ts), 1)


def humidity_pct(lat: float, lon: float, ts: datetime) -> int:
    solar_hour = (ts.astimezone(UTC).hour + lon / 15.0) % 24
    return int(
        max(
            15, min(100, 65 - 20 * math.cos(2 * math.pi * (solar_hour - 15) / 24) - _daily_anomaly(lat, lon, ts.date()))
        )
    )


def cloud_pct(lat: float, lon: float, ts: datetime) -> int:
    return int(max(0, min(100, 45 + 12 * _smooth_anomaly(lat, lon + 1, ts))))


def hours(start: datetime, count: int) -> list[datetime]:
    start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [start + timedelta(hours=i) for i in range(count)]
