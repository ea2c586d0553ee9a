"""Payloads of the REST API (requests and responses); the OpenAPI document is built from them.

Unlike event schemas these are not strict: JSON has no datetime type, so ISO-8601 strings
are parsed into aware datetimes. Unknown request fields are still rejected.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from schemas.forecasts import ForecastQuality
from schemas.readings import ID_PATTERN

T = TypeVar("T")

# Free text: anything printable (PostgreSQL text cannot hold NUL; control characters are never meant).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- errors -------------------------------------------------------------------------------


class ErrorDetail(ApiModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, validation_error")
    message: str = Field(description="Human-readable reason")
    details: Any = Field(default=None, description="Optional structured details (e.g. invalid fields)")


class ErrorBody(ApiModel):
    error: ErrorDetail


# --- auth ---------------------------------------------------------------------------------


class Role(StrEnum):
    OPERATOR = "operator"
    ANALYST = "analyst"
    FACILITY_MANAGER = "facility_manager"
    PLATFORM_ADMIN = "platform_admin"  # platform-level: every tenant of a DR event (decision 0420)


class TokenRequest(ApiModel):
    email: str = Field(min_length=3, max_length=254, pattern=PRINTABLE)
    password: str = Field(min_length=1, max_length=256, pattern=PRINTABLE)


class TokenResponse(ApiModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    role: Role
    tenant_id: str


class Me(ApiModel):
    principal_id: uuid.UUID
    kind: Literal["user", "api_key"]
    tenant_id: str
    role: Role
    facility_ids: list[str]


# --- pagination ---------------------------------------------------------------------------


class Page(ApiModel, Generic[T]):
    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


# --- facilities and meters ----------------------------------------------------------------

FacilityKind = Literal["office", "hospital", "data_centre", "retail", "school", "warehouse"]
MeterType = Literal["main", "submeter", "hvac", "lighting", "plug"]


def known_time_zone(name: str) -> str:
    """An IANA zone the zone database knows ("Europe/London"), never a guess or an offset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/London)") from exc
    return name


TimeZoneName = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_+/-]{0,63}$", examples=["Europe/London"]),
    AfterValidator(known_time_zone),
]


class Facility(ApiModel):
    facility_id: str
    tenant_id: str
    name: str
    kind: FacilityKind
    timezone: str
    latitude: float
    longitude: float
    criticality_tier: int
    peak_kw: float | None
    active: bool
    meter_count: int = Field(ge=0)
    created_at: datetime
    updated_at: datetime


class FacilityCreate(ApiModel):
    facility_id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE)
    kind: FacilityKind = "office"
    timezone: TimeZoneName
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    criticality_tier: int = Field(default=3, ge=1, le=4)
    peak_kw: float | None = Field(default=None, gt=0, le=1e7, allow_inf_nan=False)


class FacilityUpdate(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=PRINTABLE)
    kind: FacilityKind | None = None
    timezone: TimeZoneName | None = None
    criticality_tier: int | None = Field(default=None, ge=1, le=4)
    peak_kw: float | None = Field(default=None, gt=0, le=1e7, allow_inf_nan=False)
    active: bool | None = None


class Meter(ApiModel):
    meter_id: str
    facility_id: str
    meter_type: MeterType
    rated_kw: float
    nominal_voltage_v: float
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = Field(default=None, description="When the meter was retired; absent while in service")


class MeterCreate(ApiModel):
    meter_id: str = Field(pattern=ID_PATTERN)
    meter_type: MeterType = "submeter"
    rated_kw: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    nominal_voltage_v: float = Field(default=230.0, gt=0, le=1e5, allow_inf_nan=False)


class MeterUpdate(ApiModel):
    meter_type: MeterType | None = None
    rated_kw: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    nominal_voltage_v: float | None = Field(default=None, gt=0, le=1e5, allow_inf_nan=False)


# --- readings -----------------------------------------------------------------------------


class Granularity(StrEnum):
    RAW = "raw"
    ONE_MINUTE = "1m"
    FIFTEEN_MINUTES = "15m"
    ONE_HOUR = "1h"


class Rollup(ApiModel):
    window_start: datetime
    window: str
    avg_kw: float | None
    min_kw: float | None
    max_kw: float | None
    energy_kwh: float | None
    sample_count: int | None
    coverage: float | None


