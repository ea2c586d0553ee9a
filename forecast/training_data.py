"""Training series from the platform's own data: 15 min facility rollups and recorded weather per cell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from energy.adapters.influx import InfluxClient
from energy.adapters.postgres import create_pool
from energy.settings import Settings
from forecast.history import read_rollups
from forecast.prepare import NEUTRAL_TEMP_C, quarter_floor, temperatures
from forecast.train_platform import PLATFORM_SPEC, FacilitySeries
from forecast.weather.cache import WeatherCache
from forecast.weather.types import cell_id

MIN_OBSERVED = 0.7  # facilities with fewer observed steps are left out of training


async def influx_series(settings: Settings, days: int, facility_ids: list[str] | None = None) -> list[FacilitySeries]:
    """Series of the active facilities (or ``facility_ids``) with enough observed 15 min rollups."""
    end = quarter_floor(datetime.now(UTC))
    start = end - timedelta(days=days)
    times = pd.date_range(start, end, freq="15min", inclusive="left")
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
            load = np.full(len(times), np.nan)
            for r in rollups[f["facility_id"]]:
                i = int((r.ts - start) / timedelta(minutes=15))
                if 0 <= i < len(times):
                    load[i] = r.avg_kw
            if np.mean(~np.isnan(load)) < MIN_OBSERVED or len(times) < PLATFORM_SPEC.history_needed + 200:
                continue
            cell = cell_id(f["latitude"], f["longitude"], settings.forecast.weather_cell_deg)
            past = await cache.hours(cell, start, end, datetime.min.replace(tzinfo=UTC))
            temp = temperatures(times, [past])
            out.append(
                FacilitySeries(
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
