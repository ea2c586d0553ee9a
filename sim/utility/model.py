"""The simulated utility VTN's objects and rules (OpenADR 3), and the wire faults, without I/O.

Objects are kept as the JSON dicts of the OpenADR 3 API (camelCase, ``id``, ``createdDateTime``,
``modificationDateTime``, ``objectType``). Inbound bodies are validated by the pydantic models
below (unknown fields are kept, as the specification allows extensions).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OBJECT_ID = r"^[a-zA-Z0-9_-]{1,128}$"
OBJECT_TYPES = ("PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE")
# 3.0.1 notifications name HTTP verbs, 3.1 names CRUD operations; subscriptions may use either.
OPERATION_ALIASES = {"POST": "CREATE", "PUT": "UPDATE", "GET": "READ", "DELETE": "DELETE"}
HTTP_VERB = {"CREATE": "POST", "UPDATE": "PUT", "READ": "GET", "DELETE": "DELETE"}
_DURATION = re.compile(
    r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


class ApiProblem(Exception):
    """Becomes an RFC 7807 problem response (the OpenADR 3 ``problem`` schema)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ValuesMap(_Open):
    type: str = Field(min_length=1, max_length=128)
    values: list[Any]


class IntervalPeriod(_Open):
    start: datetime
    duration: str | None = None

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("start must carry a timezone (RFC 3339)")
        return v

    @field_validator("duration")
    @classmethod
    def _iso_duration(cls, v: str | None) -> str | None:
        if v is not None and not _DURATION.match(v):
            raise ValueError("duration must be an ISO 8601 duration such as PT1H")
        return v


class Interval(_Open):
    id: int
    intervalPeriod: IntervalPeriod | None = None
    payloads: list[ValuesMap]


class ProgramIn(_Open):
    programName: str = Field(min_length=1, max_length=128)


