"""Live metered load while an event runs, from InfluxDB ``facility_rollups`` 1-minute rollups (0003).
History for baselines and settlement: ``meter_history``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from energy.adapters.influx import InfluxClient, iter_rows, quote_ident

_Q_WINDOW = (
    'SELECT "avg_kw" FROM {rp}."facility_rollups" WHERE "facility_id" = $facility_id AND "window" = $window '
    "AND time >= $start AND time < $end"
)


def _ts(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


async def _points(
    influx: InfluxClient, facility_id: str, window: str, start: datetime, end: datetime
) -> list[tuple[datetime, float]]:
    series = await influx.query(
        # the rollups' own retention policy, not the database's default (the raw one)
        _Q_WINDOW.format(rp=quote_ident(influx.settings.rollup_retention_policy)),
        params={"facility_id": facility_id, "window": window, "start": start.isoformat(), "end": end.isoformat()},
    )
    return [(_ts(r["time"]), float(r["avg_kw"])) for r in iter_rows(series) if r.get("avg_kw") is not None]


def _overlap_mean(points: list[tuple[datetime, float]], lo: datetime, hi: datetime, bucket: timedelta) -> float | None:
    vals = [kw for ts, kw in points if ts < hi and ts + bucket > lo]
    return sum(vals) / len(vals) if vals else None


async def actual_kw(influx: InfluxClient, facility_id: str, start: datetime, end: datetime) -> float | None:
    """Mean metered kW of the facility over [start, end) from the 1-minute rollups."""
    points = await _points(influx, facility_id, "1m", start - timedelta(minutes=1), end)
    return _overlap_mean(points, start, end, timedelta(minutes=1))


async def actual_many(
    influx: InfluxClient, facility_ids: list[str], start: datetime, end: datetime, concurrency: int = 8
) -> dict[str, float | None]:
    sem = asyncio.Semaphore(concurrency)

    async def one(fid: str) -> tuple[str, float | None]:
        async with sem:
            return fid, await actual_kw(influx, fid, start, end)

    return dict(await asyncio.gather(*(one(f) for f in facility_ids)))
