"""Messages the saga accepts (imperative) and what it emits (past tense). Immutable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from dr_coordinator.domain.planner import FacilityPlan
from dr_coordinator.domain.schedule import IntervalAsk

_KEY_NAMESPACE = uuid.UUID("6f1c2f0e-5b0e-4c59-9f6e-2f1d3c4b5a69")


def idempotency_key(dr_event_id: uuid.UUID, facility_id: str, zone_id: str, action: str, revision: int = 0) -> str:
    """Deterministic per (event, facility, zone, action[, saga revision of a re-plan]): a replayed
    saga step produces the same key."""
    base = f"{dr_event_id}:{facility_id}:{zone_id}:{action}"
    return f"{base}:v{revision}" if revision else base


def command_id(key: str) -> uuid.UUID:
    return uuid.uuid5(_KEY_NAMESPACE, key)


# --- commands (into the saga) ------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The coordinator took the event over; its timers now run."""


@dataclass(frozen=True)
class StartDispatch:
    plans: dict[str, FacilityPlan]
    strategy: str
    interval_index: int = 0  # the schedule's interval these plans are for
    not_before: dict[str, datetime] = field(default_factory=dict)  # per facility (randomizeStart)


@dataclass(frozen=True)
class ApplyPlans:
    """Move the running event's facilities to new plans (the next interval, or a re-plan after a
    modification): only zones whose value changes get a command; released zones are restored or
    handed over."""

    plans: dict[str, FacilityPlan]
    interval_index: int
    reason: str


@dataclass(frozen=True)
class StartRestore:
    reason: str = "event ended"


@dataclass(frozen=True)
class Cancel:
    reason: str


@dataclass(frozen=True)
class OptOut:
    facility_id: str
    reason: str = "opted out by operator"


@dataclass(frozen=True)
class ReleaseHold:
    """An operator overrides the forecast guardrail's hold: dispatch this plan for the facility."""

    plan: FacilityPlan


@dataclass(frozen=True)
class Modify:
    """The utility changed the event. Not yet started: the new times apply. Under way: the new
    times apply and the event is re-planned from its current state (``replan_due``)."""

    start: datetime
    end: datetime
    target_kw: float | None
    level: int | None
    intervals: tuple[IntervalAsk, ...] = ()
    import_limit_kw: float | None = None


@dataclass(frozen=True)
class RecordCommandAcknowledged:
    facility_id: str
    zone_id: str
    action: str


@dataclass(frozen=True)
class RecordCommandFailed:
    facility_id: str
    zone_id: str
    action: str
    reason: str


Message = (
    Schedule
    | StartDispatch
    | ApplyPlans
    | StartRestore
    | Cancel
    | OptOut
    | ReleaseHold
    | Modify
    | RecordCommandAcknowledged
    | RecordCommandFailed
)


# --- events (out of the saga) ------------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    facility_id: str | None  # None: the event as a whole
    from_state: str
    to_state: str
    reason: str | None = None


@dataclass(frozen=True)
class CommandIssued:
    facility_id: str
    zone_id: str
    action: str  # set_setpoint | set_lighting | restore
    value: float | None
    order: int  # dispatch order (criticality tier 4 first, then event priority)
    supersedes_pending: bool = False  # a restore makes the facility's unsent dispatch commands moot
    revision: int = 0  # > 0: a re-plan's command (own idempotency key, supersedes the zone's unsent ones)
    not_before: datetime | None = None  # not sent before (randomizeStart, or an earlier event's end)


@dataclass(frozen=True)
class Noted:
    """A fact worth the event log that changes no state (e.g. a modification)."""

    facility_id: str | None
    entry_type: str
    detail: dict[str, object] = field(default_factory=dict)


DomainEvent = StateChanged | CommandIssued | Noted