class EventIn(_Open):
    programID: str = Field(pattern=OBJECT_ID)
    eventName: str | None = Field(default=None, max_length=128)
    priority: int | None = Field(default=None, ge=0)
    # lenient: a 3.0.1 valuesMap or a 3.1 plain string (the strict modes take only their version's form)
    targets: list[ValuesMap | Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    intervalPeriod: IntervalPeriod | None = None
    intervals: list[Interval]


class VenIn(_Open):
    venName: str = Field(min_length=1, max_length=128)


class ObjectOperation(_Open):
    objects: list[Literal["PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"]] = Field(min_length=1)
    operations: list[Literal["GET", "POST", "PUT", "DELETE", "READ", "CREATE", "UPDATE"]] = Field(min_length=1)
    callbackUrl: str = Field(pattern=r"^https?://", max_length=2000)
    bearerToken: str | None = Field(default=None, max_length=4096)


class SubscriptionIn(_Open):
    clientName: str = Field(min_length=1, max_length=128)
    programID: str | None = Field(default=None, pattern=OBJECT_ID)
    objectOperations: list[ObjectOperation] = Field(min_length=1)


class ReportResource(_Open):
    resourceName: str = Field(min_length=1, max_length=128)
    intervals: list[Interval]


class ReportIn(_Open):
    programID: str | None = Field(default=None, pattern=OBJECT_ID)
    eventID: str | None = Field(default=None, pattern=OBJECT_ID)
    clientName: str = Field(min_length=1, max_length=128)
    reportName: str | None = Field(default=None, max_length=256)
    resources: list[ReportResource]


@dataclass(frozen=True)
class Change:
    """An operation on an object that subscribers may be told about."""

    object_type: str
    operation: str  # CREATE | UPDATE | DELETE
    obj: dict[str, Any]


@dataclass(frozen=True)
class Subscriber:
    subscription_id: str
    callback_url: str
    bearer_token: str | None
    obj: dict[str, Any] | None = None  # the object as this subscriber may see it (target hiding); None: as is


@dataclass(frozen=True)
class Client:
    """Who a bearer token belongs to: the utility's business logic (BL) or a VEN, with its clientID
    (3.1 Definition, "Object Privacy": the VTN finds the client identifier from the token)."""

    role: Literal["BL", "VEN"]
    client_id: str


BUSINESS_LOGIC = Client("BL", "bl")


class ResourceIn(_Open):
    resourceName: str = Field(min_length=1, max_length=128)
    venID: str = Field(pattern=OBJECT_ID)


def _field(body: BaseModel, name: str) -> Any:
    return getattr(body, name, None)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass
class VtnStore:
    """Programs, events, VENs, subscriptions and reports of one VTN (single event loop, no locks)."""

    clock: Callable[[], datetime]
    programs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    vens: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Sequential ids per object type from "0", as the reference VTN assigns them: they restart with
    # the process (and on reset), so a receiver that deduplicates by id alone drops new objects.
    sequential_ids: bool = False
    _counters: dict[str, int] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # 3.1 object privacy (decision 0410 rules 17-19): VEN clients read only what is theirs or targeted to them
    privacy: bool = False
    subscriber_clients: dict[str, Client] = field(default_factory=dict)  # subscription id -> who created it

    def next_id(self, object_type: str, prefix: str) -> str:
        if not self.sequential_ids:
            return f"{prefix}-{uuid.uuid4().hex[:16]}"  # unique across restarts
        n = self._counters.get(object_type, 0)
        self._counters[object_type] = n + 1
        return str(n)

    def restart(self) -> None:
        """What a process restart of an in-memory VTN loses: every object and the id counters."""
        for collection in (self.events, self.vens, self.subscriptions, self.reports, self.programs, self.resources):
            collection.clear()
        self._counters.clear()
        self.subscriber_clients.clear()

    def _new(self, object_type: str, body: BaseModel, prefix: str) -> dict[str, Any]:
        now = _iso(self.clock())
        obj = body.model_dump(mode="json", exclude_none=False)
        obj.update(
            id=self.next_id(object_type, prefix),
            createdDateTime=now,
            modificationDateTime=now,
            objectType=object_type,
        )
        return obj

    def _collection(self, object_type: str) -> dict[str, dict[str, Any]]:
        return {
            "PROGRAM": self.programs,
            "EVENT": self.events,
            "VEN": self.vens,
            "SUBSCRIPTION": self.subscriptions,
            "REPORT": self.reports,
            "RESOURCE": self.resources,
        }[object_type]

    def get(self, object_type: str, object_id: str) -> dict[str, Any]:
        obj = self._collection(object_type).get(object_id)
        if obj is None:
            raise ApiProblem(404, "Not Found", f"no {object_type.lower()} with id {object_id!r}")
        return obj

    def seed_program(self, program_id: str, name: str) -> dict[str, Any]:
        now = _iso(self.clock())
        obj = {
            "id": program_id,
            "programName": name,
            "createdDateTime": now,
            "modificationDateTime": now,
            "objectType": "PROGRAM",
        }
        self.programs[program_id] = obj
        return obj

    def create_program(self, body: BaseModel) -> Change:
        name = _field(body, "programName")
        if any(p["programName"] == name for p in self.programs.values()):
            raise ApiProblem(409, "Conflict", f"a program named {name!r} exists")
        obj = self._new("PROGRAM", body, "program")
        self.programs[obj["id"]] = obj
        return Change("PROGRAM", "CREATE", obj)

    def create_event(self, body: BaseModel) -> Change:
        self.get("PROGRAM", _field(body, "programID"))
        obj = self._new("EVENT", body, "event")
        self.events[obj["id"]] = obj
        return Change("EVENT", "CREATE", obj)

    def update_event(self, event_id: str, body: BaseModel) -> Change:
        old = self.get("EVENT", event_id)
        self.get("PROGRAM", _field(body, "programID"))
        obj = body.model_dump(mode="json")
        obj.update(
            id=event_id,
            createdDateTime=old["createdDateTime"],
            modificationDateTime=_iso(self.clock()),
            objectType="EVENT",
        )
        self.events[event_id] = obj
        return Change("EVENT", "UPDATE", obj)

    def delete(self, object_type: str, object_id: str) -> Change:
        obj = self.get(object_type, object_id)
        del self._collection(object_type)[object_id]
        return Change(object_type, "DELETE", obj)

    def _targets_by_bl_only(self, body: BaseModel, client: Client) -> None:
        """3.1: only business logic writes targets to ven and resource objects (they grant visibility)."""
        if self.privacy and client.role == "VEN" and _field(body, "targets"):
            raise ApiProblem(403, "Forbidden", "only business logic may write targets to ven and resource objects")

    def _stamp(self, obj: dict[str, Any], client: Client) -> None:
        """3.1: what a VEN creates carries the clientID its token belongs to (VEN created object privacy)."""
        if self.privacy and client.role == "VEN":
            obj["clientID"] = client.client_id

    def create_ven(self, body: BaseModel, client: Client = BUSINESS_LOGIC) -> Change:
        self._targets_by_bl_only(body, client)
        name = _field(body, "venName")
        if any(v["venName"] == name for v in self.vens.values()):
            raise ApiProblem(409, "Conflict", f"a VEN named {name!r} exists")
        obj = self._new("VEN", body, "ven")
        self._stamp(obj, client)
        self.vens[obj["id"]] = obj
        return Change("VEN", "CREATE", obj)

    def update_ven(self, ven_id: str, body: BaseModel, client: Client = BUSINESS_LOGIC) -> Change:
        old = self.get("VEN", ven_id)
        if not self.owns(old, client):
            raise ApiProblem(404, "Not Found", f"no ven with id {ven_id!r}")
        self._targets_by_bl_only(body, client)
        obj = body.model_dump(mode="json")
        obj.update(id=ven_id, createdDateTime=old["createdDateTime"], modificationDateTime=_iso(self.clock()))
        obj["objectType"] = "VEN"
        if client.role == "VEN" and self.privacy:
            obj["clientID"] = old.get("clientID", client.client_id)
        self.vens[ven_id] = obj
        return Change("VEN", "UPDATE", obj)

    def create_resource(self, body: BaseModel, client: Client = BUSINESS_LOGIC) -> Change:
        self._targets_by_bl_only(body, client)
        ven = self.get("VEN", _field(body, "venID"))
        if not self.owns(ven, client):
            raise ApiProblem(404, "Not Found", f"no ven with id {_field(body, 'venID')!r}")
        obj = self._new("RESOURCE", body, "resource")
        self._stamp(obj, client)
        self.resources[obj["id"]] = obj
        return Change("RESOURCE", "CREATE", obj)

    def create_subscription(self, body: BaseModel, client: Client = BUSINESS_LOGIC) -> Change:
        if _field(body, "programID") is not None:
            self.get("PROGRAM", _field(body, "programID"))
        obj = self._new("SUBSCRIPTION", body, "subscription")
        self._stamp(obj, client)
        self.subscriptions[obj["id"]] = obj
        self.subscriber_clients[obj["id"]] = client
        return Change("SUBSCRIPTION", "CREATE", obj)

    def create_report(self, body: BaseModel, client: Client = BUSINESS_LOGIC) -> Change:
        obj = self._new("REPORT", body, "report")
        self._stamp(obj, client)
        self.reports[obj["id"]] = obj
        return Change("REPORT", "CREATE", obj)

    # --- 3.1 object privacy ------------------------------------------------------------------------

    def owns(self, obj: dict[str, Any], client: Client) -> bool:
        """ven, resource, subscription and report objects: a VEN reads only those with its clientID
        (3.1 Definition, "VEN created object privacy"); business logic reads everything."""
        return not self.privacy or client.role == "BL" or obj.get("clientID") == client.client_id

    def granted(self, client_id: str) -> set[str]:
        """The targets business logic granted a VEN: those of its ven objects (same clientID) and of
        the resources of those vens."""
        vens = [v for v in self.vens.values() if v.get("clientID") == client_id]
        ven_ids = {v["id"] for v in vens}
        out = {t for v in vens for t in v.get("targets") or [] if isinstance(t, str)}
        for r in self.resources.values():
            if r.get("venID") in ven_ids or r.get("clientID") == client_id:
                out.update(t for t in r.get("targets") or [] if isinstance(t, str))
        return out

    def readable(self, obj: dict[str, Any], client: Client, asked: list[str] | None) -> dict[str, Any] | None:
        """A program or event as ``client`` may read it with the ``targets`` it asked for, or None
        (3.1 Definition, "program and event objects - targeting"). Untargeted objects match only a
        request that names no targets (filters are additive, "Response Filtering"). A targeted object
        needs asked AND granted targets that it carries; the answer shows only those (target hiding)."""
        if not self.privacy or client.role == "BL":  # plain filtering
            if not asked:
                return obj
            return obj if set(asked) & _target_names(obj.get("targets")) else None
        targets = obj.get("targets")
        if not targets:
            return None if asked else obj
        effective = set(asked or []) & self.granted(client.client_id)
        shown = [t for t in targets if t in effective]
        return {**obj, "targets": shown} if shown else None

    def update_report(self, report_id: str, body: BaseModel, client: Client = BUSINESS_LOGIC) -> Change:
        old = self.get("REPORT", report_id)
        if not self.owns(old, client):
            raise ApiProblem(404, "Not Found", f"no report with id {report_id!r}")
        obj = body.model_dump(mode="json")
        if "clientID" in old:
            obj["clientID"] = old["clientID"]
        obj.update(
            id=report_id,
            createdDateTime=old["createdDateTime"],
            modificationDateTime=_iso(self.clock()),
            objectType="REPORT",
        )
        self.reports[report_id] = obj
        return Change("REPORT", "UPDATE", obj)

    def matching(self, object_type: str, **filters: str | None) -> list[dict[str, Any]]:
        return [
            o
            for o in self._collection(object_type).values()
            if all(value is None or o.get(key) == value for key, value in filters.items())
        ]

    def search(self, object_type: str, skip: int = 0, limit: int = 50, **filters: str | None) -> list[dict[str, Any]]:
        if skip < 0 or not 0 <= limit <= 50:
            raise ApiProblem(400, "Bad Request", "skip must be >= 0 and limit in [0, 50]")
        items = [
            o
            for o in self._collection(object_type).values()
            if all(value is None or o.get(key) == value for key, value in filters.items())
        ]
        return items[skip : skip + limit]

    def subscribers(self, change: Change) -> list[Subscriber]:
        """Who asked to hear about this change (program filter applied to events and reports). In 3.1 a
        VEN's subscription hears about a program or event only as it could read it, the subscription's
        targets standing for the request's (3.1 Definition, "program and event objects - targeting")."""
        out = []
        program_id = change.obj.get("programID")
        for sub in self.subscriptions.values():
            if sub.get("programID") and program_id and sub["programID"] != program_id:
                continue
            seen: dict[str, Any] | None = None
            if self.privacy and change.object_type in ("PROGRAM", "EVENT"):
                client = self.subscriber_clients.get(sub["id"], BUSINESS_LOGIC)
                seen = self.readable(change.obj, client, sub.get("targets"))
                if seen is None:
                    continue
                seen = None if seen is change.obj else seen
            elif (
                self.privacy
                and change.object_type in ("REPORT", "VEN", "RESOURCE", "SUBSCRIPTION")
                and not self.owns(change.obj, self.subscriber_clients.get(sub["id"], BUSINESS_LOGIC))
            ):
                continue
            for op in sub["objectOperations"]:
                ops = {OPERATION_ALIASES.get(o, o) for o in op["operations"]}
                if change.object_type in op["objects"] and change.operation in ops:
                    out.append(Subscriber(sub["id"], op["callbackUrl"], op.get("bearerToken"), seen))
        return out


def _target_names(targets: Any) -> set[str]:
    """Target strings (3.1) or the values of valuesMap targets (3.0.1)."""
    out: set[str] = set()
    for t in targets or []:
        if isinstance(t, str):
            out.add(t)
        elif isinstance(t, dict):
            out.update(str(v) for v in t.get("values") or [])
    return out


def notification(change: Change, style: Literal["http", "crud"]) -> dict[str, Any]:
    """The OpenADR notification body: 3.0.1 names HTTP verbs (``POST``), 3.1 CRUD (``CREATE``)."""
    operation = HTTP_VERB[change.operation] if style == "http" else change.operation
    return {"objectType": change.object_type, "operation": operation, "object": copy.deepcopy(change.obj)}


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z][a-z])")


