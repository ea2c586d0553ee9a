"""Meter readings: what a meter sends (raw) and what ingestion publishes (enriched)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import Envelope, EventModel, StrictModel

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
READING_NAMESPACE = uuid.UUID("6f1e3c52-8d8e-4a64-9a3c-1f9b1f3e2a10")


# SHA-1 state after the namespace's bytes: each id hashes only its name on a copy of it.
_READING_NAMESPACE_SHA1 = hashlib.sha1(READING_NAMESPACE.bytes, usedforsecurity=False)


def reading_id(meter_id: str, ts: datetime) -> uuid.UUID:
    """Deterministic id of the fact "meter M measured at time T": duplicates share it.

    ``uuid.uuid5(READING_NAMESPACE, "{meter_id}|{ts in UTC, ISO 8601}")``, bit for bit (ids already
    on the topics and in the stores must not change), computed without hashing the namespace again and
    without uuid5's import per call: ingestion computes one per reading (decision 0961)."""
    digest = _READING_NAMESPACE_SHA1.copy()
    digest.update(f"{meter_id}|{ts.astimezone(UTC).isoformat()}".encode())
    return uuid.UUID(bytes=digest.digest()[:16], version=5)


class RawReading(StrictModel):
    """The platform's meter payload on MQTT (one reading) and in HTTP/gateway batches."""

    meter_id: str = Field(pattern=ID_PATTERN)
    ts: AwareDatetime = Field(description="Measurement time, ISO-8601 with offset")
    active_power_kw: float = Field(allow_inf_nan=False)
    reactive_power_kvar: float = Field(allow_inf_nan=False)
    voltage_v: float = Field(allow_inf_nan=False)
    current_a: float = Field(allow_inf_nan=False)
    energy_kwh: float = Field(allow_inf_nan=False, description="Cumulative import register")
    seq: int = Field(ge=0, description="Per-meter sequence number")
    facility_id: str | None = Field(default=None, pattern=ID_PATTERN, description="Optional; the registry decides")


class GatewayBatch(StrictModel):
    """One MQTT message (or HTTP body) carrying many readings of one facility."""

    gateway_id: str = Field(pattern=ID_PATTERN)
    readings: list[RawReading] = Field(min_length=1, max_length=10_000)


class Anomaly(StrEnum):
    NEGATIVE_POWER = "negative_power"
    POWER_ABOVE_RATING = "power_above_rating"
    VOLTAGE_OUT_OF_RANGE = "voltage_out_of_range"
    CURRENT_OUT_OF_RANGE = "current_out_of_range"
    ENERGY_REGISTER_DECREASED = "energy_register_decreased"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"


class MeterReading(EventModel):
    """A validated reading enriched with its facility; the payload of ``meter.reading``."""

    reading_id: uuid.UUID
    meter_id: str = Field(pattern=ID_PATTERN)
    facility_id: str = Field(pattern=ID_PATTERN)
    ts: AwareDatetime
    active_power_kw: float = Field(allow_inf_nan=False)
    reactive_power_kvar: float = Field(allow_inf_nan=False)
    voltage_v: float = Field(allow_inf_nan=False)
    current_a: float = Field(allow_inf_nan=False)
    energy_kwh: float = Field(allow_inf_nan=False)
    seq: int = Field(ge=0)
    anomalies: tuple[Anomaly, ...] = ()
    received_at: AwareDatetime


class MeterReadingEvent(Envelope[MeterReading]):
    EVENT_TYPE: ClassVar[str] = "meter.reading"
    SCHEMA_VERSION: ClassVar[int] = 1
    event_type: Literal["meter.reading"] = "meter.reading"
    schema_version: Literal[1] = 1


class LateWindow(EventModel):
    """Readings that arrived after ``allowed_lateness_s`` changed a facility's rollup window.

    The rollups are already rewritten; this tells consumers that settled on the old values
    (M&V settlement of a DR event) to recompute the window. Keyed by facility.
    """

    facility_id: str = Field(pattern=ID_PATTERN)
    window_start: AwareDatetime
    window_end: AwareDatetime
    late_readings: int = Field(ge=1, description="Late readings of this batch in the window")
    max_lateness_s: float = Field(ge=0, allow_inf_nan=False, description="Largest processing time - ts among them")


class LateWindowEvent(Envelope[LateWindow]):
    EVENT_TYPE: ClassVar[str] = "meter.late_window"
    SCHEMA_VERSION: ClassVar[int] = 1
    event_type: Literal["meter.late_window"] = "meter.late_window"
    schema_version: Literal[1] = 1
