"""Facilities and meters: list with filters and pagination, detail, create/update (operators),
soft-delete of meters. Every query is limited to the caller's facilities."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request, Response

from api import examples as ex
from api.auth import Principal, ensure_facility_access, require_principal, require_role
from api.deps import FacilityIdPath, Limit, MeterIdPath, Offset, db
from api.errors import COMMON_RESPONSES, ApiError, error_responses, not_found
from api.examples import ok, request_body
from schemas.api import (
    PRINTABLE,
    Facility,
    FacilityCreate,
    FacilityKind,
    FacilityUpdate,
    Meter,
    MeterCreate,
    MeterType,
    MeterUpdate,
    Page,
)

router = APIRouter(prefix="/api/facilities", tags=["facilities"], responses=COMMON_RESPONSES)

_FACILITY_COLUMNS = """f.facility_id, f.tenant_id, f.name, f.kind, f.timezone, f.latitude, f.longitude,
    f.criticality_tier, f.peak_kw, f.active, f.created_at, f.updated_at,
    (SELECT count(*) FROM meters m WHERE m.facility_id = f.facility_id AND m.deleted_at IS NULL) AS meter_count"""
_METER_COLUMNS = "meter_id, facility_id, meter_type, rated_kw, nominal_voltage_v, created_at, updated_at, deleted_at"


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def _facility(conn: Any, principal: Principal, facility_id: str) -> Facility:
    ensure_facility_access(principal, facility_id)
    row = await conn.fetchrow(
        f"SELECT {_FACILITY_COLUMNS} FROM facilities f WHERE f.facility_id = $1 AND f.tenant_id = $2",
        facility_id,
        principal.tenant_id,
    )
    if row is None:
        raise not_found("facility", facility_id)
    return Facility(**dict(row))


@router.get(
    "", response_model=Page[Facility], summary="Facilities the caller may see", responses=ok(ex.page([ex.FACILITY]))
)
async def list_facilities(
    request: Request,
    principal: Principal = Depends(require_principal),
    kind: FacilityKind | None = None,
    active: bool | None = None,
    criticality_tier: Annotated[int | None, Query(ge=1, le=4)] = None,
    q: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE, description="Substring of the name")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[Facility]:
    where = ["f.facility_id = ANY($1::text[])", "f.tenant_id = $2"]
    args: list[Any] = [sorted(principal.facility_ids), principal.tenant_id]
    for column, value in (("f.kind", kind), ("f.active", active), ("f.criticality_tier", criticality_tier)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if q:
        args.append(_like(q))
        where.append(f"f.name ILIKE ${len(args)}")
    clause = " AND ".join(where)
    async with db(request) as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM facilities f WHERE {clause}", *args)
        rows = await conn.fetch(
            f"SELECT {_FACILITY_COLUMNS} FROM facilities f WHERE {clause} "
            f"ORDER BY f.facility_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            *args,
            limit,
            offset,
        )
    return Page[Facility](items=[Facility(**dict(r)) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{facility_id}", response_model=Facility, summary="One facility", responses=ok(ex.FACILITY))
async def get_facility(
    facility_id: FacilityIdPath, request: Request, principal: Principal = Depends(require_principal)
) -> Facility:
    async with db(request) as conn:
        return await _facility(conn, principal, facility_id)


@router.post(
    "",
    response_model=Facility,
    status_code=201,
    summary="Register a facility (operators); it joins the caller's scope",
    responses={**error_responses({409: "facility_id already taken"}), **ok(ex.FACILITY, 201)},
    openapi_extra=request_body(ex.FACILITY_CREATE),
)
async def create_facility(
    body: FacilityCreate, request: Request, principal: Principal = Depends(require_role("operator"))
) -> Facility:
    async with db(request) as conn, conn.transaction():
        try:
            await conn.execute(
                """INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude,
                                           criticality_tier, peak_kw)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                body.facility_id,
                principal.tenant_id,
                body.name,
                body.kind,
                body.timezone,
                body.latitude,
                body.longitude,
                body.criticality_tier,
                body.peak_kw,
            )
        except asyncpg.UniqueViolationError:
            raise ApiError(409, "conflict", "facility_id is already taken", {"facility_id": body.facility_id}) from None
        await conn.execute(
            "INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            principal.principal_id,
            body.facility_id,
        )
    request.app.state.principal_cache.clear()
    scoped = Principal(
        principal.principal_id,
        principal.tenant_id,
        principal.role,
        principal.facility_ids | {body.facility_id},
        principal.kind,
    )
    async with db(request) as conn:
        return await _facility(conn, scoped, body.facility_id)


_FACILITY_UPDATABLE = ("name", "kind", "timezone", "criticality_tier", "peak_kw", "active")


@router.patch(
    "/{facility_id}",
    response_model=Facility,
    summary="Change a facility (operators)",
    responses=ok(ex.FACILITY),
    openapi_extra=request_body(ex.FACILITY_UPDATE),
)
async def update_facility(
    facility_id: FacilityIdPath,
    body: FacilityUpdate,
    request: Request,
    principal: Principal = Depends(require_role("operator")),
) -> Facility:
    ensure_facility_access(principal, facility_id)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if k in _FACILITY_UPDATABLE}
    changes = {k: v for k, v in changes.items() if v is not None or k == "peak_kw"}
    async with db(request) as conn:
        if changes:
            sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=3))
            status = await conn.execute(
                f"UPDATE facilities SET {sets}, updated_at = now() WHERE facility_id = $1 AND tenant_id = $2",
                facility_id,
                principal.tenant_id,
                *changes.values(),
            )
            if status.endswith(" 0"):
                raise not_found("facility", facility_id)
        return await _facility(conn, principal, facility_id)


