"""The event envelope every Kafka message carries (W3C traceparent travels in headers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

PayloadT = TypeVar("PayloadT", bound=BaseModel)

SOURCE_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"


class StrictModel(BaseModel):
    """Base of inbound payloads we validate at the edge: strict types, unknown fields rejected, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class EventModel(BaseModel):
    """Base of every event envelope and payload: strict types, immutable, unknown fields *ignored*.

    Events are read by services deployed at another version than their producer's: a minor
    version of an event only adds optional fields, which an older consumer must accept and
    ignore (docs/decisions/0204). Only a different major ``schema_version`` is incompatible.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(EventModel, Generic[PayloadT]):
    """Subclasses pin ``EVENT_TYPE``, ``SCHEMA_VERSION`` (the major, on the wire) and the payload model.

    ``SCHEMA_MINOR`` documents additive revisions of a major; it is not on the wire, since
    consumers of any minor of a major read every other minor of it.
    """

    EVENT_TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    SCHEMA_MINOR: ClassVar[int] = 0

    event_id: uuid.UUID = Field(description="Unique per event; deterministic where the fact is (e.g. a reading)")
    event_type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(description="When the fact happened in the world")
    produced_at: AwareDatetime = Field(description="When this message was produced")
    source: str = Field(pattern=SOURCE_PATTERN, description="Producing service, e.g. ingestion")
    correlation_id: str | None = Field(default=None, max_length=128)
    payload: PayloadT

    @classmethod
    def wrap(
        cls,
        payload: PayloadT,
        *,
        source: str,
        occurred_at: datetime,
        event_id: uuid.UUID | None = None,
        correlation_id: str | None = None,
        produced_at: datetime | None = None,
    ) -> Any:
        return cls(
            event_id=event_id or uuid.uuid4(),
            event_type=cls.EVENT_TYPE,
            schema_version=cls.SCHEMA_VERSION,
            occurred_at=occurred_at,
            produced_at=produced_at or utcnow(),
            source=source,
            correlation_id=correlation_id,
            payload=payload,
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
