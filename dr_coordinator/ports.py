"""Ports of the DR coordinator: what the saga needs from the outside, as Protocols.

Adapters (``dr_coordinator/adapters/``) implement them; tests use the real ones against
the local servers and simulators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.dr import BmsCommand


class BmsRejectedError(Exception):
    """The BMS refused the command (SOAP fault from the application): do not retry."""


class BmsUnavailableError(Exception):
    """Transport error, timeout, 5xx or server fault, breaker open: transient, retry later."""


@dataclass(frozen=True)
class BmsAck:
    idempotency_key: str
    executed_at: datetime
    bms_reference: str
    duplicate: bool  # the BMS had already executed this key; nothing was done twice


@dataclass(frozen=True)
class ZoneState:
    zone_id: str
    kind: str  # hvac | lighting
    setpoint_c: float | None
    lighting_pct: float | None
    overridden: bool  # a DR command holds the zone away from its normal state


class BmsGateway(Protocol):
    async def execute(self, endpoint_url: str, command: BmsCommand, trace_parent: str | None = None) -> BmsAck:
        """Carry out one command, idempotent on ``command.idempotency_key``."""

    async def command_status(self, endpoint_url: str, idempotency_key: str) -> str | None:
        """'executed' | 'unknown' | None when the BMS has no record of it."""

    async def zone_states(self, endpoint_url: str) -> list[ZoneState]:
        """Current state of every zone of the building (for reconciliation)."""

    async def ping(self, endpoint_url: str) -> bool: ...
