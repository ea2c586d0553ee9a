"""What the planner needs, read from PostgreSQL (zones, facilities, forecasts) and InfluxDB (history)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dr_coordinator.domain.planner import ForecastInfo, ZoneSpec
from forecast.read import latest_forecast

FORECAST_SLOT_MIN = 15


@dataclass(frozen=True)
class FacilityInfo:
    facility_id: str
    peak_kw: float
    criticality_tier: int
    bms_url: str | None
    zones: tuple[ZoneSpec, ...]


async def facility_infos(conn: Any, facility_ids: list[str]) -> dict[str, FacilityInfo]:
    rows = await conn.fetch(
        """SELECT f.facility_id, COALESCE(f.peak_kw, 0) AS peak_kw, f.criticality_tier, b.url
           FROM facilities f LEFT JOIN bms_endpoints b ON b.facility_id = f.facility_id AND b.active
           WHERE f.facility_id = ANY($1::text[])""",
        facility_ids,
    )
    zones = await conn.fetch(
        """SELECT facility_id, zone_id, kind, rated_kw, normal_setpoint_c, max_setpoint_c, min_lighting_pct,
                  shed_priority
           FROM bms_zones WHERE facility_id = ANY($1::text[]) ORDER BY facility_id, shed_priority, zone_id""",
        facility_ids,
    )
    by_fac: dict[str, list[ZoneSpec]] = {}
    for z in zones:
        by_fac.setdefault(z["facility_id"], []).append(
            ZoneSpec(
                z["zone_id"],
                z["kind"],
                z["rated_kw"],
                z["normal_setpoint_c"],
                z["max_setpoint_c"],
                z["min_lighting_pct"],
                z["shed_priority"],
            )
        )
    return {
        r["facility_id"]: FacilityInfo(
            r["facility_id"],
            float(r["peak_kw"]),
            r["criticality_tier"],
            r["url"],
            tuple(by_fac.get(r["facility_id"], [])),
        )
        for r in rows
    }


async def forecast_info(pool: Any, facility_id: str, start: datetime, end: datetime, now: datetime) -> ForecastInfo:
    """Mean p50 over the event window of the newest forecast, with its quality and age.

    A forecast point marks the start of its 15 min slot (``forecast.read``): the slot holding the
    event's start counts, so an event shorter than a slot (or one interval of it) is covered too."""
    slot_start = start - timedelta(
        minutes=start.minute % FORECAST_SLOT_MIN, seconds=start.second, microseconds=start.microsecond
    )
    points = await latest_forecast(pool, facility_id, slot_start, end)
    if not points:
        return ForecastInfo(None, None, None)
    worst = "full"
    for p in points:
        if p.quality != "full" or p.seasonal_naive:
            worst = p.quality if p.quality != "full" else "degraded_stale_data"
    oldest_run = min(p.run_at for p in points)
    return ForecastInfo(
        sum(p.p50_kw for p in points) / len(points), worst, max(0.0, (now - oldest_run).total_seconds())
    )


async def event_row(conn: Any, dr_event_id: uuid.UUID) -> Any:
    return await conn.fetchrow(
        """SELECT e.*, u.baseline_method, u.baseline_rules, u.vtn_base_url, u.ven_name,
                  (SELECT p.dispatch_lead_s FROM utility_programs p
                   WHERE p.utility_id = e.utility_id AND p.program_id = COALESCE(e.program_id, 'default'))
                    AS program_lead_s
           FROM dr_events e JOIN utilities u USING (utility_id) WHERE e.dr_event_id = $1""",
        dr_event_id,
    )
