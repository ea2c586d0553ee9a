"""Dead letters of the aggregation stage: raw bytes + reason on the readings DLQ topic."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

from schemas.dlq import DeadLetter, DeadLetterEvent

STAGE = "aggregation"
# Base64 of this many bytes plus the envelope stays under the broker's 1 MiB record limit: a bigger
# dead letter would be refused for good and, retried as a Kafka error, hold its partition forever.
MAX_DLQ_RAW_BYTES = 512 * 1024


def dead_letter(
    raw: bytes | None, reason: str, detail: str, source: str, key: bytes | None, now: datetime
) -> DeadLetterEvent:
    raw = raw or b""
    if len(raw) > MAX_DLQ_RAW_BYTES:
        detail = f"raw truncated from {len(raw)} to {MAX_DLQ_RAW_BYTES} bytes; {detail}"
        raw = raw[:MAX_DLQ_RAW_BYTES]
    letter = DeadLetter(
        stage=STAGE,
        reason=reason,
        detail=detail[:4000],
        raw_b64=base64.b64encode(raw).decode(),
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
