"""The web dashboard (static pages served by the API) and its fleet-overview endpoint."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from api.auth import Principal, require_principal
from api.cache import CurrentCache
from api.deps import db
from api.errors import COMMON_RESPONSES, ApiError
from schemas.api import AlertKind, FleetFacility, FleetOverview

router = APIRouter(tags=["dashboard"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ACTIVE_DR_STATES = ("dispatching", "active", "restoring")
NEAR_PEAK_RATIO = 0.9
STALE_AFTER_S = 300.0
FLEET_MAX = 500
FLEET_CONCURRENCY = 20


def alerts_for(
    current: dict[str, Any] | None, peak_kw: float | None, dr_active: bool, now: datetime, unavailable: bool
) -> list[AlertKind]:
    """Pure: the alerts a facility shows on the fleet overview."""
    alerts: list[AlertKind] = []
    if unavailable:
        alerts.append(AlertKind.DATA_UNAVAILABLE)
    elif current is None or current.get("current_kw") is None:
        alerts.append(AlertKind.NO_DATA)
    else:
        as_of = current.get("as_of")
        if as_of and (now - datetime.fromisoformat(as_of)).total_seconds() > STALE_AFTER_S:
            alerts.append(AlertKind.STALE_DATA)
        if peak_kw and float(current["current_kw"]) >= NEAR_PEAK_RATIO * peak_kw:
            alerts.append(AlertKind.NEAR_PEAK)
    if dr_active:
        alerts.append(AlertKind.DR_ACTIVE)
    return alerts


@router.get(
    "/api/dashboard/fleet",
    response_model=FleetOverview,
    responses=COMMON_RESPONSES,
    summary="Fleet overview: each facility's current load and alerts",
)
async def fleet(request: Request, principal: Principal = Depends(require_principal)) -> FleetOverview:
    ids = sorted(principal.facility_ids)[:FLEET_MAX]
    async with db(request) as conn:
        rows = await conn.fetch(
            """SELECT facility_id, name, kind, peak_kw FROM facilities
               WHERE facility_id = ANY($1::text[]) AND tenant_id = $2 ORDER BY facility_id""",
            ids,
            principal.tenant_id,
        )
        dr = await conn.fetch(
            """SELECT DISTINCT d.facility_id FROM dr_event_facilities d JOIN dr_events e USING (dr_event_id)
               WHERE d.facility_id = ANY($1::text[]) AND e.state = ANY($2::text[])""",
            ids,
            list(ACTIVE_DR_STATES),
        )
    dr_active = {r["facility_id"] for r in dr}
    cache: CurrentCache = request.app.state.current_cache
    gate = asyncio.Semaphore(FLEET_CONCURRENCY)

    async def current(fid: str) -> tuple[dict[str, Any] | None, bool]:
        async with gate:
            try:
                result = await cache.get(fid)
            except ApiError:
                return None, True
            return result.value, result.stale

    currents = await asyncio.gather(*(current(r["facility_id"]) for r in rows))
    now = datetime.now(UTC)
    items = []
    total = 0.0
    for r, (value, unavailable) in zip(rows, currents, strict=True):
        kw = value.get("current_kw") if value else None
        total += float(kw or 0.0)
        items.append(
            FleetFacility(
                facility_id=r["facility_id"],
                name=r["name"],
                kind=r["kind"],
                peak_kw=r["peak_kw"],
                current_kw=kw,
                as_of=value.get("as_of") if value else None,
                alerts=alerts_for(value, r["peak_kw"], r["facility_id"] in dr_active, now, unavailable),
            )
        )
    return FleetOverview(generated_at=now, facilities=items, total_current_kw=round(total, 3))


@router.get("/dashboard", include_in_schema=False)
async def fleet_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/dashboard/facility", include_in_schema=False)
async def facility_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "facility.html", media_type="text/html")


@router.get("/dashboard/dr-event", include_in_schema=False)
async def dr_event_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "dr-event.html", media_type="text/html")
