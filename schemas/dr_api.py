"""The platform's own JSON API for utilities' DR events (simpler than OpenADR 3) and its answers."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.readings import ID_PATTERN


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DrEventRequest(_Lenient):
    """POST /api/utility/{utility_id}/events"""

    event_id: str = Field(min_length=1, max_length=128, description="The utility's id of the event")
    program_id: str | None = Field(default=None, max_length=128)
    facilities: list[str] | None = Field(
        default=None, min_length=1, max_length=10_000, description="Facility ids; omitted = every enrolled facility"
    )
    start: datetime
    duration_s: float = Field(gt=0, allow_inf_nan=False)
    target_kw: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="kW to shed in total")
    level: int | None = Field(default=None, ge=0, le=10, description="OpenADR SIMPLE level")
    priority: int = Field(default=0, ge=0, le=1000)

    @model_validator(mode="after")
    def _ask(self) -> DrEventRequest:
        if self.target_kw is None and self.level is None:
            raise ValueError("give target_kw or level")
        for f in self.facilities or []:
            import re

            if not re.match(ID_PATTERN, f):
                raise ValueError(f"invalid facility id {f[:70]!r}")
        return self


class DrEventModifyRequest(_Lenient):
    """PUT /api/utility/{utility_id}/events/{event_id}"""

    start: datetime | None = None
    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    target_kw: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    level: int | None = Field(default=None, ge=0, le=10)


class DrEventAccepted(BaseModel):
    dr_event_id: uuid.UUID
    utility_event_id: str
    state: str
    duplicate: bool = False
    facilities: list[str] = Field(default_factory=list)
    start: datetime
    end: datetime
    notes: list[str] = Field(default_factory=list)


class WebhookError(BaseModel):
    detail: str
    field: str | None = None
