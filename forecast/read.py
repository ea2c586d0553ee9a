"""Read interface other teams use: the newest forecast of a facility over a time window.

Rows come from ``load_forecasts`` (one row per facility and target time; the newest run wins,
see :mod:`forecast.store`). Targets are one meter interval apart (15 min for most facilities) and
mark the *start* of each interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

_LATEST_SQL = """
SELECT facility_id, target_ts, run_at, p10_kw, p50_kw, p90_kw, model_version, quality,
       seasonal_naive, weather_available, sensor_coverage
FROM load_forecasts
WHERE facility_id = $1 AND target_ts >= $2 AND target_ts < $3
ORDER BY target_ts
"""

_LAST_RUN_SQL = """
SELECT facility_id, run_at, model_version, quality, seasonal_naive, weather_available, sensor_coverage, method
FROM forecast_runs WHERE facility_id = $1 ORDER BY run_at DESC LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    facility_id: str
    target_ts: datetime
    run_at: datetime
    p10_kw: float
    p50_kw: float
    p90_kw: float
    model_version: str
    quality: str
    seasonal_naive: bool
    weather_available: bool
    sensor_coverage: float


@dataclass(frozen=True, slots=True)
class ForecastRunInfo:
    facility_id: str
    run_at: datetime
    model_version: str
    quality: str
    seasonal_naive: bool
    weather_available: bool
    sensor_coverage: float
    method: str | None  # see forecast.engine.Method; NULL for runs of releases before it was recorded


def _require_aware(*values: datetime) -> None:
    for value in values:
        if value.tzinfo is None:
            raise ValueError("start and end must be timezone-aware datetimes")


async def latest_forecast(pool: Any, facility_id: str, start: datetime, end: datetime) -> list[ForecastPoint]:
    """Newest forecast points of ``facility_id`` with ``start <= target_ts < end``, ordered by time.

    ``pool`` is an asyncpg pool (or connection). Empty list when no forecast covers the window.
    """
    _require_aware(start, end)
    if end <= start:
        return []
    rows = await pool.fetch(_LATEST_SQL, facility_id, start, end)
    return [ForecastPoint(**dict(row)) for row in rows]


async def latest_run(pool: Any, facility_id: str) -> ForecastRunInfo | None:
    """The newest forecast run recorded for ``facility_id`` (quality, model version, ...), if any."""
    row = await pool.fetchrow(_LAST_RUN_SQL, facility_id)
    return ForecastRunInfo(**dict(row)) if row is not None else None
