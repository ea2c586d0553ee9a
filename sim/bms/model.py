"""The simulated BMS controllers: zones, command validation and the command log, without I/O.

Every command carries an idempotency key and is executed at most once per (facility, key): a
repeat with the same operation returns the original result flagged ``duplicate``; a repeat
with different parameters is rejected. Zone state is kept by a :class:`ZoneStore` (Redis in
the running simulator), the command log in memory (it lasts as long as the process).

Test honesty (decision 0450): :meth:`BmsControllers.executions` counts every execution a key
got, the duplicates answered from the log included, so an "executed exactly once" check can
fail on "twice"; :meth:`BmsControllers.applied` counts only those that changed a zone.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from energy.fleet import Facility, Zone

MIN_SETPOINT_C = 16.0
NORMAL_LIGHTING_PCT = 100.0


class CommandRejected(Exception):
    """The controller refuses a command (the caller's fault): becomes a SOAP ``Client.<code>`` fault."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ZoneReading:
    zone: Zone
    setpoint_c: float | None
    lighting_pct: float | None

    @property
    def overridden(self) -> bool:
        if self.zone.kind == "hvac":
            return self.setpoint_c is not None and self.setpoint_c != self.zone.normal_setpoint_c
        return self.lighting_pct is not None and self.lighting_pct != NORMAL_LIGHTING_PCT


class ZoneStore(Protocol):
    """Where the building keeps its zones' state: ``{zone_id: {"setpoint_c": .., "lighting_pct": ..}}``."""

    def read(self, facility_id: str) -> dict[str, dict[str, float | None]]: ...

    def write(self, facility_id: str, zone_id: str, state: dict[str, float | None]) -> None: ...


class MemoryZoneStore:
    def __init__(self) -> None:
        self._data: dict[str, dict[str, dict[str, float | None]]] = {}

    def read(self, facility_id: str) -> dict[str, dict[str, float | None]]:
        return {k: dict(v) for k, v in self._data.get(facility_id, {}).items()}

    def write(self, facility_id: str, zone_id: str, state: dict[str, float | None]) -> None:
        self._data.setdefault(facility_id, {})[zone_id] = dict(state)


@dataclass(frozen=True)
class CommandRecord:
    facility_id: str
    idempotency_key: str
    operation: str
    zone_id: str
    value: float | None
    executed_at: datetime
    bms_reference: str
    trace_parent: str | None


@dataclass(frozen=True)
class CommandResult:
    record: CommandRecord
    duplicate: bool


def normal_state(zone: Zone) -> dict[str, float | None]:
    if zone.kind == "hvac":
        return {"setpoint_c": zone.normal_setpoint_c, "lighting_pct": None}
    return {"setpoint_c": None, "lighting_pct": NORMAL_LIGHTING_PCT}


@dataclass
class BmsControllers:
    """Every facility's controller. Thread-safe: the SOAP server runs one thread per request."""

    facilities: dict[str, Facility]
    store: ZoneStore
    clock: Callable[[], datetime]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _log: dict[tuple[str, str], CommandRecord] = field(default_factory=dict)
    _executions: Counter[tuple[str, str]] = field(default_factory=Counter)  # duplicates included
    _applied: Counter[tuple[str, str]] = field(default_factory=Counter)  # zone state changed
    _requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    _sequence: int = 0
    _facility_locks: dict[str, threading.Lock] = field(default_factory=dict)

    @classmethod
    def for_fleet(cls, fleet: Iterable[Facility], store: ZoneStore, clock: Callable[[], datetime]) -> BmsControllers:
        return cls({f.facility_id: f for f in fleet}, store, clock)

    def facility(self, facility_id: str) -> Facility:
        try:
            return self.facilities[facility_id]
        except KeyError:
            raise CommandRejected("UnknownFacility", f"no BMS for facility {facility_id!r}") from None

    def zone(self, facility_id: str, zone_id: str) -> Zone:
        for zone in self.facility(facility_id).zones:
            if zone.zone_id == zone_id:
                return zone
        raise CommandRejected("UnknownZone", f"facility {facility_id} has no zone {zone_id!r}")

    def zone_readings(self, facility_id: str) -> list[ZoneReading]:
        stored = self.store.read(facility_id)
        out = []
        for zone in self.facility(facility_id).zones:
            state = stored.get(zone.zone_id) or normal_state(zone)
            out.append(ZoneReading(zone, state.get("setpoint_c"), state.get("lighting_pct")))
        return out

    def zone_reading(self, facility_id: str, zone_id: str) -> ZoneReading:
        self.zone(facility_id, zone_id)
        return next(r for r in self.zone_readings(facility_id) if r.zone.zone_id == zone_id)

    def _new_state(self, zone: Zone, operation: str, value: float | None) -> dict[str, float | None]:
        if operation == "SetSetpoint":
            if zone.kind != "hvac":
                raise CommandRejected("WrongZoneKind", f"zone {zone.zone_id} is {zone.kind}, not hvac")
            upper = zone.max_setpoint_c if zone.max_setpoint_c is not None else MIN_SETPOINT_C
            if value is None or not MIN_SETPOINT_C <= value <= upper:
                raise CommandRejected(
                    "SetpointOutOfRange",
                    f"setpoint {value} C outside the limits [{MIN_SETPOINT_C}, {upper}] of zone {zone.zone_id}",
                )
            return {"setpoint_c": value, "lighting_pct": None}
        if operation == "SetLightingLevel":
            if zone.kind != "lighting":
                raise CommandRejected("WrongZoneKind", f"zone {zone.zone_id} is {zone.kind}, not lighting")
            lower = zone.min_lighting_pct or 0.0
            if value is None or not lower <= value <= NORMAL_LIGHTING_PCT:
                raise CommandRejected(
                    "LightingOutOfRange",
                    f"lighting level {value} % outside the limits [{lower}, 100] of zone {zone.zone_id}",
                )
            return {"setpoint_c": None, "lighting_pct": value}
        if operation == "RestoreZone":
            return normal_state(zone)
        raise CommandRejected("UnknownOperation", f"unknown operation {operation!r}")

    def execute(
        self,
        facility_id: str,
        operation: str,
        zone_id: str,
        value: float | None,
        idempotency_key: str,
        trace_parent: str | None = None,
    ) -> CommandResult:
        if not idempotency_key or len(idempotency_key) > 200:
            raise CommandRejected("InvalidIdempotencyKey", "idempotency_key must have 1 to 200 characters")
        self.facility(facility_id)
        log_key = (facility_id, idempotency_key)
        # One lock per building (each has its own BMS): its commands are handled one at a time, the
        # zone write to Redis included, while other buildings' commands go on. The shared logs have
        # their own short lock, never held across I/O.
        with self._facility_lock(facility_id):
            with self._lock:
                self._requests[log_key] += 1
                previous = self._log.get(log_key)
                if previous is not None:
                    if (previous.operation, previous.zone_id, previous.value) != (operation, zone_id, value):
                        raise CommandRejected(
                            "IdempotencyKeyReused",
                            f"key {idempotency_key!r} was used for {previous.operation} {previous.zone_id} "
                            f"{previous.value}, not {operation} {zone_id} {value}",
                        )
                    self._executions[log_key] += 1
                    return CommandResult(previous, duplicate=True)
            zone = self.zone(facility_id, zone_id)
            state = self._new_state(zone, operation, value)
            self.store.write(facility_id, zone_id, state)
            with self._lock:
                self._sequence += 1
                record = CommandRecord(
                    facility_id=facility_id,
                    idempotency_key=idempotency_key,
                    operation=operation,
                    zone_id=zone_id,
                    value=value,
                    executed_at=self.clock(),
                    bms_reference=f"{facility_id}/cmd-{self._sequence:08d}",
                    trace_parent=trace_parent,
                )
                self._log[log_key] = record
                self._executions[log_key] += 1
                self._applied[log_key] += 1
            return CommandResult(record, duplicate=False)

    def _facility_lock(self, facility_id: str) -> threading.Lock:
        with self._lock:
            lock = self._facility_locks.get(facility_id)
            if lock is None:
                lock = self._facility_locks[facility_id] = threading.Lock()
            return lock

    def status(self, facility_id: str, idempotency_key: str) -> CommandRecord | None:
        self.facility(facility_id)
        with self._lock:
            return self._log.get((facility_id, idempotency_key))

    def executions(self, facility_id: str | None = None) -> dict[str, int]:
        """Times each idempotency key was executed and answered, duplicates included."""
        return self._per_key(self._executions, facility_id)

    def applied(self, facility_id: str | None = None) -> dict[str, int]:
        """Times each idempotency key changed a zone (at most 1 while idempotency holds)."""
        return self._per_key(self._applied, facility_id)

    def _per_key(self, counts: Counter[tuple[str, str]], facility_id: str | None) -> dict[str, int]:
        with self._lock:
            out: Counter[str] = Counter()
            for (fac, key), count in counts.items():
                if facility_id is None or fac == facility_id:
                    out[key] += count
            return dict(out)

    def requests(self, facility_id: str | None = None) -> dict[str, int]:
        """Times each idempotency key was received (executions plus duplicates)."""
        with self._lock:
            out: Counter[str] = Counter()
            for (fac, key), count in self._requests.items():
                if facility_id is None or fac == facility_id:
                    out[key] += count
            return dict(out)

    def records(self, facility_id: str | None = None) -> list[CommandRecord]:
        with self._lock:
            return [r for r in self._log.values() if facility_id is None or r.facility_id == facility_id]

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._executions.clear()
            self._applied.clear()
            self._requests.clear()


@dataclass(frozen=True)
class FaultConfig:
    """Faults injected into one facility's BMS (or every facility's, as the default)."""

    latency_ms: float = 0.0
    fault_rate: float = 0.0  # share of SOAP calls answered with a Server fault, before executing
    ack_loss_rate: float = 0.0  # share of calls executed whose answer is lost (HTTP 503 after executing)
    down: bool = False  # every request of the facility answered 503

    @classmethod
    def parse(cls, body: dict[str, object]) -> tuple[str | None, FaultConfig]:
        """Validate an admin request ``{facility_id?, latency_ms?, fault_rate?, ack_loss_rate?, down?}``."""
        unknown = set(body) - {"facility_id", "latency_ms", "fault_rate", "ack_loss_rate", "down"}
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        facility = body.get("facility_id")
        if facility is not None and not isinstance(facility, str):
            raise ValueError("facility_id must be a string (omit it for every facility)")
        latency = body.get("latency_ms", 0)
        if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency <= 600_000:
            raise ValueError("latency_ms must be a number in [0, 600000]")
        rates = {}
        for name in ("fault_rate", "ack_loss_rate"):
            rate = body.get(name, 0)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be a number in [0, 1]")
            rates[name] = float(rate)
        down = body.get("down", False)
        if not isinstance(down, bool):
            raise ValueError("down must be true or false")
        return facility, cls(float(latency), rates["fault_rate"], rates["ack_loss_rate"], down)
