"""Operator controls of DR events (DR-9): timeline, retry failed restores, cancel, opt a facility out.

Operator role: sees and acts only on the facilities of an event that are in their scope (their
tenant's); another tenant's facility of a shared event answers 404 like one that does not exist.
Cancelling a whole event needs the platform-level role ``platform_admin``, which sees every
facility of every event (decision 0420).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from api import examples as ex
from api.auth import Principal, require_role
from api.deps import db
from api.errors import COMMON_RESPONSES, ApiError, not_found
from api.examples import ok
from dr_coordinator.adapters.inputs import facility_infos
from dr_coordinator.adapters.store import handle_in, with_retry
from dr_coordinator.domain.commands import Cancel, OptOut, ReleaseHold
from dr_coordinator.domain.planner import Strategy, plan_facility
from dr_coordinator.domain.saga import IllegalTransitionError
from dr_coordinator.entrypoints.planning import DEFAULT_LOAD_FACTOR
from energy.observability import tracing
from schemas.api import Role
from schemas.readings import ID_PATTERN

router = APIRouter(prefix="/api/dr/operator", tags=["demand response operator"], responses=COMMON_RESPONSES)
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR, Role.PLATFORM_ADMIN))]
PlatformAdmin = Annotated[Principal, Depends(require_role(Role.PLATFORM_ADMIN))]
FacilityId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]


class TimelineEntry(BaseModel):
    seq: int
    occurred_at: datetime
    facility_id: str | None
    entry_type: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class FacilityStatus(BaseModel):
    facility_id: str
    state: str
    strategy: str | None
    target_kw: float | None
    baseline_kw: float | None
    achieved_kw: float | None
    commands: dict[str, int] = Field(description="BMS commands by status")


class Timeline(BaseModel):
    dr_event_id: uuid.UUID
    utility_id: str
    utility_event_id: str
    state: str
    strategy: str | None
    start: datetime
    end: datetime
    version: int
    facilities: list[FacilityStatus]
    entries: list[TimelineEntry]
    failed_commands: list[dict[str, Any]]


class OperatorResult(BaseModel):
    dr_event_id: uuid.UUID
    state: str
    detail: str
    count: int = 0


def _platform(principal: Principal) -> bool:
    return principal.role == Role.PLATFORM_ADMIN


def _scope(principal: Principal) -> list[str] | None:
    """The facility ids the principal may see in an event; None: every one (platform role)."""
    return None if _platform(principal) else sorted(principal.facility_ids)


async def _event_in_scope(conn: Any, principal: Principal, dr_event_id: uuid.UUID) -> Any:
    row = await conn.fetchrow(
        """SELECT e.* FROM dr_events e WHERE e.dr_event_id = $1 AND ($4 OR EXISTS (
               SELECT 1 FROM dr_event_facilities f JOIN facilities fa USING (facility_id)
               WHERE f.dr_event_id = e.dr_event_id AND f.facility_id = ANY($2::text[]) AND fa.tenant_id = $3))""",
        dr_event_id,
        sorted(principal.facility_ids),
        principal.tenant_id,
        _platform(principal),
    )
    if row is None:
        raise not_found("DR event", str(dr_event_id))
    return row


async def _facility_in_scope(conn: Any, principal: Principal, dr_event_id: uuid.UUID, facility_id: str) -> None:
    """404 for a facility outside the caller's scope, whether or not it is part of the event."""
    await _event_in_scope(conn, principal, dr_event_id)
    if not _platform(principal) and facility_id not in principal.facility_ids:
        raise not_found("facility", facility_id)
    member = await conn.fetchval(
        "SELECT 1 FROM dr_event_facilities WHERE dr_event_id = $1 AND facility_id = $2", dr_event_id, facility_id
    )
    if member is None:
        raise not_found("facility in event", facility_id)


