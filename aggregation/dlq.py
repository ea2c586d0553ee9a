"""Dead letters of the aggregation stage: raw bytes + reason on the readings DLQ topic."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

from schemas.dlq import DeadLetter, DeadLetterEvent

STAGE = "aggregation"


def dead_letter(
    raw: bytes | None, reason: str, detail: str, source: str, key: bytes | None, now: datetime
) -> DeadLetterEvent:
    letter = DeadLetter(
        stage=STAGE,
        reason=reason,
        detail=detail[:4000],
        raw_b64=base64.b64encode(raw or b"").decode(),
        source=source[:500],
        key=key.decode("utf-8", "replace")[:500] if key else None,
        failed_at=now,
    )
    # Deterministic id: the same record dead-lettered twice (after a replay) is one fact.
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"dlq:{STAGE}:{source}")
    result: DeadLetterEvent = DeadLetterEvent.wrap(letter, source=STAGE, occurred_at=now, event_id=event_id)
    return result


def utcnow() -> datetime:
    return datetime.now(UTC)
