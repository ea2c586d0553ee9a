"""PostgreSQL writes of forecast runs: idempotent, and an older run never overwrites a newer one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import numpy as np

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
# One statement for the points of many facilities. The per-facility values are sent once per facility and the
# target times as (first target, step, count): PostgreSQL expands them into one row per target, reading the
# quantiles from three flat arrays at the facility's offset (sending them repeated per point cost this process
# ~4x the CPU and PostgreSQL more too: decision 1040).
_POINTS_SQL = """
INSERT INTO load_forecasts (facility_id, target_ts, run_at, p10_kw, p50_kw, p90_kw, model_version,
                            quality, seasonal_naive, weather_available, sensor_coverage, updated_at)
SELECT f.fid, f.first_ts + f.step * g.k, f.run_at, ($11::float8[])[f.off + g.k], ($12::float8[])[f.off + g.k],
       ($13::float8[])[f.off + g.k], f.mv, f.quality, f.sn, f.wa, f.cov, now()
FROM unnest($1::text[], $2::timestamptz[], $3::interval[], $4::int[], $5::int[], $6::timestamptz[], $7::text[],
            $8::text[], $9::bool[], $10::bool[], $14::float8[])
     AS f(fid, first_ts, step, n, off, run_at, mv, quality, sn, wa, cov),
     generate_series(0, f.n - 1) AS g(k)
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


def _regular(targets: Sequence[datetime], step: timedelta) -> bool:
    return all(b - a == step for a, b in pairwise(targets))


async def save_forecasts(conn: Any, forecasts: Sequence[FacilityForecast]) -> int:
    """Record the runs and upsert the points of several facilities in one transaction (two statements,
    whatever their number); returns the number of points sent. Every forecast is validated before anything
    is written: aligned lists, P10 <= P50 <= P90, targets spaced by the forecast's own interval. Callers
    writing concurrently give each call different facilities."""
    runs: list[tuple[Any, ...]] = []
    per_facility: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [], [])
    quantiles: tuple[list[np.ndarray], ...] = ([], [], [])
    regular: dict[int, bool] = {}  # a run's forecasts share a few target lists (held by ``forecasts``)
    offset = 1  # PostgreSQL arrays start at 1
    for fc in forecasts:
        n = len(fc.targets)
        if not (n == len(fc.p10) == len(fc.p50) == len(fc.p90)):
            raise ValueError("targets and quantile lists must have the same length")
        p10, p50, p90 = (np.asarray(q, dtype=np.float64) for q in (fc.p10, fc.p50, fc.p90))
        if not (np.all(p10 <= p50) and np.all(p50 <= p90)):  # NaN fails too
            raise ValueError("quantiles must satisfy p10 <= p50 <= p90")
        step = timedelta(minutes=fc.interval_minutes)
        if id(fc.targets) not in regular:
            regular[id(fc.targets)] = _regular(fc.targets, step)
        if not regular[id(fc.targets)]:
            raise ValueError(f"targets must be {fc.interval_minutes} min apart")
        coverage = min(1.0, max(0.0, float(fc.sensor_coverage)))
        meta = (fc.model_version, fc.quality, fc.seasonal_naive, fc.weather_available, coverage)
        runs.append((fc.facility_id, fc.run_at, *meta, fc.weather_source, fc.method))
        if n == 0:
            continue
        values = (fc.facility_id, fc.targets[0], step, n, offset, fc.run_at, *meta)
        for col, value in zip(per_facility, values, strict=True):
            col.append(value)
        for col, q in zip(quantiles, (p10, p50, p90), strict=True):
            col.append(q)
        offset += n
    if not runs:
        return 0
    flat = [np.concatenate(q).tolist() if q else [] for q in quantiles]
    *head, cov = per_facility

    async def _write(c: Any) -> None:
        async with c.transaction():
            await c.executemany(_RUN_SQL, runs)
            if offset > 1:
                await c.execute(_POINTS_SQL, *head, *flat, cov)

    if hasattr(conn, "acquire"):
        async with conn.acquire() as acquired:
            await _write(acquired)
    else:
        await _write(conn)
    return offset - 1
