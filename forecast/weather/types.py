"""Weather value types (pure)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class WeatherSource(StrEnum):
    PRIMARY = "primary"  # WeatherAPI.com-shaped provider
    SECONDARY = "secondary"  # Open-Meteo-shaped provider
    CACHE = "cache"  # a forecast fetched earlier for the same grid cell
    PERSISTENCE = "persistence"  # yesterday's values, shifted by a day
    NONE = "none"


@dataclass(frozen=True)
class HourlyWeather:
    """Hourly values, times in UTC at the start of each hour, sorted, without duplicates."""

    times: tuple[datetime, ...]
    temp_c: tuple[float, ...]
    humidity_pct: tuple[float | None, ...] = field(default=())
    cloud_pct: tuple[float | None, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.times) != len(self.temp_c):
            raise ValueError("times and temp_c differ in length")
        if any(t.tzinfo is None for t in self.times):
            raise ValueError("weather times must be timezone-aware")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError("weather times must be strictly increasing")
        if any(not math.isfinite(v) or not -90 <= v <= 70 for v in self.temp_c):
            raise ValueError("implausible temperature")

    def covers(self, start: datetime, end: datetime) -> bool:
        """True when there is a value for every hour overlapping [start, end)."""
        have = set(self.times)
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            if hour not in have:
                return False
            hour += timedelta(hours=1)
        return True

    def at(self, when: datetime) -> float:
        """Temperature at ``when``, linearly interpolated between hours, clamped at the ends."""
        if not self.times:
            raise ValueError("no weather values")
        x = when.timestamp()
        xs = [t.timestamp() for t in self.times]
        if x <= xs[0]:
            return self.temp_c[0]
        if x >= xs[-1]:
            return self.temp_c[-1]
        i = bisect.bisect_right(xs, x) - 1
        w = (x - xs[i]) / (xs[i + 1] - xs[i])
        return self.temp_c[i] + w * (self.temp_c[i + 1] - self.temp_c[i])


@dataclass(frozen=True)
class WeatherResult:
    source: WeatherSource
    weather: HourlyWeather | None
    cell_id: str
    fetched_at: datetime | None = None
    detail: str = ""

    @property
    def available(self) -> bool:
        """A real forecast (fresh from a provider or a cached one); persistence does not count."""
        return self.weather is not None and self.source in (
            WeatherSource.PRIMARY,
            WeatherSource.SECONDARY,
            WeatherSource.CACHE,
        )


def cell_id(lat: float, lon: float, cell_deg: float) -> str:
    """Grid cell of a location: facilities within one cell share a weather call."""
    return f"{math.floor(lat / cell_deg) * cell_deg:.3f}:{math.floor(lon / cell_deg) * cell_deg:.3f}:{cell_deg:g}"


def cell_center(cell: str) -> tuple[float, float]:
    lat_s, lon_s, deg_s = cell.split(":")
    deg = float(deg_s)
    return round(float(lat_s) + deg / 2, 4), round(float(lon_s) + deg / 2, 4)