# --- meters -------------------------------------------------------------------------------


@router.get(
    "/{facility_id}/meters",
    response_model=Page[Meter],
    summary="Meters of a facility",
    responses=ok(ex.page([ex.METER])),
)
async def list_meters(
    facility_id: FacilityIdPath,
    request: Request,
    principal: Principal = Depends(require_principal),
    meter_type: MeterType | None = None,
    include_deleted: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[Meter]:
    ensure_facility_access(principal, facility_id)
    where = ["facility_id = $1"]
    args: list[Any] = [facility_id]
    if not include_deleted:
        where.append("deleted_at IS NULL")
    if meter_type is not None:
        args.append(meter_type)
        where.append(f"meter_type = ${len(args)}")
    clause = " AND ".join(where)
    async with db(request) as conn:
        await _facility(conn, principal, facility_id)
        total = await conn.fetchval(f"SELECT count(*) FROM meters WHERE {clause}", *args)
        rows = await conn.fetch(
            f"SELECT {_METER_COLUMNS} FROM meters WHERE {clause} "
            f"ORDER BY meter_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            *args,
            limit,
            offset,
        )
    return Page[Meter](items=[Meter(**dict(r)) for r in rows], total=total, limit=limit, offset=offset)


async def _meter(conn: Any, facility_id: str, meter_id: str) -> Meter:
    row = await conn.fetchrow(
        f"SELECT {_METER_COLUMNS} FROM meters WHERE facility_id = $1 AND meter_id = $2", facility_id, meter_id
    )
    if row is None:
        raise not_found("meter", meter_id)
    return Meter(**dict(row))


@router.get("/{facility_id}/meters/{meter_id}", response_model=Meter, summary="One meter", responses=ok(ex.METER))
async def get_meter(
    facility_id: FacilityIdPath,
    meter_id: MeterIdPath,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> Meter:
    ensure_facility_access(principal, facility_id)
    async with db(request) as conn:
        await _facility(conn, principal, facility_id)
        return await _meter(conn, facility_id, meter_id)


@router.post(
    "/{facility_id}/meters",
    response_model=Meter,
    status_code=201,
    summary="Add a meter (operators)",
    responses={**error_responses({409: "meter_id already taken"}), **ok(ex.METER, 201)},
    openapi_extra=request_body(ex.METER_CREATE),
)
async def create_meter(
    facility_id: FacilityIdPath,
    body: MeterCreate,
    request: Request,
    principal: Principal = Depends(require_role("operator")),
) -> Meter:
    ensure_facility_access(principal, facility_id)
    async with db(request) as conn:
        await _facility(conn, principal, facility_id)
        try:
            await conn.execute(
                """INSERT INTO meters (meter_id, facility_id, meter_type, rated_kw, nominal_voltage_v)
                   VALUES ($1, $2, $3, $4, $5)""",
                body.meter_id,
                facility_id,
                body.meter_type,
                body.rated_kw,
                body.nominal_voltage_v,
            )
        except asyncpg.UniqueViolationError:
            raise ApiError(409, "conflict", "meter_id is already taken", {"meter_id": body.meter_id}) from None
        return await _meter(conn, facility_id, body.meter_id)


@router.patch(
    "/{facility_id}/meters/{meter_id}",
    response_model=Meter,
    summary="Change a meter (operators)",
    responses=ok(ex.METER),
    openapi_extra=request_body(ex.METER_UPDATE),
)
async def update_meter(
    facility_id: FacilityIdPath,
    meter_id: MeterIdPath,
    body: MeterUpdate,
    request: Request,
    principal: Principal = Depends(require_role("operator")),
) -> Meter:
    ensure_facility_access(principal, facility_id)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    async with db(request) as conn:
        await _facility(conn, principal, facility_id)
        if changes:
            sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=3))
            status = await conn.execute(
                f"UPDATE meters SET {sets}, updated_at = now() "
                "WHERE facility_id = $1 AND meter_id = $2 AND deleted_at IS NULL",
                facility_id,
                meter_id,
                *changes.values(),
            )
            if status.endswith(" 0"):
                raise not_found("meter", meter_id)
        return await _meter(conn, facility_id, meter_id)


@router.delete(
    "/{facility_id}/meters/{meter_id}",
    status_code=204,
    response_class=Response,
    summary="Retire a meter (operators): soft delete, its history stays",
)
async def delete_meter(
    facility_id: FacilityIdPath,
    meter_id: MeterIdPath,
    request: Request,
    principal: Principal = Depends(require_role("operator")),
) -> Response:
    ensure_facility_access(principal, facility_id)
    async with db(request) as conn:
        await _facility(conn, principal, facility_id)
        await _meter(conn, facility_id, meter_id)
        await conn.execute(
            "UPDATE meters SET deleted_at = now(), updated_at = now() "
            "WHERE facility_id = $1 AND meter_id = $2 AND deleted_at IS NULL",
            facility_id,
            meter_id,
        )
    return Response(status_code=204)
