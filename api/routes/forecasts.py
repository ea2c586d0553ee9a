"""Load forecasts: the latest run's metadata and the p10/p50/p90 band (newest run wins per target time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request

from api import examples as ex
from api.auth import Principal, ensure_facility_access, require_principal
from api.deps import FacilityIdPath, check_range, db
from api.errors import COMMON_RESPONSES
from api.examples import ok
from schemas.api import FacilityForecast, ForecastPoint, ForecastRun

router = APIRouter(prefix="/api/facilities", tags=["forecasts"], responses=COMMON_RESPONSES)

MAX_POINTS = 5000


@router.get(
    "/{facility_id}/forecast",
    response_model=FacilityForecast,
    summary="Forecast band of a facility over [start, end) (default: the last 6 h to the next 24 h)",
    responses=ok(ex.FORECAST),
)
async def forecast(
    facility_id: FacilityIdPath,
    request: Request,
    start: datetime | None = None,
    end: datetime | None = None,
    principal: Principal = Depends(require_principal),
) -> FacilityForecast:
    ensure_facility_access(principal, facility_id)
    now = datetime.now(UTC)
    start, end = check_range(start or now - timedelta(hours=6), end or now + timedelta(hours=24))
    async with db(request) as conn:
        run = await conn.fetchrow(
            """SELECT run_at, model_version, quality, seasonal_naive, weather_available, sensor_coverage, method
               FROM forecast_runs WHERE facility_id = $1 ORDER BY run_at DESC LIMIT 1""",
            facility_id,
        )
        rows = await conn.fetch(
            """SELECT target_ts, p10_kw, p50_kw, p90_kw, run_at, quality FROM load_forecasts
               WHERE facility_id = $1 AND target_ts >= $2 AND target_ts < $3 ORDER BY target_ts LIMIT $4""",
            facility_id,
            start,
            end,
            MAX_POINTS,
        )
    return FacilityForecast(
        facility_id=facility_id,
        latest_run=ForecastRun(**dict(run)) if run else None,
        points=[ForecastPoint(**dict(r)) for r in rows],
    )
