"""PostgreSQL weather cache per grid cell (migration 0300): fresh reuse, stale fallback, persistence."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from forecast.weather.types import HourlyWeather

_STORE_HOURS = """
INSERT INTO weather_hourly (cell_id, ts, temp_c, humidity_pct, cloud_pct, provider, fetched_at)
SELECT $1, t.ts, t.temp, t.hum, t.cloud, $2, $3
FROM unnest($4::timestamptz[], $5::float8[], $6::float8[], $7::float8[]) AS t(ts, temp, hum, cloud)
ON CONFLICT (cell_id, ts) DO UPDATE SET
    temp_c = EXCLUDED.temp_c, humidity_pct = EXCLUDED.humidity_pct, cloud_pct = EXCLUDED.cloud_pct,
    provider = EXCLUDED.provider, fetched_at = EXCLUDED.fetched_at
WHERE weather_hourly.fetched_at <= EXCLUDED.fetched_at
"""
_STORE_FETCH = """
INSERT INTO weather_fetches (cell_id, provider, fetched_at, first_ts, last_ts) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (cell_id) DO UPDATE SET provider = EXCLUDED.provider, fetched_at = EXCLUDED.fetched_at,
    first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts
WHERE weather_fetches.fetched_at <= EXCLUDED.fetched_at
"""
_HOURS = """
SELECT ts, temp_c, humidity_pct, cloud_pct, fetched_at FROM weather_hourly
WHERE cell_id = $1 AND ts >= $2 AND ts < $3 AND fetched_at >= $4 ORDER BY ts
"""
_FETCH = "SELECT provider, fetched_at FROM weather_fetches WHERE cell_id = $1"


def _hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


class WeatherCache:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def store(self, cell: str, provider: str, fetched_at: datetime, w: HourlyWeather) -> None:
        hum = list(w.humidity_pct) if len(w.humidity_pct) == len(w.times) else [None] * len(w.times)
        cloud = list(w.cloud_pct) if len(w.cloud_pct) == len(w.times) else [None] * len(w.times)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_STORE_HOURS, cell, provider, fetched_at, list(w.times), list(w.temp_c), hum, cloud)
            await conn.execute(_STORE_FETCH, cell, provider, fetched_at, w.times[0], w.times[-1])

    async def hours(self, cell: str, start: datetime, end: datetime, not_before: datetime) -> HourlyWeather:
        rows = await self._pool.fetch(_HOURS, cell, _hour_floor(start), end, not_before)
        return HourlyWeather(
            times=tuple(r["ts"] for r in rows),
            temp_c=tuple(r["temp_c"] for r in rows),
            humidity_pct=tuple(r["humidity_pct"] for r in rows),
            cloud_pct=tuple(r["cloud_pct"] for r in rows),
        )

    async def last_fetch(self, cell: str) -> tuple[str, datetime] | None:
        row = await self._pool.fetchrow(_FETCH, cell)
        return (row["provider"], row["fetched_at"]) if row else None

    async def persistence(self, cell: str, start: datetime, end: datetime) -> HourlyWeather:
        """Yesterday's values for [start, end), shifted forward by one day."""
        day = timedelta(days=1)
        past = await self.hours(cell, start - day, end - day, datetime.min.replace(tzinfo=start.tzinfo))
        return HourlyWeather(
            times=tuple(t + day for t in past.times),
            temp_c=past.temp_c,
            humidity_pct=past.humidity_pct,
            cloud_pct=past.cloud_pct,
        )
