"""Kafka record -> reading, or a dead-letter verdict with a machine-readable reason.

Decoding goes through :func:`schemas.registry.decode_as`: any minor version of the
``meter.reading`` major this build knows is read (unknown fields ignored); another major
is dead-lettered as ``incompatible_version``, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.readings import MeterReading, MeterReadingEvent
from schemas.readings_fast import FastMeterReading, FastMeterReadingEvent, decode_meter_reading
from schemas.registry import IncompatibleVersionError, UnknownEventError, decode_as

# A reading as the rollup path reads it: the pydantic model, or its checked msgspec mirror (0910).
Reading = MeterReading | FastMeterReading


@dataclass(frozen=True)
class Rejected:
    # undecodable | schema_mismatch | incompatible_version | timestamp_out_of_range | too_late
    # | sink_rejected | unprocessable
    reason: str
    detail: str


def decode_reading(value: bytes | None) -> MeterReadingEvent | Rejected:
    if not value:
        return Rejected("undecodable", "empty message value")
    try:
        return decode_as(value, MeterReadingEvent)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reason = "undecodable" if any(e["type"] in ("json_invalid", "json_type") for e in errors) else "schema_mismatch"
        return Rejected(reason, str(exc)[:3000])
    except IncompatibleVersionError as exc:
        return Rejected("incompatible_version", str(exc)[:3000])
    except UnknownEventError as exc:
        return Rejected("schema_mismatch", str(exc)[:3000])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Rejected("undecodable", f"{type(exc).__name__}: {exc}"[:3000])


def decode_reading_fast(value: bytes | None) -> MeterReadingEvent | FastMeterReadingEvent | Rejected:
    """The hot path's decode: the msgspec mirror for what it vouches for, the registry for the rest
    (so every rejection carries the registry's reason, see :mod:`schemas.readings_fast`)."""
    if value:
        got = decode_meter_reading(value)
        if got is not None:
            return got
    return decode_reading(value)


__all__ = ["MeterReading", "MeterReadingEvent", "Reading", "Rejected", "decode_reading", "decode_reading_fast"]
