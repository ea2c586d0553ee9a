"""Every event model by ``(event_type, schema_version)``; decoding goes through here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
from schemas.readings import MeterReadingEvent

EVENT_MODELS: dict[tuple[str, int], type[Envelope[Any]]] = {
    (m.EVENT_TYPE, m.SCHEMA_VERSION): m
    for m in (
        MeterReadingEvent,
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


def decode_event(raw: bytes) -> Envelope[Any]:
    """Parse any event; raises ``ValueError`` (incl. pydantic's) with the reason."""
    head = json.loads(raw)
    if not isinstance(head, dict):
        raise UnknownEventError("event is not a JSON object")
    key = (head.get("event_type"), head.get("schema_version"))
    model = EVENT_MODELS.get(key)  # type: ignore[arg-type]
    if model is None:
        raise UnknownEventError(f"unknown event type/version {key!r}")
    return model.model_validate_json(raw)


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
