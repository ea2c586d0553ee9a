"""Outbox relay: publishes the DR outbox rows to Kafka, at least once, oldest first.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` inside a transaction that stays open while the
batch is sent and acknowledged by the broker, then marked published. A crash in between sends
the batch again (consumers dedupe on the envelope's ``event_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from opentelemetry.trace import SpanKind

from dr_coordinator.metrics import LOOP_ERRORS, OUTBOX_BACKLOG, OUTBOX_ERRORS, OUTBOX_PUBLISHED
from energy.observability import tracing
from energy.resilience import RetryPolicy, keep_trying
from schemas.topics import BMS_COMMANDS, BMS_COMMANDS_DLQ, DR_EVENTS

log = structlog.get_logger("dr.relay")
DR_TOPICS = [DR_EVENTS, BMS_COMMANDS, BMS_COMMANDS_DLQ]

_CLAIM = """
SELECT id, topic, key, payload, headers FROM outbox
WHERE published_at IS NULL AND topic = ANY($1::text[])
ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
"""


class OutboxRelay:
    def __init__(
        self,
        pool: Any,
        producer: Any,
        clock: Callable[[], datetime],
        batch: int = 500,
        send_timeout_s: float = 10.0,
        topics: list[str] | None = None,
        topic_map: dict[str, str] | None = None,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.clock = clock
        self.batch = batch
        self.send_timeout_s = send_timeout_s
        self.topics = topics or DR_TOPICS
        self.topic_map = topic_map or {}  # tests publish to their own topic names

    async def publish_once(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self.topics, self.batch)
            if not rows:
                return 0
            futures = []
            for r in rows:
                headers = json.loads(r["headers"]) if isinstance(r["headers"], str) else dict(r["headers"] or {})
                topic = self.topic_map.get(r["topic"], r["topic"])
                # A producer span under the saga span that wrote the row; consumers continue from it.
                with tracing.use_trace(
                    tracing.parse_traceparent(headers.get("traceparent")),
                    f"dr.outbox.publish {r['topic']}",
                    SpanKind.PRODUCER,
                    {"messaging.destination.name": topic, "event_type": str(headers.get("event_type", ""))},
                ) as span:
                    headers["traceparent"] = span.traceparent
                    futures.append(
                        await self.producer.send(
                            topic,
                            bytes(r["payload"]),
                            key=r["key"].encode() if r["key"] else None,
                            headers=[(k, str(v).encode()) for k, v in headers.items()],
                        )
                    )
            await asyncio.wait_for(asyncio.gather(*futures), self.send_timeout_s)
            await conn.execute(
                "UPDATE outbox SET published_at = $2 WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
                self.clock(),
            )
        OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def backlog(self) -> int:
        n = await self.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND topic = ANY($1::text[])", self.topics
        )
        OUTBOX_BACKLOG.set(n)
        return int(n)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Poll the outbox every ``interval_s`` (at once while batches come); a failed publish (broker or
        database down) keeps its rows and is retried with the retry policy until it succeeds or ``stop``."""
        retry = RetryPolicy(attempts=None, base_delay_s=interval_s, max_delay_s=30.0)
        while not stop.is_set():
            sent = await keep_trying("outbox-relay", self.publish_once, policy=retry, on_error=_failed, stop=stop)
            if sent is None:
                return
            if sent == 0:
                with contextlib.suppress(Exception):
                    await self.backlog()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)


def _failed(exc: BaseException) -> None:
    OUTBOX_ERRORS.inc()
    LOOP_ERRORS.labels("relay").inc()
    log.warning("outbox_relay_failed", error=f"{type(exc).__name__}: {exc}")
