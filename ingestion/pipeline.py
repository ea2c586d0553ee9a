"""The bounded path from a received message to Kafka.

A :class:`WorkItem` is everything one MQTT message (or HTTP request) produced: readings
and dead letters, ready to send, plus what to do once Kafka acknowledged all of them
(ack the MQTT message, answer the HTTP client). Items wait in a :class:`Buffer` bounded
in records; when it is full the MQTT reader stops taking messages (so unacknowledged
QoS 1 messages stay in Mosquitto) and HTTP answers 503. Publisher workers send chunks of
items and retry a chunk until Kafka acknowledges every record in it: nothing is dropped,
and a retry may duplicate a record, which carries the same deterministic event id.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from energy.adapters.kafka import event_headers
from energy.observability import tracing
from energy.observability.health import Health
from energy.observability.logging import get_logger
from energy.observability.metrics import QUEUE_CAPACITY, QUEUE_DEPTH
from energy.resilience import CircuitOpenError, RetryPolicy, guarded_call, keep_trying, make_breaker
from ingestion import metrics
from ingestion.domain import DedupWindow, Outcome, dedup_key
from schemas.dlq import DeadLetter, DeadLetterEvent
from schemas.readings import MeterReadingEvent

log = get_logger(__name__)
SOURCE = "ingestion"
DLQ_NAMESPACE = uuid.UUID("0b7a4f0e-3d7c-4b55-9a43-6c1f1c2d9e01")
BUFFER_QUEUE = "ingestion_buffer"
ANOMALY_STAGE = "ingestion.anomaly"
MAX_DLQ_RAW_BYTES = 512 * 1024  # keeps a dead letter under the broker's 1 MiB record limit
DELIVERY_RETRY = RetryPolicy(attempts=None, base_delay_s=0.2, max_delay_s=2.0)  # until Kafka acknowledges


@dataclass(slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # reading | dlq
    dedup: tuple[str, int] | None = None
    delivered: bool = False


@dataclass
class WorkItem:
    records: list[OutRecord]
    received_at: float  # time.monotonic() at receipt
    on_done: Callable[[], None] | None = None
    done: asyncio.Future[None] | None = None

    @property
    def weight(self) -> int:
        return max(1, len(self.records))


def dead_letter_record(
    reason: str,
    detail: str,
    raw: bytes,
    meter_id: str | None,
    *,
    topic: str,
    source: str,
    now: datetime,
    stage: str = SOURCE,
    trace: tracing.TraceContext | None = None,
) -> OutRecord:
    if len(raw) > MAX_DLQ_RAW_BYTES:
        detail = f"raw truncated from {len(raw)} to {MAX_DLQ_RAW_BYTES} bytes; {detail}"
        raw = raw[:MAX_DLQ_RAW_BYTES]
    raw_b64 = base64.b64encode(raw).decode()
    letter = DeadLetter(
        stage=stage,
        reason=reason,
        detail=detail[:4000],
        raw_b64=raw_b64,
        source=source[:500],
        key=meter_id[:500] if meter_id else None,
        failed_at=now,
    )
    # Deterministic: the same bad bytes from the same place rejected for the same reason is one fact.
    event_id = uuid.uuid5(DLQ_NAMESPACE, f"{stage}|{reason}|{source}|{raw_b64}")
    event = DeadLetterEvent.wrap(letter, source=SOURCE, occurred_at=now, event_id=event_id)
    key = meter_id.encode() if meter_id else None
    return OutRecord(topic, key, event.to_bytes(), event_headers(event, trace or tracing.current()), "dlq")


def build_records(
    outcome: Outcome,
    *,
    readings_topic: str,
    dlq_topic: str,
    source: str,
    path: str,
    now: datetime,
    dedup: DedupWindow | None,
    trace: tracing.TraceContext | None = None,
) -> tuple[list[OutRecord], int]:
    """Kafka records for one message's outcome; returns them and the number of exact repeats dropped."""
    records: list[OutRecord] = []
    dropped = 0
    trace = trace or tracing.current_or_new()
    for reading in outcome.accepted:
        key = dedup_key(reading)
        if dedup is not None and dedup.seen(key):
            dropped += 1
            continue
        event = MeterReadingEvent.wrap(
            reading, source=SOURCE, occurred_at=reading.ts, event_id=reading.reading_id, produced_at=now
        )
        records.append(
            OutRecord(
                readings_topic,
                reading.facility_id.encode(),
                event.to_bytes(),
                event_headers(event, trace),
                "reading",
                key,
            )
        )
        for anomaly in reading.anomalies:
            metrics.ANOMALIES.labels(anomaly.value).inc()
        if reading.anomalies:
            # Kept on the readings topic (flagged) AND copied to the DLQ so out-of-range values are
            # visible with their raw bytes and a reason (docs/decisions/0100-ingestion-validation.md).
            kinds = ",".join(a.value for a in reading.anomalies)
            records.append(
                dead_letter_record(
                    f"anomaly_{reading.anomalies[0].value}",
                    f"kept on {readings_topic} and flagged: {kinds}",
                    reading.model_dump_json().encode(),
                    reading.meter_id,
                    topic=dlq_topic,
                    source=source,
                    now=now,
                    stage=ANOMALY_STAGE,
                    trace=trace,
                )
            )
    metrics.READINGS_VALID.labels(path).inc(len(outcome.accepted))
    for rejection in outcome.rejected:
        metrics.READINGS_INVALID.labels(path, rejection.reason.value).inc()
        records.append(
            dead_letter_record(
                rejection.reason.value,
                rejection.detail,
                rejection.raw,
                rejection.meter_id,
                topic=dlq_topic,
                source=source,
                now=now,
                trace=trace,
            )
        )
    if dropped:
        metrics.DUPLICATES_DROPPED.inc(dropped)
    return records, dropped


