"""Every event model by ``(event_type, schema_version)``; decoding goes through here.

Compatibility rule (docs/decisions/0204): ``schema_version`` on the wire is the *major*.
A consumer decodes any event of a major it knows, whatever minor the producer is at
(unknown fields are ignored, see :class:`schemas.envelope.EventModel`); a major it does not
know is refused with :class:`IncompatibleVersionError`, which consumers dead-letter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from schemas.dlq import DeadLetterEvent
from schemas.dr import (
    BmsCommandAcknowledgedEvent,
    BmsCommandFailedEvent,
    BmsCommandIssuedEvent,
    DrEventReceivedEvent,
    DrEventStateChangedEvent,
)
from schemas.envelope import Envelope
from schemas.forecasts import ForecastPublishedEvent
from schemas.readings import LateWindowEvent, MeterReadingEvent

EVENT_MODELS: dict[tuple[str, int], type[Envelope[Any]]] = {
    (m.EVENT_TYPE, m.SCHEMA_VERSION): m
    for m in (
        MeterReadingEvent,
        LateWindowEvent,
        DrEventReceivedEvent,
        DrEventStateChangedEvent,
        BmsCommandIssuedEvent,
        BmsCommandAcknowledgedEvent,
        BmsCommandFailedEvent,
        ForecastPublishedEvent,
        DeadLetterEvent,
    )
}

JSONSCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


class UnknownEventError(ValueError):
    pass


class IncompatibleVersionError(UnknownEventError):
    """A known event type at a major version this consumer does not read."""


EventT = TypeVar("EventT", bound=Envelope[Any])


def _head(raw: bytes) -> dict[str, Any]:
    head = json.loads(raw)
    if not isinstance(head, dict):
        raise UnknownEventError("event is not a JSON object")
    return head


def _refuse(head: dict[str, Any], expected: str | None = None) -> UnknownEventError:
    event_type, version = head.get("event_type"), head.get("schema_version")
    if expected is not None and event_type != expected:
        return UnknownEventError(f"expected a {expected!r} event, got {event_type!r}")
    known = sorted(v for (t, v) in EVENT_MODELS if t == event_type)
    if known and isinstance(version, int) and not isinstance(version, bool):
        return IncompatibleVersionError(f"{event_type!r} major version {version} is not readable here (known: {known})")
    return UnknownEventError(f"unknown event type/version {(event_type, version)!r}")


def decode_event(raw: bytes) -> Envelope[Any]:
    """Parse any event; raises ``ValueError`` (incl. pydantic's) with the reason."""
    head = _head(raw)
    model = EVENT_MODELS.get((head.get("event_type"), head.get("schema_version")))  # type: ignore[arg-type]
    if model is None:
        raise _refuse(head)
    return model.model_validate_json(raw)


def decode_as(raw: bytes, model: type[EventT]) -> EventT:
    """Parse an event that must be of ``model``'s type and major (any minor).

    The hot path is one validation with ``model``; only a refused event is parsed again to tell
    an incompatible major (:class:`IncompatibleVersionError`) or another event type
    (:class:`UnknownEventError`) from a malformed one (pydantic's ``ValidationError``).
    """
    if EVENT_MODELS.get((model.EVENT_TYPE, model.SCHEMA_VERSION)) is not model:
        raise TypeError(f"{model.__name__} is not a registered event model")
    try:
        return model.model_validate_json(raw)
    except ValidationError as invalid:
        try:
            head = _head(raw)
        except (ValueError, RecursionError):
            raise invalid from None
        if head.get("event_type") != model.EVENT_TYPE or head.get("schema_version") != model.SCHEMA_VERSION:
            raise _refuse(head, model.EVENT_TYPE) from None
        raise


def json_schemas() -> dict[str, dict[str, Any]]:
    return {
        f"{etype}.v{version}.json": model.model_json_schema(mode="validation")
        for (etype, version), model in sorted(EVENT_MODELS.items())
    }


def export(directory: Path = JSONSCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
