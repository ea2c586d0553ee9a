"""Meter data for baselines and achieved reduction, from InfluxDB ``facility_rollups`` (see 0003)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from dr_coordinator.domain.baselines import DayLoad
from energy.adapters.influx import InfluxClient, iter_rows

HISTORY_DAYS = 21
ADJUSTMENT_START = timedelta(hours=4)  # adjustment window: [start - 4 h, start - 1 h)
ADJUSTMENT_END = timedelta(hours=1)
BUCKET = timedelta(minutes=15)

_Q_WINDOW = (
    'SELECT "avg_kw" FROM "facility_rollups" WHERE "facility_id" = $facility_id AND "window" = $window '
    "AND time >= $start AND time < $end"
)


def _ts(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


async def _points(
    influx: InfluxClient, facility_id: str, window: str, start: datetime, end: datetime
) -> list[tuple[datetime, float]]:
    series = await influx.query(
        _Q_WINDOW,
        params={"facility_id": facility_id, "window": window, "start": start.isoformat(), "end": end.isoformat()},
    )
    return [(_ts(r["time"]), float(r["avg_kw"])) for r in iter_rows(series) if r.get("avg_kw") is not None]


def _overlap_mean(points: list[tuple[datetime, float]], lo: datetime, hi: datetime, bucket: timedelta) -> float | None:
    vals = [kw for ts, kw in points if ts < hi and ts + bucket > lo]
    return sum(vals) / len(vals) if vals else None


async def history(
    influx: InfluxClient, facility_id: str, start: datetime, end: datetime, event_days: set[date]
) -> tuple[list[DayLoad], float | None]:
    """Past days' mean kW in the event's time-of-day window, and the day-of adjustment window's kW."""
    lo = start - timedelta(days=HISTORY_DAYS)
    points = await _points(influx, facility_id, "15m", lo, start)
    by_day: dict[date, list[tuple[datetime, float]]] = defaultdict(list)
    for ts, kw in points:
        by_day[ts.date()].append((ts, kw))
    days = []
    for back in range(1, HISTORY_DAYS + 1):
        d_start, d_end = start - timedelta(days=back), end - timedelta(days=back)
        pts = [p for day in {d_start.date(), d_end.date()} for p in by_day.get(day, [])]
        ev_kw = _overlap_mean(pts, d_start, d_end, BUCKET)
        if ev_kw is None:
            continue
        adj_kw = _overlap_mean(points, d_start - ADJUSTMENT_START, d_start - ADJUSTMENT_END, BUCKET)
        days.append(DayLoad(d_start.date(), ev_kw, adj_kw, d_start.date() in event_days))
    day_of = _overlap_mean(points, start - ADJUSTMENT_START, start - ADJUSTMENT_END, BUCKET)
    return days, day_of


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