def snake_case(key: str) -> str:
    """``programID`` -> ``program_id``, ``intervalPeriod`` -> ``interval_period``."""
    return _CAMEL.sub(lambda m: "_" + (m.group(1) or m.group(2)), key).lower()


def snake_case_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {snake_case(k): snake_case_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_case_keys(v) for v in value]
    return value


_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:Z|[+-]\d{2}:\d{2})$")


def strip_timezones(value: Any) -> Any:
    """Every RFC 3339 timestamp loses its offset (``2026-01-01T10:00:00Z`` -> ``2026-01-01T10:00:00``)."""
    if isinstance(value, dict):
        return {k: strip_timezones(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_timezones(v) for v in value]
    if isinstance(value, str) and (m := _TIMESTAMP.match(value)):
        return m.group(1)
    return value


@dataclass(frozen=True)
class NotifyFaults:
    """Faults of the VTN's notifications, set at runtime with ``POST /_admin/faults``."""

    drop_rate: float = 0.0  # the VTN loses the notification (never sent): the VEN must poll
    duplicate_rate: float = 0.0  # sent twice
    reorder: bool = False  # notifications held and sent newest first, in batches
    reorder_window_ms: float = 300.0
    string_encoded: bool = False  # body is a JSON string that contains the JSON notification
    snake_case: bool = False  # keys in snake_case (program_id) instead of camelCase
    naive_timestamps: bool = False  # timestamps without a timezone
    wrong_token: bool = False  # Authorization carries a token the receiver never issued
    operation_style: Literal["http", "crud"] = "http"  # POST/PUT/DELETE (3.0.1) or CREATE/UPDATE/DELETE (3.1)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> NotifyFaults:
        from pydantic import TypeAdapter, ValidationError

        try:
            return TypeAdapter(_NotifyFaultsIn).validate_python(body).to_faults()
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc


class _NotifyFaultsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    reorder: bool = False
    reorder_window_ms: float = Field(default=300.0, ge=0, le=60_000)
    string_encoded: bool = False
    snake_case: bool = False
    naive_timestamps: bool = False
    wrong_token: bool = False
    operation_style: Literal["http", "crud"] = "http"

    @field_validator("drop_rate", "duplicate_rate", "reorder_window_ms", mode="before")
    @classmethod
    def _number(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("must be a number")
        return float(v)

    def to_faults(self) -> NotifyFaults:
        return NotifyFaults(**self.model_dump())


def encode_notification(body: dict[str, Any], faults: NotifyFaults) -> bytes:
    """The bytes POSTed to a callback, with the wire faults applied."""
    import json

    value: Any = body
    if faults.naive_timestamps:
        value = strip_timezones(value)
    if faults.snake_case:
        value = snake_case_keys(value)
    text = json.dumps(value)
    if faults.string_encoded:
        text = json.dumps(text)
    return text.encode()