def _visible_detail(detail: dict[str, Any], scope: list[str] | None) -> dict[str, Any]:
    """Event-level log entries may list facilities: an operator sees only theirs."""
    facilities = detail.get("facilities")
    if scope is None or not isinstance(facilities, list):
        return detail
    allowed = set(scope)
    return {**detail, "facilities": [f for f in facilities if f in allowed]}


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {"value": loaded}
    return dict(value or {})


@router.get(
    "/events/{dr_event_id}/timeline",
    response_model=Timeline,
    summary="Every transition, command and report",
    responses=ok(ex.OPERATOR_TIMELINE),
)
async def timeline(dr_event_id: uuid.UUID, request: Request, principal: Operator) -> Timeline:
    scope = _scope(principal)
    async with db(request) as conn:
        ev = await _event_in_scope(conn, principal, dr_event_id)
        facs = await conn.fetch(
            """SELECT f.facility_id, f.state, f.strategy, f.target_kw, f.baseline_kw, f.achieved_kw,
                      COALESCE((SELECT jsonb_object_agg(status, n) FROM (
                          SELECT status, count(*) AS n FROM bms_commands c
                          WHERE c.dr_event_id = f.dr_event_id AND c.facility_id = f.facility_id GROUP BY status) s),
                        '{}'::jsonb) AS commands
               FROM dr_event_facilities f
               WHERE f.dr_event_id = $1 AND ($2::text[] IS NULL OR f.facility_id = ANY($2::text[]))
               ORDER BY f.facility_id""",
            dr_event_id,
            scope,
        )
        log = await conn.fetch(
            """SELECT seq, occurred_at, facility_id, entry_type, from_state, to_state, detail FROM dr_event_log
               WHERE dr_event_id = $1 AND (facility_id IS NULL OR $2::text[] IS NULL OR facility_id = ANY($2::text[]))
               ORDER BY seq LIMIT 5000""",
            dr_event_id,
            scope,
        )
        failed = await conn.fetch(
            """SELECT idempotency_key, facility_id, zone_id, action, attempts, last_error FROM bms_commands
               WHERE dr_event_id = $1 AND status = 'failed'
                 AND ($2::text[] IS NULL OR facility_id = ANY($2::text[]))
               ORDER BY facility_id, zone_id""",
            dr_event_id,
            scope,
        )
    return Timeline(
        dr_event_id=ev["dr_event_id"],
        utility_id=ev["utility_id"],
        utility_event_id=ev["utility_event_id"],
        state=ev["state"],
        strategy=ev["strategy"],
        start=ev["start_at"],
        end=ev["end_at"],
        version=ev["version"],
        facilities=[
            FacilityStatus(
                facility_id=f["facility_id"],
                state=f["state"],
                strategy=f["strategy"],
                target_kw=f["target_kw"],
                baseline_kw=f["baseline_kw"],
                achieved_kw=f["achieved_kw"],
                commands={k: int(v) for k, v in _json(f["commands"]).items()},
            )
            for f in facs
        ],
        entries=[TimelineEntry(**{**dict(r), "detail": _visible_detail(_json(r["detail"]), scope)}) for r in log],
        failed_commands=[dict(r) for r in failed],
    )


async def _apply(
    request: Request, principal: Principal, dr_event_id: uuid.UUID, message: Any, what: str
) -> OperatorResult:
    async with db(request) as conn:
        await _event_in_scope(conn, principal, dr_event_id)

        async def once() -> str:
            async with conn.transaction():
                decision = await handle_in(conn, dr_event_id, message, datetime.now(UTC))
                await conn.execute(
                    """INSERT INTO dr_event_log (dr_event_id, entry_type, detail, trace_id)
                       VALUES ($1, 'operator_action', $2::jsonb, $3)""",
                    dr_event_id,
                    json.dumps({"action": what, "principal_id": str(principal.principal_id)}),
                    tracing.current_or_new().trace_id,
                )
                return decision.saga.state.value

        try:
            state = await with_retry(once)
        except IllegalTransitionError as exc:
            raise ApiError(409, "illegal_transition", str(exc)) from None
    return OperatorResult(dr_event_id=dr_event_id, state=state, detail=what)