class Buffer:
    """A queue of work items bounded by the number of records they hold."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.max_used = 0
        self._queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        self._room = asyncio.Condition()
        self._depth = QUEUE_DEPTH.labels(BUFFER_QUEUE)
        QUEUE_CAPACITY.labels(BUFFER_QUEUE).set(capacity)
        self._depth.set(0)

    def _take(self, n: int) -> None:
        self.used += n
        self.max_used = max(self.max_used, self.used)
        self._depth.set(self.used)

    def weight_of(self, item: WorkItem) -> int:
        return min(item.weight, self.capacity)  # an item larger than the buffer still fits alone

    async def put(self, item: WorkItem) -> None:
        """Wait for room, then enqueue (the MQTT path: waiting here is the backpressure)."""
        if self.try_put(item):
            return
        n = self.weight_of(item)
        async with self._room:
            await self._room.wait_for(lambda: self.used + n <= self.capacity)
            self._take(n)
        self._queue.put_nowait(item)

    def try_put(self, item: WorkItem) -> bool:
        """Enqueue if there is room now (the HTTP path answers 503 otherwise)."""
        n = self.weight_of(item)
        if self.used + n > self.capacity:
            return False
        self._take(n)
        self._queue.put_nowait(item)
        return True

    async def get_chunk(self, max_records: int, linger_s: float = 0.0) -> list[WorkItem]:
        """The next items, up to ``max_records``; a small chunk waits ``linger_s`` once for company,
        because each chunk costs a guarded call and a round of acks whatever its size."""
        items = [await self._queue.get()]
        n = items[0].weight
        if linger_s > 0 and n < max_records and self._queue.qsize() * 4 < max_records:
            await asyncio.sleep(linger_s)
        while n < max_records and not self._queue.empty():
            item = self._queue.get_nowait()
            items.append(item)
            n += item.weight
        return items

    async def release(self, items: list[WorkItem]) -> None:
        async with self._room:
            self.used -= sum(self.weight_of(i) for i in items)
            self._depth.set(self.used)
            self._room.notify_all()

    @property
    def full(self) -> bool:
        return self.used >= self.capacity


@dataclass
class PublisherStats:
    published: dict[str, int] = field(default_factory=lambda: {"reading": 0, "dlq": 0})
    failures: int = 0
    latencies_s: list[float] = field(default_factory=list)


class Publisher:
    """Workers that deliver buffered items to Kafka, retrying until every record is acknowledged."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        buffer: Buffer,
        health: Health,
        *,
        timeout_s: float,
        concurrency: int,
        chunk_records: int,
        dedup: DedupWindow | None,
        breaker_name: str = "kafka-ingestion",
        linger_s: float = 0.0,
    ) -> None:
        self._linger_s = linger_s
        self._producer = producer
        self._buffer = buffer
        self._health = health
        self._timeout_s = timeout_s
        self._concurrency = concurrency
        self._chunk = chunk_records
        self._dedup = dedup
        self._breaker = make_breaker(breaker_name, fail_max=3, reset_s=2.0)
        self._failing = 0
        self.stats = PublisherStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._chunks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    def start(self) -> None:
        self._slots = asyncio.Semaphore(self._concurrency)
        self._tasks = [asyncio.create_task(self._dispatch(), name="publisher")]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._chunks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self) -> None:
        """One taker, up to ``concurrency`` chunks in flight. Items that arrive while every slot waits
        for Kafka go out together in the next chunk. (Several takers each waiting on the buffer split a
        steady flow into chunks of one message, each paying a delivery call and a round of acks.)"""
        while True:
            await self._slots.acquire()
            try:
                items = await self._buffer.get_chunk(self._chunk, self._linger_s)
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._publish(items))
            self._chunks.add(task)
            task.add_done_callback(self._chunks.discard)

    async def _publish(self, items: list[WorkItem]) -> None:
        try:
            await self._deliver([r for item in items for r in item.records])
            now = time.monotonic()
            counts = {"reading": 0, "dlq": 0}
            for item in items:
                for record in item.records:
                    counts[record.kind] += 1
                    if self._dedup is not None and record.dedup is not None:
                        self._dedup.add(record.dedup)
                metrics.PUBLISH_LATENCY.observe(now - item.received_at)
                if item.on_done is not None:
                    item.on_done()
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)
            for kind, n in counts.items():
                self.stats.published[kind] += n
                metrics.PUBLISHED.labels(kind).inc(n)
            await self._buffer.release(items)
        finally:
            self._slots.release()

    async def _send(self, pending: list[OutRecord]) -> None:
        futures = []
        for record in pending:
            if record.delivered:
                continue
            fut = await self._producer.send(record.topic, record.value, key=record.key, headers=record.headers)
            fut.add_done_callback(_mark_delivered(record))
            futures.append(fut)
        if futures:
            await asyncio.gather(*futures)

    async def _deliver(self, records: list[OutRecord]) -> None:
        """Send until Kafka acknowledged every record (an MQTT message is never dropped): Kafka
        errors, timeouts and anything else are retried with the policy; an open breaker is waited out."""

        async def send_pending() -> None:
            pending = [r for r in records if not r.delivered]
            if pending:
                await guarded_call(
                    "kafka", lambda: self._send(pending), timeout_s=self._timeout_s, breaker=self._breaker
                )

        await keep_trying("kafka-delivery", send_pending, policy=DELIVERY_RETRY, on_error=self._failed_with)
        self._recovered()

    def _failed_with(self, exc: BaseException) -> None:
        self._failed("circuit_open" if isinstance(exc, CircuitOpenError) else type(exc).__name__, exc)

    def _failed(self, error: str, exc: BaseException) -> None:
        self._failing += 1
        self.stats.failures += 1
        metrics.PUBLISH_FAILURES.labels(error).inc()
        metrics.BACKPRESSURE.labels("kafka").set(1)
        self._health.set_not_ready("kafka_backpressure", f"Kafka not acknowledging: {error}: {exc}"[:300])
        if self._failing == 1 or self._failing % 50 == 0:
            log.warning("kafka_delivery_failed", error=error, detail=str(exc)[:300], failures=self._failing)

    def _recovered(self) -> None:
        if self._failing:
            log.info("kafka_delivery_recovered", after_failures=self._failing)
            self._failing = 0
            metrics.BACKPRESSURE.labels("kafka").set(0)
            self._health.clear("kafka_backpressure")


def _mark_delivered(record: OutRecord) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            record.delivered = True

    return done
