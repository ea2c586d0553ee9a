"""Demand-response events, read-only: list with filters, detail with the full timeline.

A caller sees an event when at least one of its facilities is in the caller's scope, and
sees only those facilities (and their log entries) of it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Principal, ensure_facility_access, require_principal
from api.deps import Limit, Offset, check_range, db
from api.errors import COMMON_RESPONSES, not_found
from schemas.api import DrEventDetail, DrEventFacility, DrEventSummary, DrLogEntry, Page
from schemas.readings import ID_PATTERN

router = APIRouter(prefix="/api/dr-events", tags=["demand response"], responses=COMMON_RESPONSES)

StateFilter = Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$", description="Event state")]

_EVENT_COLUMNS = """e.dr_event_id, e.utility_id, e.utility_event_id, e.program_id, e.state, e.start_at, e.end_at,
    e.target_kw, e.priority, e.created_at, e.updated_at,
    ARRAY(SELECT d.facility_id FROM dr_event_facilities d
          WHERE d.dr_event_id = e.dr_event_id AND d.facility_id = ANY($1::text[])
          ORDER BY d.facility_id) AS facility_ids"""


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {"value": value}


def scope_filters(
    principal: Principal,
    state: str | None,
    facility_id: str | None,
    start_after: datetime | None,
    start_before: datetime | None,
) -> tuple[str, list[Any]]:
    """WHERE clause and its bound arguments; $1 is always the caller's facility ids."""
    args: list[Any] = [sorted(principal.facility_ids)]
    where = [
        """EXISTS (SELECT 1 FROM dr_event_facilities d JOIN facilities f ON f.facility_id = d.facility_id
                   WHERE d.dr_event_id = e.dr_event_id AND d.facility_id = ANY($1::text[]) AND f.tenant_id = $2)"""
    ]
    args.append(principal.tenant_id)
    if state is not None:
        args.append(state)
        where.append(f"e.state = ${len(args)}")
    if facility_id is not None:
        args.append(facility_id)
        where.append(
            f"EXISTS (SELECT 1 FROM dr_event_facilities d2 WHERE d2.dr_event_id = e.dr_event_id "
            f"AND d2.facility_id = ${len(args)})"
        )
    if start_after is not None:
        args.append(start_after)
        where.append(f"e.start_at >= ${len(args)}")
    if start_before is not None:
        args.append(start_before)
        where.append(f"e.start_at < ${len(args)}")
    return " AND ".join(where), args


@router.get("", response_model=Page[DrEventSummary], summary="DR events touching the caller's facilities")
async def list_events(
    request: Request,
    principal: Principal = Depends(require_principal),
    state: StateFilter = None,
    facility_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    start_after: datetime | None = None,
    start_before: datetime | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DrEventSummary]:
    if start_after is not None and start_before is not None:
        check_range(start_after, start_before)
    elif start_after is not None or start_before is not None:
        bound = start_after or start_before
        assert bound is not None
        check_range(bound, bound.replace(year=min(bound.year + 1, 2199)))
    if facility_id is not None:
        ensure_facility_access(principal, facility_id)
    clause, args = scope_filters(principal, state, facility_id, start_after, start_before)
    async with db(request) as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM dr_events e WHERE {clause}", *args)
        rows = await conn.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM dr_events e WHERE {clause} "
            f"ORDER BY e.start_at DESC, e.dr_event_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            *args,
            limit,
            offset,
        )
    return Page[DrEventSummary](
        items=[DrEventSummary(**dict(r)) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{dr_event_id}", response_model=DrEventDetail, summary="One DR event with its facilities and timeline")
async def get_event(
    dr_event_id: uuid.UUID, request: Request, principal: Principal = Depends(require_principal)
) -> DrEventDetail:
    clause, args = scope_filters(principal, None, None, None, None)
    async with db(request) as conn:
        args.append(dr_event_id)
        row = await conn.fetchrow(
            f"SELECT {_EVENT_COLUMNS} FROM dr_events e WHERE {clause} AND e.dr_event_id = ${len(args)}", *args
        )
        if row is None:
            raise not_found("DR event", str(dr_event_id))
        facilities = await conn.fetch(
            """SELECT facility_id, state, target_kw, baseline_kw, achieved_kw, strategy, updated_at
               FROM dr_event_facilities WHERE dr_event_id = $1 AND facility_id = ANY($2::text[])
               ORDER BY facility_id""",
            dr_event_id,
            sorted(principal.facility_ids),
        )
        log = await conn.fetch(
            """SELECT seq, facility_id, entry_type, from_state, to_state, detail, occurred_at FROM dr_event_log
               WHERE dr_event_id = $1 AND (facility_id IS NULL OR facility_id = ANY($2::text[]))
               ORDER BY seq LIMIT 10000""",
            dr_event_id,
            sorted(principal.facility_ids),
        )
    return DrEventDetail(
        event=DrEventSummary(**dict(row)),
        facilities=[DrEventFacility(**dict(f)) for f in facilities],
        timeline=[DrLogEntry(**{**dict(e), "detail": _json(e["detail"])}) for e in log],
    )
