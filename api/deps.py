"""Small helpers shared by the routes: validated id parameters, PostgreSQL access, time ranges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query, Request

from api.errors import ApiError
from schemas.readings import ID_PATTERN

FacilityIdPath = Annotated[
    str,
    Path(
        pattern=ID_PATTERN, max_length=64, description="Facility id", openapi_examples={"office": {"value": "fac-001"}}
    ),
]
MeterIdPath = Annotated[
    str,
    Path(
        pattern=ID_PATTERN, max_length=64, description="Meter id", openapi_examples={"main": {"value": "mtr-001-main"}}
    ),
]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Rows to skip")]

# Dates InfluxDB and PostgreSQL both represent; anything outside is a client error, not a 500.
MIN_TS = datetime(1970, 1, 2, tzinfo=UTC)
MAX_TS = datetime(2200, 1, 1, tzinfo=UTC)


@asynccontextmanager
async def db(request: Request) -> AsyncIterator[Any]:
    """A pooled PostgreSQL connection; waiting for one is bounded like every other call."""
    settings = request.app.state.settings
    async with request.app.state.pool.acquire(timeout=settings.postgres.connect_timeout_s) as conn:
        yield conn


def check_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Both aware, in range, start before end; else 422."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ApiError(422, "validation_error", "start and end need a UTC offset, e.g. 2026-01-01T00:00:00Z")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if not (MIN_TS <= start <= MAX_TS and MIN_TS <= end <= MAX_TS):
        raise ApiError(422, "validation_error", "start and end must lie between 1970-01-02 and 2200-01-01")
    if end <= start:
        raise ApiError(422, "validation_error", "end must be after start")
    return start, end
