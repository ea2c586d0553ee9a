"""Pure validation of meter payloads: bytes in, accepted readings and reasoned rejections out.

No I/O and no clock: the caller passes ``now``, the meter registry lookup and the register
tracker. A reading outside its meter type's plausible range is *kept* and flagged in
``MeterReading.anomalies``; only payloads that cannot be trusted at all (bad JSON, wrong
schema, unknown meter, a meter that does not belong to the topic's facility) are rejected.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ingestion.config import MeterTypeLimits
from schemas.readings import Anomaly, GatewayBatch, MeterReading, RawReading, reading_id

GATEWAY_SEGMENT = "gateway"


class Reason(StrEnum):
    """Machine-readable reason codes of rejected payloads (the DLQ's ``reason``)."""

    INVALID_JSON = "invalid_json"
    SCHEMA_MISMATCH = "schema_mismatch"
    UNKNOWN_METER = "unknown_meter"
    METER_MISMATCH = "meter_mismatch"  # the payload's meter is not the one in the MQTT topic
    FACILITY_MISMATCH = "facility_mismatch"  # the meter belongs to another facility than claimed
    BAD_TOPIC = "bad_topic"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_AUTHORISED = "not_authorised"  # HTTP: the key does not cover this meter
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"  # further ahead than the allowed clock skew
    TIMESTAMP_TOO_OLD = "timestamp_too_old"  # older than the raw retention: cannot be stored


@dataclass(frozen=True)
class MeterInfo:
    meter_id: str
    facility_id: str
    meter_type: str
    rated_kw: float
    nominal_voltage_v: float


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str
    raw: bytes
    meter_id: str | None = None


@dataclass
class Outcome:
    accepted: list[MeterReading] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class TopicAddress:
    facility_id: str
    meter_id: str | None  # None: a gateway batch


Lookup = Callable[[str], MeterInfo | None]


def parse_topic(topic: str, prefix: str) -> TopicAddress | None:
    """``{prefix}/{facility_id}/{meter_id}`` or ``{prefix}/{facility_id}/gateway``; anything else is None."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2]:
        return None
    return TopicAddress(parts[1], None if parts[2] == GATEWAY_SEGMENT else parts[2])


class RegisterTracker:
    """Last cumulative energy register per meter, to flag a register that went backwards."""

    def __init__(self, max_meters: int = 1_000_000) -> None:
        self._last: OrderedDict[str, tuple[datetime, float]] = OrderedDict()
        self._max = max_meters

    def decreased(self, meter_id: str, ts: datetime, energy_kwh: float) -> bool:
        last = self._last.get(meter_id)
        if last is None or ts > last[0]:
            self._last[meter_id] = (ts, energy_kwh)
            self._last.move_to_end(meter_id)
            if len(self._last) > self._max:
                self._last.popitem(last=False)
            return last is not None and energy_kwh < last[1]
        if ts == last[0]:
            return False
        return energy_kwh > last[1]  # an older reading with a higher register than a newer one


class DedupWindow:
    """Bounded memory of delivered readings, to drop exact repeats (MQTT redelivery) early."""

    def __init__(self, size: int) -> None:
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._size = size

    def seen(self, key: tuple[str, int]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, int]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


def dedup_key(r: MeterReading) -> tuple[str, int]:
    """Same reading id and same measured values: an exact repeat."""
    values = (r.active_power_kw, r.reactive_power_kvar, r.voltage_v, r.current_a, r.energy_kwh, r.seq)
    return (str(r.reading_id), hash(values))


def detect_anomalies(
    raw: RawReading,
    meter: MeterInfo,
    limits: MeterTypeLimits,
    *,
    register_decreased: bool,
) -> tuple[Anomaly, ...]:
    found: list[Anomaly] = []
    if raw.active_power_kw < 0 and not limits.allow_negative_power:
        found.append(Anomaly.NEGATIVE_POWER)
    if abs(raw.active_power_kw) > meter.rated_kw * limits.max_power_of_rating:
        found.append(Anomaly.POWER_ABOVE_RATING)
    nominal = meter.nominal_voltage_v
    if not nominal * limits.voltage_min_of_nominal <= raw.voltage_v <= nominal * limits.voltage_max_of_nominal:
        found.append(Anomaly.VOLTAGE_OUT_OF_RANGE)
    rated_current = meter.rated_kw * 1000.0 / nominal
    if raw.current_a < 0 or raw.current_a > rated_current * limits.max_current_of_rated:
        found.append(Anomaly.CURRENT_OUT_OF_RANGE)
    if register_decreased or raw.energy_kwh < 0:
        found.append(Anomaly.ENERGY_REGISTER_DECREASED)
    return tuple(found)


@dataclass(frozen=True)
class Validator:
    """Everything validation needs except the payload; one per service, rebuilt never."""

    lookup: Lookup
    limits: Mapping[str, MeterTypeLimits]
    registers: RegisterTracker
    future_tolerance: timedelta
    max_message_bytes: int
    max_age: timedelta | None = None  # the raw retention; None: no lower bound
    default_limits: MeterTypeLimits = field(default_factory=MeterTypeLimits)

    def _enrich(
        self,
        raw: RawReading,
        raw_bytes: Callable[[], bytes],  # only a rejected reading needs its bytes: built lazily
        *,
        now: datetime,
        facility_id: str | None,
        meter_id: str | None,
        allowed: Callable[[MeterInfo], bool] | None,
        out: Outcome,
    ) -> None:
        if meter_id is not None and raw.meter_id != meter_id:
            out.rejected.append(
                Rejection(
                    Reason.METER_MISMATCH,
                    f"payload meter {raw.meter_id!r} sent on the topic of {meter_id!r}",
                    raw_bytes(),
                    raw.meter_id,
                )
            )
            return
        if raw.ts - now > self.future_tolerance:
            # Rejected before the register tracker sees it: a far-future time would make every
            # later reading of the meter look out of order.
            out.rejected.append(
                Rejection(
                    Reason.TIMESTAMP_IN_FUTURE,
                    f"ts {raw.ts.isoformat()} is more than {self.future_tolerance.total_seconds():g}s "
                    f"after {now.isoformat()}",
                    raw_bytes(),
                    raw.meter_id,
                )
            )
            return
        if self.max_age is not None and now - raw.ts > self.max_age:
            out.rejected.append(
                Rejection(
                    Reason.TIMESTAMP_TOO_OLD,
                    f"ts {raw.ts.isoformat()} is older than the raw retention "
                    f"({self.max_age.total_seconds():g}s before {now.isoformat()})",
                    raw_bytes(),
                    raw.meter_id,
                )
            )
            return
        meter = self.lookup(raw.meter_id)
        if meter is None:
            out.rejected.append(
                Rejection(Reason.UNKNOWN_METER, f"meter {raw.meter_id!r} is not registered", raw_bytes(), raw.meter_id)
            )
            return
        for claimed, by in ((facility_id, "topic"), (raw.facility_id, "payload")):
            if claimed is not None and claimed != meter.facility_id:
                out.rejected.append(
                    Rejection(
                        Reason.FACILITY_MISMATCH,
                        f"meter {raw.meter_id!r} belongs to {meter.facility_id!r}, the {by} says {claimed!r}",
                        raw_bytes(),
                        raw.meter_id,
                    )
                )
                return
        if allowed is not None and not allowed(meter):
            out.rejected.append(
                Rejection(
                    Reason.NOT_AUTHORISED,
                    f"this key may not post readings of {raw.meter_id!r}",
                    raw_bytes(),
                    raw.meter_id,
                )
            )
            return
        limits = self.limits.get(meter.meter_type, self.default_limits)
        decreased = self.registers.decreased(raw.meter_id, raw.ts, raw.energy_kwh)
        anomalies = detect_anomalies(raw, meter, limits, register_decreased=decreased)
        out.accepted.append(
            MeterReading(
                reading_id=reading_id(raw.meter_id, raw.ts),
                meter_id=raw.meter_id,
                facility_id=meter.facility_id,
                ts=raw.ts,
                active_power_kw=raw.active_power_kw,
                reactive_power_kvar=raw.reactive_power_kvar,
                voltage_v=raw.voltage_v,
                current_a=raw.current_a,
                energy_kwh=raw.energy_kwh,
                seq=raw.seq,
                anomalies=anomalies,
                received_at=now,
            )
        )

    def mqtt_message(self, topic: str, payload: bytes, prefix: str, now: datetime) -> Outcome:
        """One MQTT message: a single reading on ``{prefix}/{facility}/{meter}`` or a batch on ``.../gateway``."""
        out = Outcome()
        if len(payload) > self.max_message_bytes:
            out.rejected.append(Rejection(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes", payload))
            return out
        address = parse_topic(topic, prefix)
        if address is None:
            expected = f"{prefix}/<facility_id>/<meter_id|gateway>"
            out.rejected.append(Rejection(Reason.BAD_TOPIC, f"topic {topic[:200]!r} is not {expected}", payload))
            return out
        if address.meter_id is None:
            return self.batch(payload, now=now, facility_id=address.facility_id)
        try:
            raw = RawReading.model_validate_json(payload)
        except ValidationError as exc:
            out.rejected.append(_rejection_of(exc, payload))
            return out
        self._enrich(
            raw,
            lambda: payload,
            now=now,
            facility_id=address.facility_id,
            meter_id=address.meter_id,
            allowed=None,
            out=out,
        )
        return out

    def batch(
        self,
        payload: bytes,
        *,
        now: datetime,
        facility_id: str | None = None,
        allowed: Callable[[MeterInfo], bool] | None = None,
        accept_list: bool = False,
    ) -> Outcome:
        """A gateway batch (or, over HTTP, a bare list of readings). Valid readings of a batch with
        some bad ones are kept; each bad one is rejected alone with its own raw bytes."""
        out = Outcome()
        if len(payload) > self.max_message_bytes:
            out.rejected.append(Rejection(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes", payload))
            return out
        try:
            readings = GatewayBatch.model_validate_json(payload).readings
        except ValidationError as exc:
            elements = _elements(payload, accept_list)
            if elements is None:
                out.rejected.append(_rejection_of(exc, payload))
                return out
            readings = []
            for element in elements:
                raw_bytes = json.dumps(element, allow_nan=True).encode()
                try:
                    readings.append(RawReading.model_validate_json(raw_bytes))
                except ValidationError as inner:
                    meter = element.get("meter_id") if isinstance(element, dict) else None
                    out.rejected.append(_rejection_of(inner, raw_bytes, meter if isinstance(meter, str) else None))
        for raw in readings:
            self._enrich(
                raw,
                lambda raw=raw: raw.model_dump_json(exclude_none=True).encode(),  # type: ignore[misc]
                now=now,
                facility_id=facility_id,
                meter_id=None,
                allowed=allowed,
                out=out,
            )
        return out


def _elements(payload: bytes, accept_list: bool) -> list[object] | None:
    """The reading elements of a batch whose envelope is fine but some readings are not; else None."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if accept_list and isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict) and set(doc) == {"gateway_id", "readings"} and isinstance(doc["readings"], list):
        gateway = doc["gateway_id"]
        if not isinstance(gateway, str) or not gateway:
            return None
        items = doc["readings"]
    else:
        return None
    if not 1 <= len(items) <= 10_000:
        return None
    return list(items)


def _rejection_of(exc: ValidationError, raw: bytes, meter_id: str | None = None) -> Rejection:
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return Rejection(Reason.INVALID_JSON, _summary(errors), raw, meter_id)
    return Rejection(Reason.SCHEMA_MISMATCH, _summary(errors), raw, meter_id)


def _summary(errors: list[ErrorDetails]) -> str:
    parts = []
    for e in errors[:10]:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {e.get('msg', '')}")
    return "; ".join(parts)[:4000]
