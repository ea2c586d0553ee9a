"""Demand-response and BMS command events."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import Envelope, EventModel
from schemas.readings import ID_PATTERN


class DrEventState(StrEnum):
    RECEIVED = "received"
    SCHEDULED = "scheduled"
    DISPATCHING = "dispatching"
    ACTIVE = "active"
    RESTORING = "restoring"
    COMPLETED = "completed"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"  # first seen after its end (e.g. after an outage): recorded, never dispatched


class FacilityDrState(StrEnum):
    PENDING = "pending"
    DISPATCHING = "dispatching"
    ACTIVE = "active"
    RESTORING = "restoring"
    RESTORED = "restored"
    FAILED = "failed"
    OPTED_OUT = "opted_out"
    CANCELLED = "cancelled"


class DrEventReceived(EventModel):
    dr_event_id: uuid.UUID
    utility_id: str = Field(pattern=ID_PATTERN)
    utility_event_id: str = Field(min_length=1, max_length=128)
    program_id: str | None = Field(default=None, max_length=128)
    facility_ids: tuple[str, ...] = Field(min_length=1)
    start: AwareDatetime
    end: AwareDatetime
    target_kw: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    level: int | None = Field(default=None, ge=0, le=10)
    priority: int = Field(default=0, ge=0, le=100)


class DrEventStateChanged(EventModel):
    dr_event_id: uuid.UUID
    facility_id: str | None = Field(default=None, pattern=ID_PATTERN, description="None: the whole event")
    from_state: str
    to_state: str
    reason: str | None = Field(default=None, max_length=500)
    version: int = Field(ge=0)


class BmsAction(StrEnum):
    SET_SETPOINT = "set_setpoint"
    SET_LIGHTING = "set_lighting"
    RESTORE = "restore"


class BmsCommand(EventModel):
    command_id: uuid.UUID
    idempotency_key: str = Field(min_length=1, max_length=200)
    dr_event_id: uuid.UUID
    facility_id: str = Field(pattern=ID_PATTERN)
    zone_id: str = Field(pattern=ID_PATTERN)
    action: BmsAction
    value: float | None = Field(default=None, allow_inf_nan=False)


class BmsCommandAcknowledged(EventModel):
    command: BmsCommand
    executed_at: AwareDatetime
    bms_reference: str | None = Field(default=None, max_length=200)


class BmsCommandFailed(EventModel):
    command: BmsCommand
    reason: str = Field(max_length=1000)
    transient: bool
    attempts: int = Field(ge=1)


class DrEventReceivedEvent(Envelope[DrEventReceived]):
    EVENT_TYPE: ClassVar[str] = "dr.event.received"
    event_type: Literal["dr.event.received"] = "dr.event.received"
    schema_version: Literal[1] = 1


class DrEventStateChangedEvent(Envelope[DrEventStateChanged]):
    EVENT_TYPE: ClassVar[str] = "dr.event.state_changed"
    event_type: Literal["dr.event.state_changed"] = "dr.event.state_changed"
    schema_version: Literal[1] = 1


class BmsCommandIssuedEvent(Envelope[BmsCommand]):
    EVENT_TYPE: ClassVar[str] = "bms.command.issued"
    event_type: Literal["bms.command.issued"] = "bms.command.issued"
    schema_version: Literal[1] = 1


class BmsCommandAcknowledgedEvent(Envelope[BmsCommandAcknowledged]):
    EVENT_TYPE: ClassVar[str] = "bms.command.acknowledged"
    event_type: Literal["bms.command.acknowledged"] = "bms.command.acknowledged"
    schema_version: Literal[1] = 1


class BmsCommandFailedEvent(Envelope[BmsCommandFailed]):
    EVENT_TYPE: ClassVar[str] = "bms.command.failed"
    event_type: Literal["bms.command.failed"] = "bms.command.failed"
    schema_version: Literal[1] = 1
