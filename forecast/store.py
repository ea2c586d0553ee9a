"""PostgreSQL writes of forecast runs: idempotent, and an older run never overwrites a newer one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_RUN_SQL = """
INSERT INTO forecast_runs (facility_id, run_at, model_version, quality, seasonal_naive,
                           weather_available, sensor_coverage, weather_source, method)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (facility_id, run_at) DO UPDATE SET
    model_version = EXCLUDED.model_version, quality = EXCLUDED.quality,
    seasonal_naive = EXCLUDED.seasonal_naive, weather_available = EXCLUDED.weather_available,
    sensor_coverage = EXCLUDED.sensor_coverage, weather_source = EXCLUDED.weather_source,
    method = EXCLUDED.method
"""

# The WHERE clause is the guard: a retried or late run with an older run_at leaves newer rows alone.
# One statement for the points of many facilities (one row per target; the per-facility values repeated).
_POINTS_SQL = """
INSERT INTO load_forecasts (facility_id, target_ts, run_at, p10_kw, p50_kw, p90_kw, model_version,
                            quality, seasonal_naive, weather_available, sensor_coverage, updated_at)
SELECT t.fid, t.target_ts, t.run_at, t.p10, t.p50, t.p90, t.mv, t.quality, t.sn, t.wa, t.cov, now()
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::float8[], $5::float8[], $6::float8[],
            $7::text[], $8::text[], $9::bool[], $10::bool[], $11::float8[])
     AS t(fid, target_ts, run_at, p10, p50, p90, mv, quality, sn, wa, cov)
ON CONFLICT (facility_id, target_ts) DO UPDATE SET
    run_at = EXCLUDED.run_at, p10_kw = EXCLUDED.p10_kw, p50_kw = EXCLUDED.p50_kw, p90_kw = EXCLUDED.p90_kw,
    model_version = EXCLUDED.model_version, quality = EXCLUDED.quality,
    seasonal_naive = EXCLUDED.seasonal_naive, weather_available = EXCLUDED.weather_available,
    sensor_coverage = EXCLUDED.sensor_coverage, updated_at = now()
WHERE load_forecasts.run_at <= EXCLUDED.run_at
"""


@dataclass(frozen=True, slots=True)
class FacilityForecast:
    """One facility's forecast from one run: aligned lists of target times and quantiles (kW)."""

    facility_id: str
    run_at: datetime
    model_version: str
    quality: str
    seasonal_naive: bool
    weather_available: bool
    sensor_coverage: float
    targets: Sequence[datetime]
    p10: Sequence[float]
    p50: Sequence[float]
    p90: Sequence[float]
    weather_source: str | None = None  # primary | secondary | cache | persistence | none
    method: str | None = None  # model | seasonal_naive_backtest | ..._no_model | ..._sparse_data | insufficient_history
    interval_minutes: int = 15  # spacing of the targets (the facility's meter interval)


async def save_forecast(conn: Any, fc: FacilityForecast) -> int:
    """Record the run and upsert its points in one transaction; returns the number of points sent.

    ``conn`` is an asyncpg pool or connection. Safe to retry: same run_at rewrites the same rows.
    """
    return await save_forecasts(conn, [fc])


async def save_forecasts(conn: Any, forecasts: Sequence[FacilityForecast]) -> int:
    """Record the runs and upsert the points of several facilities in one transaction (two statements,
    whatever their number); returns the number of points sent. Every forecast is validated before anything
    is written. Callers writing concurrently give each call different facilities."""
    runs: list[tuple[Any, ...]] = []
    cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [], [])
    for fc in forecasts:
        n = len(fc.targets)
        if not (n == len(fc.p10) == len(fc.p50) == len(fc.p90)):
            raise ValueError("targets and quantile lists must have the same length")
        p10 = [float(v) for v in fc.p10]
        p50 = [float(v) for v in fc.p50]
        p90 = [float(v) for v in fc.p90]
        if any(not (a <= b <= c) for a, b, c in zip(p10, p50, p90, strict=True)):
            raise ValueError("quantiles must satisfy p10 <= p50 <= p90")
        coverage = min(1.0, max(0.0, float(fc.sensor_coverage)))
        meta = (fc.model_version, fc.quality, fc.seasonal_naive, fc.weather_available, coverage)
        runs.append((fc.facility_id, fc.run_at, *meta, fc.weather_source, fc.method))
        per_point: tuple[list[Any], ...] = ([fc.facility_id] * n, list(fc.targets), [fc.run_at] * n, p10, p50, p90)
        for col, values in zip(cols, per_point, strict=False):
            col.extend(values)
        for col, value in zip(cols[6:], meta, strict=True):
            col.extend([value] * n)
    if not runs:
        return 0

    async def _write(c: Any) -> None:
        async with c.transaction():
            await c.executemany(_RUN_SQL, runs)
            await c.execute(_POINTS_SQL, *cols)

    if hasattr(conn, "acquire"):
        async with conn.acquire() as acquired:
            await _write(acquired)
    else:
        await _write(conn)
    return len(cols[0])
