"""Current load (cached, API-1) and readings or rollups over a range."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from api import examples as ex
from api.auth import Principal, ensure_facility_access, require_principal
from api.cache import CacheResult, CurrentCache
from api.deps import FacilityIdPath, check_range, db
from api.errors import COMMON_RESPONSES, UnavailableError, not_found
from api.examples import ok
from api.timeseries import RAW_FIELDS, fetch_range, from_ns
from schemas.api import CurrentLoad, Granularity, ReadingSeries, Rollup
from schemas.readings import ID_PATTERN

router = APIRouter(prefix="/api/facilities", tags=["readings"], responses=COMMON_RESPONSES)

STALENESS_HEADER = "X-Data-Staleness-Seconds"


def current_headers(result: CacheResult) -> dict[str, str]:
    headers = {
        "X-Cache": result.outcome,
        STALENESS_HEADER: f"{result.age_s:.1f}",
        "Cache-Control": "no-store",
    }
    if result.stale:
        headers["Warning"] = '110 energy-api "Response is Stale: InfluxDB unavailable, last known value"'
    return headers


def current_body(result: CacheResult) -> CurrentLoad:
    v = result.value
    return CurrentLoad(
        facility_id=v["facility_id"],
        as_of=v["as_of"],
        current_kw=v["current_kw"],
        meters_reporting=v["meters_reporting"],
        rollup_1m=Rollup(**v["rollup_1m"]) if v.get("rollup_1m") else None,
        fetched_at=v["fetched_at"],
        stale=result.stale,
        staleness_s=round(result.age_s, 3),
    )


_PER_REQUEST = {"stale", "staleness_s"}


def current_json(result: CacheResult) -> bytes:
    """The :class:`CurrentLoad` answer as JSON. The cached value is validated and rendered once (kept in the
    cache entry's memo, so it lives exactly as long as that value); each request appends only what depends
    on the moment: ``stale`` and ``staleness_s``, the model's last two fields, in the model's order."""
    head = result.memo.get("current_json")
    if head is None:
        rendered = current_body(result).model_dump_json(exclude=_PER_REQUEST).encode()
        head = result.memo["current_json"] = rendered[:-1]  # without the closing brace
    stale = b"true" if result.stale else b"false"
    # repr of a finite float rounded to 3 places is a JSON number (no exponent: 0.0 or >= 0.001)
    return b'%s,"stale":%s,"staleness_s":%s}' % (head, stale, repr(round(result.age_s, 3)).encode())


@router.get(
    "/{facility_id}/current",
    response_model=CurrentLoad,
    summary="Current load: sum of each meter's latest reading and the latest 1-minute rollup",
    description=(
        "Served from a 10 s cache. Headers: `X-Cache` (hit, revalidating, miss, fallback), "
        "`X-Data-Staleness-Seconds` (age of the value), and `Warning: 110` when InfluxDB is "
        "unavailable and the last known value is served. 503 when nothing is known."
    ),
    responses={
        200: {
            "description": "The current load",
            "content": {"application/json": {"example": ex.CURRENT}},
            "headers": {
                "X-Cache": {
                    "description": "hit (Redis), memory (this process), revalidating, miss, fallback",
                    "schema": {"type": "string", "enum": ["hit", "memory", "revalidating", "miss", "fallback"]},
                },
                STALENESS_HEADER: {"description": "Age of the value in seconds", "schema": {"type": "string"}},
                "Warning": {
                    "description": "110 when the last known value is served because InfluxDB is unavailable",
                    "schema": {"type": "string"},
                },
            },
        }
    },
)
async def current(
    facility_id: FacilityIdPath,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> Response:
    ensure_facility_access(principal, facility_id)
    cache: CurrentCache = request.app.state.current_cache
    result = await cache.get(facility_id)
    # The JSON rendered from the cached value (validated once per value): returning a Response spares FastAPI
    # validating and serialising the model on every request; response_model above keeps the OpenAPI schema.
    return Response(
        content=current_json(result),
        media_type="application/json",
        headers=current_headers(result),
    )


def rollup_dict(r: dict[str, Any], window: str) -> dict[str, Any]:
    return {
        "window_start": from_ns(int(r["time"])),
        "window": window,
        **{f: r.get(f) for f in ("avg_kw", "min_kw", "max_kw", "energy_kwh", "sample_count", "coverage")},
    }


def raw_dict(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "ts": from_ns(int(r["time"])),
        "meter_id": str(r.get("meter_id") or ""),
        **{f: r.get(f) for f in RAW_FIELDS},
    }


@router.get(
    "/{facility_id}/readings",
    response_model=ReadingSeries,
    summary="Raw readings or rollups (1m, 15m, 1h) of a facility or one of its meters over [start, end)",
    responses=ok(ex.READINGS),
)
async def readings(
    facility_id: FacilityIdPath,
    request: Request,
    start: datetime,
    end: datetime,
    granularity: Granularity = Granularity.ONE_MINUTE,
    meter_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    principal: Principal = Depends(require_principal),
) -> Response:
    ensure_facility_access(principal, facility_id)
    start, end = check_range(start, end)
    state = request.app.state
    if meter_id is not None:
        async with db(request) as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM meters WHERE meter_id = $1 AND facility_id = $2", meter_id, facility_id
            )
        if not found:
            raise not_found("meter", meter_id)

    async def render() -> bytes:
        timeout_s = state.settings.api.range_query_timeout_s
        try:
            rows = await fetch_range(
                state.influx,
                state.measurements,
                facility_id,
                meter_id,
                granularity,
                start,
                end,
                limit + 1,
                0,
                timeout_s,
            )
        except TimeoutError as exc:  # load shedding, named: 503 with Retry-After, like an open breaker
            raise UnavailableError("influxdb", f"the range query did not finish within {timeout_s:g} s") from exc
        truncated = len(rows) > limit
        rows = rows[:limit]
        is_raw = granularity is Granularity.RAW
        # One validation of the whole document (in pydantic-core) instead of one model per row, and the
        # JSON written here: returning a Response spares FastAPI a second validation of thousands of rows.
        series = ReadingSeries.model_validate(
            {
                "facility_id": facility_id,
                "meter_id": meter_id,
                "granularity": granularity,
                "start": start,
                "end": end,
                "limit": limit,
                "truncated": truncated,
                "raw": [raw_dict(r) for r in rows] if is_raw else [],
                "rollups": [] if is_raw else [rollup_dict(r, granularity.value) for r in rows],
            }
        )
        return series.model_dump_json().encode()

    key = (facility_id, meter_id, granularity.value, start, end, limit)
    content, hit = await state.range_cache.get(key, render)
    return Response(content=content, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"})
