"""What interval baselines and settlements read: 15-minute facility rollups from InfluxDB
(``facility_rollups``, window ``15m``, decision 0003), the facility's calendar, its earlier DR
event days, hourly temperatures and the load forecast from PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dr_coordinator.domain.interval_baselines import HISTORY_DAYS, READING
from dr_coordinator.domain.settlement import MinuteReadings
from energy.adapters.influx import InfluxClient, iter_rows, quote_ident
from forecast.read import latest_forecast
from forecast.weather.types import cell_id


def _rollups_query(influx: InfluxClient, window: str) -> str:
    """The rollups live in their own retention policy (decision 0003), not the database's default
    (the raw one): an unqualified measurement finds nothing."""
    rp = quote_ident(influx.settings.rollup_retention_policy)
    return (
        f'SELECT "avg_kw", "coverage" FROM {rp}."facility_rollups" WHERE "facility_id" = $facility_id '
        f"AND \"window\" = '{window}' AND time >= $start AND time < $end"
    )


# Events that count as event days: every event the facility was dispatched in, whatever its end
# state (a cancelled or failed event that shed still disturbed that day's load).
_EVENT_DAYS = """
    SELECT DISTINCT e.dr_event_id, e.start_at, e.end_at FROM dr_event_facilities ef
    JOIN dr_events e USING (dr_event_id)
    WHERE ef.facility_id = $1 AND e.dr_event_id <> $2 AND e.start_at < $4 AND e.end_at > $3
      AND (e.state NOT IN ('received', 'scheduled', 'cancelled')
           OR EXISTS (SELECT 1 FROM dr_event_log l WHERE l.dr_event_id = e.dr_event_id
                       AND l.facility_id = ef.facility_id AND l.entry_type = 'plan')
           OR EXISTS (SELECT 1 FROM bms_commands c WHERE c.dr_event_id = e.dr_event_id
                       AND c.facility_id = ef.facility_id))
"""


@dataclass(frozen=True)
class FacilityCalendar:
    facility_id: str
    tz: ZoneInfo
    country: str | None
    subdivision: str | None
    latitude: float
    longitude: float


def _ts(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


async def _kw_and_coverage(
    influx: InfluxClient, window: str, facility_id: str, start: datetime, end: datetime
) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """Mean kW and the rollup's own coverage (clamped to [0, 1]) of one window size, by UTC start."""
    series = await influx.query(
        _rollups_query(influx, window),
        params={"facility_id": facility_id, "start": start.isoformat(), "end": end.isoformat()},
    )
    kw: dict[datetime, float] = {}
    coverage: dict[datetime, float] = {}
    for r in iter_rows(series):
        if r.get("avg_kw") is None:
            continue
        ts = _ts(r["time"])
        kw[ts] = float(r["avg_kw"])
        cov = r.get("coverage")
        coverage[ts] = 1.0 if cov is None else max(0.0, min(1.0, float(cov)))
    return kw, coverage


async def quarter_hours(
    influx: InfluxClient, facility_id: str, start: datetime, end: datetime
) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """15-minute mean kW and the rollup's own coverage (share of expected samples), by UTC start."""
    return await _kw_and_coverage(influx, "15m", facility_id, start, end)


async def minutes(influx: InfluxClient, facility_id: str, start: datetime, end: datetime) -> MinuteReadings:
    """1-minute mean kW and coverage (``1m`` rollups) of the minutes starting in [floor(start), end):
    what a settlement measures an interval the event covers only in part on."""
    lo = start - timedelta(seconds=start.timestamp() % 60)
    return MinuteReadings(*await _kw_and_coverage(influx, "1m", facility_id, lo, end))


def history_start(event_start: datetime, tz: ZoneInfo) -> datetime:
    """Local midnight ``HISTORY_DAYS`` local days before the event's local day."""
    day = event_start.astimezone(tz).date() - timedelta(days=HISTORY_DAYS)
    return datetime.combine(day, time(0), tz).astimezone(UTC)


async def calendar(conn: Any, facility_id: str) -> FacilityCalendar:
    row = await conn.fetchrow(
        "SELECT timezone, country, subdivision, latitude, longitude FROM facilities WHERE facility_id = $1",
        facility_id,
    )
    if row is None:
        raise LookupError(f"unknown facility {facility_id}")
    return FacilityCalendar(
        facility_id, ZoneInfo(row["timezone"]), row["country"], row["subdivision"], row["latitude"], row["longitude"]
    )


async def event_days(
    conn: Any, facility_id: str, tz: ZoneInfo, dr_event_id: uuid.UUID, lo: datetime, hi: datetime
) -> frozenset[date]:
    """Local dates touched by earlier events of the facility in [lo, hi)."""
    out: set[date] = set()
    for r in await conn.fetch(_EVENT_DAYS, facility_id, dr_event_id, lo, hi):
        d = r["start_at"].astimezone(tz).date()
        last = (r["end_at"] - timedelta(microseconds=1)).astimezone(tz).date()
        while d <= last:
            out.add(d)
            d += timedelta(days=1)
    return frozenset(out)


async def temperatures(
    conn: Any, cal: FacilityCalendar, cell_deg: float, start: datetime, end: datetime
) -> dict[datetime, float]:
    """Hourly temperature of the facility's weather cell, spread onto each quarter hour."""
    rows = await conn.fetch(
        "SELECT ts, temp_c FROM weather_hourly WHERE cell_id = $1 AND ts >= $2 AND ts < $3",
        cell_id(cal.latitude, cal.longitude, cell_deg),
        start - timedelta(hours=1),
        end,
    )
    out: dict[datetime, float] = {}
    for r in rows:
        hour = r["ts"].astimezone(UTC)
        for k in range(4):
            out[hour + k * READING] = float(r["temp_c"])
    return out


async def forecast_quarters(conn: Any, facility_id: str, start: datetime, end: datetime) -> dict[datetime, float]:
    return {p.target_ts.astimezone(UTC): p.p50_kw for p in await latest_forecast(conn, facility_id, start, end)}


__all__ = [
    "FacilityCalendar",
    "calendar",
    "event_days",
    "forecast_quarters",
    "history_start",
    "minutes",
    "quarter_hours",
    "temperatures",
]
