"""Request bodies the simulated VTN accepts, per OpenADR version (3.0.1 or 3.1), without I/O.

Written from the two specifications' OpenAPI documents (components/schemas); each rule and the
section it comes from is listed in ``docs/decisions/0410-strict-vtn-simulator.md``. The models
allow unknown properties (the specifications do not forbid extensions) but reject every property
whose type, enumeration, length or presence the version's schema fixes.

``lenient`` is the simulator's historical behaviour (either spelling accepted); ``3.0.1`` and
``3.1`` are strict.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Version = Literal["lenient", "3.0.1", "3.1"]
VERSIONS: tuple[Version, ...] = ("lenient", "3.0.1", "3.1")
BASE_PATHS: dict[Version, str] = {"lenient": "/openadr3/3.1.0", "3.0.1": "/openadr3/3.0.1", "3.1": "/openadr3/3.1.0"}

OBJECT_ID = r"^[a-zA-Z0-9_-]{1,128}$"
DURATION = r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
ObjectType = Literal["PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"]
HttpOperation = Literal["GET", "POST", "PUT", "DELETE"]  # 3.0.1 subscriptions and notifications
CrudOperation = Literal["READ", "CREATE", "UPDATE", "DELETE"]  # 3.1 subscriptions and notifications
Name128 = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Target31 = Annotated[str, StringConstraints(min_length=1, max_length=128)]  # 3.1: a target is a plain string
ObjectId = Annotated[str, StringConstraints(pattern=OBJECT_ID)]
_DURATION_RE = re.compile(DURATION)  # a look-ahead: pydantic's Rust regex cannot take it


def _duration(v: str) -> str:
    if not _DURATION_RE.match(v):
        raise ValueError("must be an ISO 8601 duration such as PT1H")
    return v


Duration = Annotated[str, AfterValidator(_duration)]
Uri = Annotated[str, StringConstraints(min_length=2, max_length=8000, pattern=r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ValuesMap(_Open):
    type: Name128
    values: list[Any]


class IntervalPeriod301(_Open):
    start: datetime  # 3.0.1 requires start
    duration: Duration | None = None
    randomizeStart: Duration | None = None

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("start must carry a timezone (RFC 3339 date-time)")
        return v


class IntervalPeriod31(_Open):
    start: datetime | None = None  # 3.1: every property optional
    duration: Duration | None = None
    randomizeStart: Duration | None = None

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("start must carry a timezone (RFC 3339 date-time)")
        return v


class Interval301(_Open):
    id: int = Field(ge=-(2**31), lt=2**31)
    intervalPeriod: IntervalPeriod301 | None = None
    payloads: list[ValuesMap]


class Interval31(Interval301):
    intervalPeriod: IntervalPeriod31 | None = None  # type: ignore[assignment]


class EventPayloadDescriptor301(_Open):
    objectType: Literal["EVENT_PAYLOAD_DESCRIPTOR"] | None = None
    payloadType: Name128


class EventPayloadDescriptor31(EventPayloadDescriptor301):
    objectType: Literal["EVENT_PAYLOAD_DESCRIPTOR"]  # type: ignore[assignment]  # required in 3.1


class ReportPayloadDescriptor301(_Open):
    objectType: Literal["REPORT_PAYLOAD_DESCRIPTOR"] | None = None
    payloadType: Name128
    confidence: int | None = Field(default=None, ge=0, le=100)


class ReportPayloadDescriptor31(ReportPayloadDescriptor301):
    objectType: Literal["REPORT_PAYLOAD_DESCRIPTOR"]  # type: ignore[assignment]  # required in 3.1


class ReportDescriptor301(_Open):
    payloadType: Name128
    targets: list[ValuesMap] | None = None


class ReportDescriptor31(_Open):
    payloadType: Name128
    targets: list[Target31] | None = None
    reportIntervals: Literal["INTERVALS", "SUB_INTERVALS", "OPEN_INTERVALS"] | None = None


# --- programs ----------------------------------------------------------------------------------


class Program301(_Open):
    objectType: Literal["PROGRAM"] | None = None
    programName: Name128
    targets: list[ValuesMap] | None = None


class Program31(_Open):
    programName: Name128
    targets: list[Target31] | None = None


# --- events ------------------------------------------------------------------------------------


class Event301(_Open):
    objectType: Literal["EVENT"] | None = None
    programID: ObjectId
    eventName: str | None = None
    priority: int | None = Field(default=None, ge=0)
    targets: list[ValuesMap] | None = None
    reportDescriptors: list[ReportDescriptor301] | None = None
    payloadDescriptors: list[EventPayloadDescriptor301] | None = None
    intervalPeriod: IntervalPeriod301 | None = None
    intervals: list[Interval301]  # required in 3.0.1


class Event31(_Open):
    programID: ObjectId
    eventName: str | None = None
    duration: Duration | None = None
    priority: int | None = Field(default=None, ge=0)
    targets: list[Target31] | None = None
    reportDescriptors: list[ReportDescriptor31] | None = None
    payloadDescriptors: list[EventPayloadDescriptor31] | None = None
    intervalPeriod: IntervalPeriod31 | None = None
    intervals: list[Interval31] | None = None


# --- VENs --------------------------------------------------------------------------------------


class Ven301(_Open):
    objectType: Literal["VEN"] | None = None
    venName: Name128
    targets: list[ValuesMap] | None = None
    attributes: list[ValuesMap] | None = None


class VenVenRequest31(_Open):
    """What a VEN sends to register itself in 3.1."""

    objectType: Literal["VEN_VEN_REQUEST"]
    venName: Name128
    attributes: list[ValuesMap] | None = None


class BlVenRequest31(_Open):
    """What the business logic (the utility) sends to create a VEN in 3.1."""

    objectType: Literal["BL_VEN_REQUEST"]
    clientID: Name128
    venName: Name128
    targets: list[Target31] | None = None
    attributes: list[ValuesMap] | None = None


# --- resources (3.1 schemas/resourceRequest: a oneOf) ---------------------------------------------


class BlResourceRequest31(_Open):
    """Business logic creating a VEN's resource, possibly granting it targets."""

    objectType: Literal["BL_RESOURCE_REQUEST"]
    clientID: Name128
    resourceName: Name128
    venID: ObjectId
    targets: list[Target31] | None = None
    attributes: list[ValuesMap] | None = None


