"""CSV exports (API-6), streamed in constant memory.

Readings and rollups: for each facility in turn, [start, end) is cut into time slices and each
slice is read in pages of ``export_page_rows`` (LIMIT/OFFSET), so at most one page is ever in
memory whatever the range. The first page is read before the response starts, so an InfluxDB
outage is a 503 rather than a truncated file; a failure later ends the stream early (the
chunked response is then incomplete, which clients see as an error).

DR report: one row per event and facility, read through a PostgreSQL cursor.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from api import examples as ex
from api.auth import Principal, ensure_facility_access, require_principal
from api.csv_export import ReadingsExport, csv_text, local_text, utc_text, zone_of
from api.deps import check_range, db
from api.errors import COMMON_RESPONSES, ApiError
from api.routes.dr_events import (
    SETTLEMENT_HEADER,
    StateFilter,
    Version,
    scope_filters,
    settlement_csv_rows,
    settlement_rows,
    visible_event,
)
from api.timeseries import fetch_range
from energy.observability.metrics import Counter
from schemas.api import Granularity
from schemas.readings import ID_PATTERN

router = APIRouter(prefix="/api/exports", tags=["exports"], responses=COMMON_RESPONSES)

EXPORT_ROWS = Counter("energy_api_export_rows_total", "Rows written to CSV exports", ["export"])

DR_HEADER = [
    "dr_event_id",
    "utility_id",
    "utility_event_id",
    "event_state",
    "start_utc",
    "start_local",
    "end_utc",
    "end_local",
    "facility_id",
    "facility_state",
    "target_kw",
    "baseline_kw",
    "achieved_reduction_kw",
    "achieved_pct_of_target",
]
DR_PAGE_ROWS = 1000
_ID = re.compile(ID_PATTERN)
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


def csv_response(example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}, "example": example}},
            "description": "CSV with a header row",
        }
    }


def dr_row(r: Any) -> list[Any]:
    target, achieved = r["target_kw"], r["achieved_kw"]
    pct = round(100.0 * achieved / target, 3) if target and achieved is not None else None
    return [
        r["dr_event_id"],
        r["utility_id"],
        r["utility_event_id"],
        r["event_state"],
        utc_text(r["start_at"]),
        local_text(r["start_at"], zone_of(r["timezone"])),
        utc_text(r["end_at"]),
        local_text(r["end_at"], zone_of(r["timezone"])),
        r["facility_id"],
        r["facility_state"],
        target,
        r["baseline_kw"],
        achieved,
        pct,
    ]


async def facility_zones(conn: Any, facilities: list[str]) -> dict[str, ZoneInfo]:
    rows = await conn.fetch(
        "SELECT facility_id, timezone FROM facilities WHERE facility_id = ANY($1::text[])", facilities
    )
    found = {r["facility_id"]: zone_of(r["timezone"]) for r in rows}
    return {fid: found.get(fid, ZoneInfo("UTC")) for fid in facilities}


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@router.get(
    "/readings.csv",
    response_class=StreamingResponse,
    responses=csv_response(ex.READINGS_CSV),
    summary="Readings (raw, per meter) or facility rollups (1m, 15m, 1h) of one or many facilities as CSV",
)
async def export_readings(
    request: Request,
    facility_id: Annotated[
        list[Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=64)]],
        Query(min_length=1, description="One or more facility ids"),
    ],
    start: datetime,
    end: datetime,
    granularity: Granularity = Granularity.ONE_MINUTE,
    principal: Principal = Depends(require_principal),
) -> StreamingResponse:
    state = request.app.state
    api = state.settings.api
    facilities = list(dict.fromkeys(facility_id))
    if len(facilities) > api.export_max_facilities:
        raise ApiError(422, "validation_error", f"at most {api.export_max_facilities} facilities per export")
    for fid in facilities:
        if len(fid) > 64 or not _ID.match(fid):
            raise ApiError(422, "validation_error", "invalid facility id", {"facility_id": fid[:100]})
        ensure_facility_access(principal, fid)
    start, end = check_range(start, end)

    async def read(fid: str, s: datetime, e: datetime, offset: int) -> list[dict[str, Any]]:
        return await fetch_range(
            state.influx,
            state.measurements,
            fid,
            None,
            granularity,
            s,
            e,
            api.export_page_rows,
            offset,
            api.export_query_timeout_s,
            purpose="export",
        )

    async with db(request) as conn:
        zones = await facility_zones(conn, facilities)
    export = ReadingsExport(
        read,
        facilities,
        zones,
        granularity,
        start,
        end,
        api.export_page_rows,
        on_rows=EXPORT_ROWS.labels("readings").inc,
    )
    await export.prefetch()  # an outage here is a clean 503

    name = f"readings-{granularity.value}-{_iso(start)}-{_iso(end)}.csv"
    return StreamingResponse(
        export.chunks(), media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get(
    "/dr-events.csv",
    response_class=StreamingResponse,
    responses=csv_response(ex.DR_EVENTS_CSV),
    summary="DR event report: per event and facility, target, baseline, achieved reduction and status",
)
async def export_dr_report(
    request: Request,
    principal: Principal = Depends(require_principal),
    state: StateFilter = None,
    facility_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    start_after: datetime | None = None,
    start_before: datetime | None = None,
) -> StreamingResponse:
    if start_after is not None and start_before is not None:
        check_range(start_after, start_before)
    for bound in (start_after, start_before):
        if bound is not None:
            check_range(bound, bound.replace(year=min(bound.year + 1, 2199)))
    if facility_id is not None:
        ensure_facility_access(principal, facility_id)
    clause, args = scope_filters(principal, state, facility_id, start_after, start_before)
    n = len(args)
    sql = f"""SELECT e.dr_event_id, e.utility_id, e.utility_event_id, e.state AS event_state, e.start_at, e.end_at,
                     d.facility_id, d.state AS facility_state, d.target_kw, d.baseline_kw, d.achieved_kw,
                     f.timezone
              FROM dr_events e JOIN dr_event_facilities d ON d.dr_event_id = e.dr_event_id
              JOIN facilities f ON f.facility_id = d.facility_id
              WHERE {clause} AND d.facility_id = ANY($1::text[])
                AND (${n + 1}::timestamptz IS NULL
                     OR (e.start_at, e.dr_event_id, d.facility_id) > (${n + 1}, ${n + 2}::uuid, ${n + 3}::text))
              ORDER BY e.start_at, e.dr_event_id, d.facility_id LIMIT {DR_PAGE_ROWS}"""

    async def page(after: tuple[Any, Any, Any]) -> list[Any]:
        async with db(request) as conn:
            return list(await conn.fetch(sql, *args, *after))

    first = await page((None, None, None))  # a database problem here is a clean 503

    async def body() -> AsyncIterator[str]:
        yield csv_text([DR_HEADER])
        rows = first
        while rows:
            EXPORT_ROWS.labels("dr_report").inc(len(rows))
            yield csv_text(dr_row(r) for r in rows)
            if len(rows) < DR_PAGE_ROWS:
                break
            last = rows[-1]
            rows = await page((last["start_at"], last["dr_event_id"], last["facility_id"]))

    return StreamingResponse(
        body(), media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": 'attachment; filename="dr-report.csv"'}
    )


SETTLEMENT_EVENTS_PER_PAGE = 50


@router.get(
    "/dr-settlement.csv",
    response_class=StreamingResponse,
    responses=csv_response(ex.SETTLEMENT_CSV),
    summary="DR settlement as CSV, one row per event, facility and interval (local and UTC times): "
    "one event (dr_event_id) or every event starting in a period (start_after/start_before)",
)
async def export_dr_settlement(
    request: Request,
    principal: Principal = Depends(require_principal),
    dr_event_id: uuid.UUID | None = None,
    facility_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    start_after: datetime | None = None,
    start_before: datetime | None = None,
    version: Version = None,
) -> StreamingResponse:
    if dr_event_id is not None and (start_after is not None or start_before is not None):
        raise ApiError(422, "validation_error", "give dr_event_id or a period (start_after, start_before), not both")
    if dr_event_id is None:
        if start_after is None or start_before is None:
            raise ApiError(422, "validation_error", "give dr_event_id, or both start_after and start_before")
        if version is not None:
            raise ApiError(422, "validation_error", "version applies to one event (dr_event_id)")
        check_range(start_after, start_before)
        name = f"dr-settlement-{_iso(start_after)}-{_iso(start_before)}.csv"
    else:
        name = f"dr-settlement-{dr_event_id}.csv"
    if facility_id is not None:
        ensure_facility_access(principal, facility_id)
    facilities = [facility_id] if facility_id is not None else sorted(principal.facility_ids)
    if dr_event_id is not None:
        async with db(request) as conn:
            await visible_event(conn, principal, dr_event_id)
        event_ids = [dr_event_id]
    else:
        clause, args = scope_filters(principal, None, facility_id, start_after, start_before)
        async with db(request) as conn:
            event_ids = [
                r["dr_event_id"]
                for r in await conn.fetch(
                    f"SELECT e.dr_event_id FROM dr_events e WHERE {clause} ORDER BY e.start_at, e.dr_event_id", *args
                )
            ]

    async def page(ids: list[uuid.UUID]) -> list[list[Any]]:
        async with db(request) as conn:
            return settlement_csv_rows(await settlement_rows(conn, ids, facilities, version))

    first = await page(event_ids[:SETTLEMENT_EVENTS_PER_PAGE])  # a database problem here is a clean 503

    async def body() -> AsyncIterator[str]:
        yield csv_text([SETTLEMENT_HEADER])
        rows, k = first, SETTLEMENT_EVENTS_PER_PAGE
        while True:
            EXPORT_ROWS.labels("dr_settlement").inc(len(rows))
            yield csv_text(rows)
            if k >= len(event_ids):
                break
            rows = await page(event_ids[k : k + SETTLEMENT_EVENTS_PER_PAGE])
            k += SETTLEMENT_EVENTS_PER_PAGE

    return StreamingResponse(
        body(), media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
