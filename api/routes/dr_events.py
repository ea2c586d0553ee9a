"""Demand-response events, read-only: list with filters, detail with the full timeline.

A caller sees an event when at least one of its facilities is in the caller's scope, and
sees only those facilities (and their log entries) of it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api import examples as ex
from api.auth import Principal, ensure_facility_access, require_principal
from api.deps import Limit, Offset, check_range, db
from api.errors import COMMON_RESPONSES, not_found
from api.examples import ok
from schemas.api import (
    DrEventDetail,
    DrEventFacility,
    DrEventSettlement,
    DrEventSummary,
    DrFacilitySettlement,
    DrLogEntry,
    DrSettlementInterval,
    Page,
)
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


@router.get(
    "",
    response_model=Page[DrEventSummary],
    summary="DR events touching the caller's facilities",
    responses=ok(ex.page([ex.DR_EVENT])),
)
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


@router.get(
    "/{dr_event_id}",
    response_model=DrEventDetail,
    summary="One DR event with its facilities and timeline",
    responses=ok(ex.DR_EVENT_DETAIL),
)
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


# --- settlement (decision 0431) -----------------------------------------------------------------

Version = Annotated[int | None, Query(ge=1, le=1_000_000, description="A settlement version; latest by default")]

# Per facility in scope, the asked-for version (or the latest) of the event's settlement runs.
_SETTLEMENT_RUNS = """
    SELECT r.*, f.timezone, e.utility_event_id,
           (SELECT count(*) FROM dr_settlement_runs c
             WHERE c.dr_event_id = r.dr_event_id AND c.facility_id = r.facility_id) AS versions
    FROM dr_settlement_runs r JOIN facilities f USING (facility_id) JOIN dr_events e USING (dr_event_id)
    WHERE r.dr_event_id = ANY($1::uuid[]) AND r.facility_id = ANY($2::text[])
      AND r.version = COALESCE($3, (SELECT max(version) FROM dr_settlement_runs m
                                    WHERE m.dr_event_id = r.dr_event_id AND m.facility_id = r.facility_id))
    ORDER BY e.start_at, r.dr_event_id, r.facility_id
"""
_SETTLEMENT_INTERVALS = """
    SELECT * FROM dr_settlement_intervals
    WHERE (dr_event_id, facility_id, version) IN (SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[]))
    ORDER BY dr_event_id, facility_id, interval_start
"""


async def settlement_rows(
    conn: Any, event_ids: list[uuid.UUID], facility_ids: list[str], version: int | None
) -> list[tuple[Any, list[Any]]]:
    """(run row, its interval rows) per facility of the given events."""
    runs = await conn.fetch(_SETTLEMENT_RUNS, event_ids, facility_ids, version)
    if not runs:
        return []
    intervals = await conn.fetch(
        _SETTLEMENT_INTERVALS,
        [r["dr_event_id"] for r in runs],
        [r["facility_id"] for r in runs],
        [r["version"] for r in runs],
    )
    by_key: dict[tuple[Any, str], list[Any]] = {}
    for i in intervals:
        by_key.setdefault((i["dr_event_id"], i["facility_id"]), []).append(i)
    return [(r, by_key.get((r["dr_event_id"], r["facility_id"]), [])) for r in runs]


def facility_settlement(run: Any, intervals: list[Any]) -> DrFacilitySettlement:
    detail = _json(run["detail"])
    return DrFacilitySettlement(
        facility_id=run["facility_id"],
        timezone=run["timezone"],
        version=run["version"],
        kind=run["kind"],
        computed_at=run["computed_at"],
        versions=run["versions"],
        baseline_method=run["baseline_method"],
        baseline_frozen=run["baseline_frozen"],
        baseline=dict(detail.get("baseline") or {}),
        target_kw=run["target_kw"],
        baseline_kwh=run["baseline_kwh"],
        metered_kwh=run["metered_kwh"],
        reduction_kwh=run["reduction_kwh"],
        mean_reduction_kw=run["mean_reduction_kw"],
        performance_pct=run["performance_pct"],
        coverage_pct=run["coverage_pct"],
        intervals=[
            DrSettlementInterval(
                start=i["interval_start"],
                end=i["interval_end"],
                local_start=i["local_start"],
                baseline_kw=i["baseline_kw"],
                metered_kw=i["metered_kw"],
                reduction_kw=i["reduction_kw"],
                target_kw=i["target_kw"],
                performance_pct=i["performance_pct"],
                coverage_pct=i["coverage_pct"],
            )
            for i in intervals
        ],
    )


async def visible_event(conn: Any, principal: Principal, dr_event_id: uuid.UUID) -> Any:
    clause, args = scope_filters(principal, None, None, None, None)
    args.append(dr_event_id)
    row = await conn.fetchrow(
        f"SELECT e.dr_event_id, e.start_at, e.end_at FROM dr_events e WHERE {clause} AND e.dr_event_id = ${len(args)}",
        *args,
    )
    if row is None:
        raise not_found("DR event", str(dr_event_id))
    return row


@router.get(
    "/{dr_event_id}/settlement",
    response_model=DrEventSettlement,
    summary="Settlement of a DR event: per facility and interval, baseline, metered load, reduction, performance",
    responses=ok(ex.SETTLEMENT),
)
async def get_settlement(
    dr_event_id: uuid.UUID,
    request: Request,
    principal: Principal = Depends(require_principal),
    version: Version = None,
) -> DrEventSettlement:
    async with db(request) as conn:
        ev = await visible_event(conn, principal, dr_event_id)
        rows = await settlement_rows(conn, [dr_event_id], sorted(principal.facility_ids), version)
    return DrEventSettlement(
        dr_event_id=dr_event_id,
        start_at=ev["start_at"],
        end_at=ev["end_at"],
        facilities=[facility_settlement(r, ivs) for r, ivs in rows],
    )


SETTLEMENT_HEADER = [
    "dr_event_id",
    "utility_event_id",
    "facility_id",
    "timezone",
    "version",
    "run_kind",
    "computed_at_utc",
    "baseline_method",
    "baseline_flag",
    "interval_start_utc",
    "interval_end_utc",
    "interval_start_local",
    "baseline_kw",
    "metered_kw",
    "reduction_kw",
    "target_kw",
    "performance_pct",
    "coverage_pct",
    "reduction_kwh",
]


def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def settlement_csv_rows(rows: list[tuple[Any, list[Any]]]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for run, intervals in rows:
        flag = (_json(run["detail"]).get("baseline") or {}).get("flag")
        for i in intervals:
            hours = (i["interval_end"] - i["interval_start"]).total_seconds() / 3600.0
            red = i["reduction_kw"]
            out.append(
                [
                    run["dr_event_id"],
                    run["utility_event_id"],
                    run["facility_id"],
                    run["timezone"],
                    run["version"],
                    run["kind"],
                    _utc(run["computed_at"]),
                    run["baseline_method"],
                    flag,
                    _utc(i["interval_start"]),
                    _utc(i["interval_end"]),
                    i["local_start"],
                    i["baseline_kw"],
                    i["metered_kw"],
                    red,
                    i["target_kw"],
                    i["performance_pct"],
                    i["coverage_pct"],
                    None if red is None else red * hours,
                ]
            )
    return out
