"""Training series from the platform's own data: facility rollups from InfluxDB at each facility's own
meter interval (inferred from its 15 min rollups) and the recorded weather of its grid cell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from energy.adapters.influx import InfluxClient
from energy.adapters.postgres import create_pool
from energy.settings import Settings
from forecast.dataset import NEUTRAL_TEMP_C, SeriesData
from forecast.history import Rollup, read_rollups
from forecast.prepare import infer_interval_minutes, quarter_floor, temperatures
from forecast.weather.cache import WeatherCache
from forecast.weather.types import cell_id

MIN_OBSERVED = 0.7  # facilities with fewer observed steps are left out of training
MIN_DAYS = 11  # 8 days a forecast needs (a week before the encoder's day), plus windows to train and validate on


def on_grid(rollups: list[Rollup], start: datetime, end: datetime, interval_minutes: int) -> np.ndarray:
    """Mean of the rollups inside each step of the interval grid; NaN where there is none."""
    step = timedelta(minutes=interval_minutes)
    n = int((end - start) / step)
    total, count = np.zeros(n), np.zeros(n)
    for r in rollups:
        i = int((r.ts - start) / step)
        if 0 <= i < n and np.isfinite(r.avg_kw) and r.ts >= start:
            total[i] += r.avg_kw
            count[i] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


async def influx_series(
    settings: Settings, days: int, facility_ids: list[str] | None = None, interval_minutes: int | None = None
) -> list[SeriesData]:
    """Series of the active facilities (or ``facility_ids``) with enough observed history, each at its own
    interval (only those of ``interval_minutes`` when given)."""
    end = quarter_floor(datetime.now(UTC))
    start = end - timedelta(days=days)
    pool = await create_pool(settings.postgres, min_size=1, max_size=2)
    try:
        facilities = await pool.fetch(
            """SELECT facility_id, timezone, latitude, longitude FROM facilities
               WHERE active AND ($1::text[] IS NULL OR facility_id = ANY($1::text[])) ORDER BY facility_id""",
            facility_ids,
        )
        async with InfluxClient(settings.influx, breaker_name="influxdb-forecast-train") as influx:
            rollups = await read_rollups(
                influx,
                settings.influx.rollup_retention_policy,
                [f["facility_id"] for f in facilities],
                start,
                end,
                timeout_s=60,
            )
        cache = WeatherCache(pool)
        out = []
        for f in facilities:
            own = rollups[f["facility_id"]]
            interval = infer_interval_minutes([r.ts for r in own])
            if interval_minutes is not None and interval != interval_minutes:
                continue
            load = on_grid(own, start, end, interval)
            if days < MIN_DAYS or np.mean(~np.isnan(load)) < MIN_OBSERVED:
                continue
            times = pd.date_range(start, periods=len(load), freq=f"{interval}min")
            cell = cell_id(f["latitude"], f["longitude"], settings.forecast.weather_cell_deg)
            past = await cache.hours(cell, start, end, datetime.min.replace(tzinfo=UTC))
            temp = temperatures(times, [past])
            out.append(
                SeriesData(
                    f["facility_id"],
                    f["timezone"],
                    times,
                    load,
                    temp if temp is not None else np.full(len(times), NEUTRAL_TEMP_C),
                )
            )
        return out
    finally:
        await pool.close()
