"""Kafka record -> reading, or a dead-letter verdict with a machine-readable reason."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.readings import MeterReading, MeterReadingEvent


@dataclass(frozen=True)
class Rejected:
    reason: str  # undecodable | schema_mismatch | too_late | sink_rejected
    detail: str


def decode_reading(value: bytes | None) -> MeterReadingEvent | Rejected:
    if not value:
        return Rejected("undecodable", "empty message value")
    try:
        return MeterReadingEvent.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reason = "undecodable" if any(e["type"] in ("json_invalid", "json_type") for e in errors) else "schema_mismatch"
        return Rejected(reason, str(exc)[:3000])
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected("undecodable", f"{type(exc).__name__}: {exc}"[:3000])


__all__ = ["MeterReading", "MeterReadingEvent", "Rejected", "decode_reading"]
