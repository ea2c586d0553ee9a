"""Dead-letter records: the raw bytes and a machine-readable reason, nothing lost."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import Envelope, EventModel


class DeadLetter(EventModel):
    stage: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$", description="Who rejected it: ingestion, aggregation...")
    reason: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Machine-readable reason code")
    detail: str = Field(max_length=4000)
    raw_b64: str = Field(description="The original bytes, base64")
    source: str = Field(max_length=500, description="Where it came from: MQTT topic, Kafka topic/partition/offset, URL")
    key: str | None = Field(default=None, max_length=500)
    failed_at: AwareDatetime


class DeadLetterEvent(Envelope[DeadLetter]):
    EVENT_TYPE: ClassVar[str] = "dead_letter"
    event_type: Literal["dead_letter"] = "dead_letter"
    schema_version: Literal[1] = 1
