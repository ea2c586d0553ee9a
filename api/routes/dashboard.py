"""The web dashboard (static pages served by the API) and its fleet-overview endpoint."""

from __future__ import annotations

import asyncio
import html
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from api import examples as ex
from api.auth import Principal, require_principal
from api.cache import CurrentCache
from api.deps import db
from api.errors import COMMON_RESPONSES, ApiError
from api.examples import ok
from energy.seed import dev_principals
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
    responses={**COMMON_RESPONSES, **ok(ex.FLEET)},
    summary="Fleet overview: each facility's current load and alerts",
)
async def fleet(request: Request, principal: Principal = Depends(require_principal)) -> FleetOverview:
    ids = sorted(principal.facility_ids)[:FLEET_MAX]
    async with db(request) as conn:
        rows = await conn.fetch(
            """SELECT facility_id, name, kind, timezone, peak_kw FROM facilities
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
                timezone=r["timezone"],
                peak_kw=r["peak_kw"],
                current_kw=kw,
                as_of=value.get("as_of") if value else None,
                alerts=alerts_for(value, r["peak_kw"], r["facility_id"] in dr_active, now, unavailable),
            )
        )
    return FleetOverview(generated_at=now, facilities=items, total_current_kw=round(total, 3))


DEV_HINT_MARKER = "<!-- dev-hint -->"
DEV_HINT_ENVIRONMENTS = ("local", "test")


def sign_in_page(template: str, environment: str) -> str:
    """Pure: the page with a development sign-in hint on a laptop (local/test) and none elsewhere,
    where those published credentials must not even be suggested (decision 0009)."""
    hint = ""
    if environment in DEV_HINT_ENVIRONMENTS:
        _, _, _, login, password = next(p for p in dev_principals() if p[0] == "user")
        hint = (
            f'<p class="muted" id="dev-hint">Local stack: sign in as {html.escape(login)} with '
            f"{html.escape(password)} (created by <code>energy seed</code>).</p>"
        )
    return template.replace(DEV_HINT_MARKER, hint)


@lru_cache(maxsize=4)
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


@router.get("/dashboard", include_in_schema=False)
async def fleet_page(request: Request) -> HTMLResponse:
    return HTMLResponse(sign_in_page(_template("index.html"), request.app.state.settings.environment))


@router.get("/dashboard/facility", include_in_schema=False)
async def facility_page(request: Request) -> HTMLResponse:
    return HTMLResponse(sign_in_page(_template("facility.html"), request.app.state.settings.environment))


@router.get("/dashboard/dr-event", include_in_schema=False)
async def dr_event_page(request: Request) -> HTMLResponse:
    return HTMLResponse(sign_in_page(_template("dr-event.html"), request.app.state.settings.environment))
