"""Messages the saga accepts (imperative) and what it emits (past tense). Immutable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from dr_coordinator.domain.planner import FacilityPlan

_KEY_NAMESPACE = uuid.UUID("6f1c2f0e-5b0e-4c59-9f6e-2f1d3c4b5a69")


def idempotency_key(dr_event_id: uuid.UUID, facility_id: str, zone_id: str, action: str) -> str:
    """Deterministic per (event, facility, zone, action): a replayed saga step produces the same key."""
    return f"{dr_event_id}:{facility_id}:{zone_id}:{action}"


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
    start: datetime
    end: datetime
    target_kw: float | None
    level: int | None


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
    Schedule | StartDispatch | StartRestore | Cancel | OptOut | Modify | RecordCommandAcknowledged | RecordCommandFailed
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


@dataclass(frozen=True)
class Noted:
    """A fact worth the event log that changes no state (e.g. a modification)."""

    facility_id: str | None
    entry_type: str
    detail: dict[str, object] = field(default_factory=dict)


DomainEvent = StateChanged | CommandIssued | Noted