@router.post(
    "/events/{dr_event_id}/cancel",
    response_model=OperatorResult,
    summary="Cancel the whole event, every tenant's buildings restored (platform_admin; operators opt out theirs)",
    responses=ok(ex.OPERATOR_RESULT),
)
async def cancel(dr_event_id: uuid.UUID, request: Request, principal: PlatformAdmin) -> OperatorResult:
    return await _apply(request, principal, dr_event_id, Cancel("cancelled by operator"), "cancel")


@router.post(
    "/events/{dr_event_id}/facilities/{facility_id}/opt-out",
    response_model=OperatorResult,
    summary="Take one facility out of the event; it is restored if already shedding",
    responses=ok(ex.OPERATOR_RESULT),
)
async def opt_out(
    dr_event_id: uuid.UUID, facility_id: FacilityId, request: Request, principal: Operator
) -> OperatorResult:
    async with db(request) as conn:
        await _facility_in_scope(conn, principal, dr_event_id, facility_id)
    return await _apply(request, principal, dr_event_id, OptOut(facility_id), f"opt_out {facility_id}")


@router.post(
    "/events/{dr_event_id}/facilities/{facility_id}/release-hold",
    response_model=OperatorResult,
    summary="Override the forecast guardrail's hold: dispatch the fixed-percentage fallback for this facility",
    responses=ok(ex.OPERATOR_RESULT),
)
async def release_hold(
    dr_event_id: uuid.UUID, facility_id: FacilityId, request: Request, principal: Operator
) -> OperatorResult:
    async with db(request) as conn:
        await _facility_in_scope(conn, principal, dr_event_id, facility_id)
        row = await conn.fetchrow(
            "SELECT target_kw FROM dr_event_facilities WHERE dr_event_id = $1 AND facility_id = $2",
            dr_event_id,
            facility_id,
        )
        if row is None:
            raise not_found("facility in event", facility_id)
        info = (await facility_infos(conn, [facility_id]))[facility_id]
    dr = request.app.state.settings.dr
    plan = plan_facility(
        facility_id,
        info.zones,
        target_kw=row["target_kw"] or 0.0,
        expected_kw=info.peak_kw * DEFAULT_LOAD_FACTOR,
        peak_kw=info.peak_kw,
        strategy=Strategy.FIXED_PERCENTAGE,
        fallback_fraction=dr.fallback_shed_fraction,
    )
    return await _apply(request, principal, dr_event_id, ReleaseHold(plan), f"release_hold {facility_id}")


@router.post(
    "/events/{dr_event_id}/retry-failed",
    response_model=OperatorResult,
    summary="Run failed restore commands again (same idempotency keys)",
    responses=ok(ex.OPERATOR_RESULT),
)
async def retry_failed(dr_event_id: uuid.UUID, request: Request, principal: Operator) -> OperatorResult:
    async with db(request) as conn:
        ev = await _event_in_scope(conn, principal, dr_event_id)
        async with conn.transaction():
            keys = await conn.fetch(
                """UPDATE bms_commands SET status = 'pending', attempts = 0, not_before = now(), updated_at = now(),
                       saga_applied_at = NULL
                   WHERE dr_event_id = $1 AND status = 'failed' AND action = 'restore'
                     AND ($2::text[] IS NULL OR facility_id = ANY($2::text[])) RETURNING idempotency_key""",
                dr_event_id,
                _scope(principal),
            )
            await conn.execute(
                """INSERT INTO dr_event_log (dr_event_id, entry_type, detail, trace_id)
                   VALUES ($1, 'operator_action', $2::jsonb, $3)""",
                dr_event_id,
                json.dumps({"action": "retry_failed", "commands": [k["idempotency_key"] for k in keys][:200]}),
                tracing.current_or_new().trace_id,
            )
    return OperatorResult(
        dr_event_id=dr_event_id, state=ev["state"], detail="failed restore commands queued again", count=len(keys)
    )
