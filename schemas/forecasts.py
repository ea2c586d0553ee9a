"""Load forecast events."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import Envelope, EventModel
from schemas.readings import ID_PATTERN


class ForecastQuality(StrEnum):
    FULL = "full"
    DEGRADED_NO_WEATHER = "degraded_no_weather"
    DEGRADED_STALE_DATA = "degraded_stale_data"
    INSUFFICIENT_HISTORY = "insufficient_history"  # under the minimum history: seasonal naive of what there is


class ForecastPublished(EventModel):
    facility_id: str = Field(pattern=ID_PATTERN)
    run_at: AwareDatetime
    horizon_start: AwareDatetime
    horizon_end: AwareDatetime
    steps: int = Field(ge=1, le=10_000)
    model_version: str = Field(max_length=100)
    quality: ForecastQuality
    seasonal_naive: bool = False
    weather_available: bool
    sensor_coverage: float = Field(ge=0, le=1, allow_inf_nan=False)


class ForecastPublishedEvent(Envelope[ForecastPublished]):
    EVENT_TYPE: ClassVar[str] = "forecast.published"
    event_type: Literal["forecast.published"] = "forecast.published"
    schema_version: Literal[1] = 1