class CurrentLoad(ApiModel):
    facility_id: str
    as_of: datetime | None = Field(description="Time of the newest reading included in current_kw")
    current_kw: float | None = Field(description="Sum over meters of each meter's latest active power")
    meters_reporting: int = Field(ge=0)
    rollup_1m: Rollup | None = Field(description="The latest 1-minute facility rollup")
    fetched_at: datetime = Field(description="When the API read this from InfluxDB")
    stale: bool = Field(description="True when served from the last known value because InfluxDB is unavailable")
    staleness_s: float = Field(ge=0, description="Seconds since fetched_at")


class RawReadingRow(ApiModel):
    ts: datetime
    meter_id: str
    active_power_kw: float | None
    reactive_power_kvar: float | None
    voltage_v: float | None
    current_a: float | None
    energy_kwh: float | None


class ReadingSeries(ApiModel):
    facility_id: str
    meter_id: str | None
    granularity: Granularity
    start: datetime
    end: datetime
    limit: int
    truncated: bool = Field(description="True when more rows exist in the range than limit")
    raw: list[RawReadingRow] = Field(description="Rows when granularity is raw, else empty")
    rollups: list[Rollup] = Field(description="Rows when granularity is a rollup window, else empty")


# --- forecasts ----------------------------------------------------------------------------


class ForecastPoint(ApiModel):
    target_ts: datetime
    p10_kw: float
    p50_kw: float
    p90_kw: float
    run_at: datetime
    quality: ForecastQuality


class ForecastRun(ApiModel):
    run_at: datetime
    model_version: str
    quality: ForecastQuality
    seasonal_naive: bool
    weather_available: bool
    sensor_coverage: float
    method: str | None = None  # model | seasonal_naive_backtest | seasonal_naive_no_model | ... (see decision 0302)


class FacilityForecast(ApiModel):
    facility_id: str
    latest_run: ForecastRun | None
    points: list[ForecastPoint]


# --- demand response ----------------------------------------------------------------------


class DrEventFacility(ApiModel):
    facility_id: str
    state: str
    target_kw: float | None
    baseline_kw: float | None
    achieved_kw: float | None
    strategy: str | None
    updated_at: datetime


class DrEventSummary(ApiModel):
    dr_event_id: uuid.UUID
    utility_id: str
    utility_event_id: str
    program_id: str | None
    state: str
    start_at: datetime
    end_at: datetime
    target_kw: float | None
    priority: int
    facility_ids: list[str] = Field(description="Facilities of the event that the caller may see")
    created_at: datetime
    updated_at: datetime


class DrLogEntry(ApiModel):
    seq: int
    facility_id: str | None
    entry_type: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]
    occurred_at: datetime


class DrEventDetail(ApiModel):
    event: DrEventSummary
    facilities: list[DrEventFacility]
    timeline: list[DrLogEntry]


class DrSettlementInterval(ApiModel):
    """One settlement interval (kW are interval means; performance = reduction / target)."""

    start: datetime  # UTC
    end: datetime
    local_start: str  # ISO 8601 with the facility's UTC offset at that instant
    baseline_kw: float | None
    metered_kw: float | None
    reduction_kw: float | None
    target_kw: float | None
    performance_pct: float | None
    coverage_pct: float


class DrFacilitySettlement(ApiModel):
    facility_id: str
    timezone: str | None
    version: int
    kind: str  # preliminary | settlement | true_up
    computed_at: datetime
    versions: int  # how many versions exist (the latest is shown unless one was asked for)
    baseline_method: str
    baseline_frozen: bool
    baseline: dict[str, Any]  # days used, exclusions with reasons, adjustment, flag, fallback
    target_kw: float | None
    baseline_kwh: float | None
    metered_kwh: float | None
    reduction_kwh: float | None
    mean_reduction_kw: float | None
    performance_pct: float | None
    coverage_pct: float
    intervals: list[DrSettlementInterval]


class DrEventSettlement(ApiModel):
    dr_event_id: uuid.UUID
    start_at: datetime
    end_at: datetime
    facilities: list[DrFacilitySettlement]


# --- dashboard ----------------------------------------------------------------------------


class AlertKind(StrEnum):
    NO_DATA = "no_data"
    STALE_DATA = "stale_data"
    NEAR_PEAK = "near_peak"
    DR_ACTIVE = "dr_active"
    DATA_UNAVAILABLE = "data_unavailable"


class FleetFacility(ApiModel):
    facility_id: str
    name: str
    kind: str
    timezone: str = Field(description="IANA zone the dashboard shows this facility's times in")
    peak_kw: float | None
    current_kw: float | None
    as_of: datetime | None
    alerts: list[AlertKind]


class FleetOverview(ApiModel):
    generated_at: AwareDatetime
    facilities: list[FleetFacility]
    total_current_kw: float