class VenResourceRequest31(_Open):
    """A VEN creating one of its resources (no targets: only business logic grants them)."""

    objectType: Literal["VEN_RESOURCE_REQUEST"]
    resourceName: Name128
    venID: ObjectId
    attributes: list[ValuesMap] | None = None


class Resource301(_Open):
    objectType: Literal["RESOURCE"] | None = None
    resourceName: Name128
    venID: ObjectId
    targets: list[ValuesMap] | None = None


# --- subscriptions -----------------------------------------------------------------------------


class ObjectOperation301(_Open):
    objects: list[ObjectType] = Field(min_length=1)
    operations: list[HttpOperation] = Field(min_length=1)
    callbackUrl: Uri
    bearerToken: str | None = None


class ObjectOperation31(ObjectOperation301):
    operations: list[CrudOperation] = Field(min_length=1)  # type: ignore[assignment]


class Subscription301(_Open):
    objectType: Literal["SUBSCRIPTION"] | None = None
    clientName: Name128
    programID: ObjectId  # required in 3.0.1
    objectOperations: list[ObjectOperation301] = Field(min_length=1)
    targets: list[ValuesMap] | None = None


class Subscription31(_Open):
    clientName: Name128
    programID: ObjectId | None = None
    objectOperations: list[ObjectOperation31] = Field(min_length=1)
    targets: list[Target31] | None = None


# --- reports -----------------------------------------------------------------------------------


class ReportResource301(_Open):
    resourceName: Name128
    intervalPeriod: IntervalPeriod301 | None = None
    intervals: list[Interval301]


class ReportResource31(_Open):
    resourceName: Name128
    intervalPeriod: IntervalPeriod31 | None = None
    intervals: list[Interval31]


class Report301(_Open):
    objectType: Literal["REPORT"] | None = None
    programID: ObjectId  # required in 3.0.1
    eventID: ObjectId
    clientName: Name128
    reportName: str | None = None
    payloadDescriptors: list[ReportPayloadDescriptor301] | None = None
    resources: list[ReportResource301]


class Report31(_Open):
    eventID: ObjectId
    clientName: Name128
    reportName: str | None = None
    payloadDescriptors: list[ReportPayloadDescriptor31] | None = None
    resources: list[ReportResource31]


# --- OAuth2 client credentials -----------------------------------------------------------------


class ClientCredentialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grant_type: Literal["client_credentials"]
    client_id: str = Field(min_length=1, max_length=4096)
    client_secret: str = Field(min_length=1, max_length=4096)
    scope: str | None = Field(default=None, max_length=4096)


BODIES: dict[str, dict[str, tuple[type[BaseModel], ...]]] = {
    "3.0.1": {
        "PROGRAM": (Program301,),
        "EVENT": (Event301,),
        "VEN": (Ven301,),
        "SUBSCRIPTION": (Subscription301,),
        "REPORT": (Report301,),
        "RESOURCE": (Resource301,),
    },
    "3.1": {
        "PROGRAM": (Program31,),
        "EVENT": (Event31,),
        "VEN": (VenVenRequest31, BlVenRequest31),
        "SUBSCRIPTION": (Subscription31,),
        "REPORT": (Report31,),
        "RESOURCE": (BlResourceRequest31, VenResourceRequest31),
    },
}


def subscription_operations(version: Version) -> tuple[str, ...]:
    return ("GET", "POST", "PUT", "DELETE") if version == "3.0.1" else ("READ", "CREATE", "UPDATE", "DELETE")
