"""OpenADR 3 objects the utility's VTN sends to our webhook (the subset the DR saga uses).

Liberal in what we accept: unknown fields are ignored (VTNs add createdDateTime, objectType,
payloadDescriptors...), and :func:`normalise_keys` turns snake_case keys into the spec's
camelCase before validation. Timestamps without an offset are read as UTC by the webhook,
which says so in its response.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PAYLOAD_TYPES = ("IMPORT_CAPACITY_LIMIT", "LOAD_SHED_DELTA_AVAILABLE", "SIMPLE")
TARGET_TYPES_FACILITY = ("RESOURCE_NAME", "FACILITY_ID", "FACILITY_NAME", "VEN_NAME_FACILITY")


class LenientModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class IntervalPeriod(LenientModel):
    start: datetime
    duration: timedelta = Field(description="ISO 8601 duration, e.g. PT1H")
    randomizeStart: timedelta | None = None


class ValuesMap(LenientModel):
    type: str = Field(min_length=1, max_length=128)
    values: list[Any] = Field(default_factory=list, max_length=10_000)


class Interval(LenientModel):
    id: int = 0
    intervalPeriod: IntervalPeriod | None = None
    payloads: list[ValuesMap] = Field(default_factory=list, max_length=100)


Target = ValuesMap | Annotated[str, StringConstraints(min_length=1, max_length=128)]


class OadrEvent(LenientModel):
    """Targets: OpenADR 3.1 plain strings or 3.0.1 valuesMaps (both accepted, resolved by
    :mod:`dr_coordinator.domain.targeting`). ``createdDateTime`` is kept as sent: with the id it
    names the event even when a restarted VTN reuses ids."""

    id: str = Field(min_length=1, max_length=128)
    programID: str = Field(min_length=1, max_length=128)
    eventName: str | None = Field(default=None, max_length=256)
    priority: int | None = Field(default=None, ge=0, le=1000)
    createdDateTime: str | None = Field(default=None, max_length=64)
    modificationDateTime: str | None = Field(default=None, max_length=64)
    targets: list[Target] | None = Field(default=None, max_length=100)
    intervalPeriod: IntervalPeriod | None = None
    intervals: list[Interval] = Field(min_length=1, max_length=1000)


class OadrNotification(LenientModel):
    objectType: Literal["EVENT", "PROGRAM", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"]
    operation: Literal["GET", "POST", "PUT", "DELETE", "READ", "CREATE", "UPDATE"]
    object: dict[str, Any]
    targets: list[Target] | None = None

    @property
    def verb(self) -> str:
        """OpenADR 3.0 names HTTP verbs, 3.1 CRUD operations; both map to POST / PUT / DELETE / GET."""
        return {"CREATE": "POST", "UPDATE": "PUT", "READ": "GET"}.get(self.operation, self.operation)


def _camel(key: str) -> str:
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    out = head + "".join(p[:1].upper() + p[1:] for p in rest)
    # The spec spells identifiers with a capital "ID" (programID).
    return out[:-2] + "ID" if out.endswith("Id") else out


def normalise_keys(value: Any) -> Any:
    """snake_case keys -> camelCase, recursively (``program_id`` -> ``programID``)."""
    if isinstance(value, dict):
        return {(_camel(k) if isinstance(k, str) else k): normalise_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_keys(v) for v in value]
    return value
