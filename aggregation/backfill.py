"""Backfill: replay the readings of one facility for a time range, from the Parquet archive or
from the Kafka topic, by producing them to the readings topic again (decision 0211).

The running rollup worker that owns the facility's partition rolls them up: one writer per
window (0210), the same lateness rule and maths, its cache sees every sample. Writing to
InfluxDB from the backfill process directly would race the worker (it overwrote the backfill's
rollups with stale ones from its cache). Replayed readings keep their reading_id, ts and
received_at, so duplicates are harmless (samples are keyed by meter and time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from aggregation.archive import read_archive
from aggregation.decode import Rejected, decode_reading
from aggregation.domain.backfill_rules import SeededSpan, backfill_refusal
from energy.adapters.kafka import make_consumer, make_producer
from energy.settings import Settings
from schemas.readings import MeterReading, MeterReadingEvent

SOURCE = "backfill"
PUBLISH_CHUNK = 5000
log = structlog.get_logger("aggregation.backfill")


class BackfillRefusedError(ValueError):
    """The range must not be replayed through the worker (the reason says why and what to do)."""


@dataclass
class BackfillResult:
    readings: int  # published to the readings topic
    rolled_up: bool  # the aggregation group committed past all of them within the wait


async def read_topic(settings: Settings, facility_id: str, start: datetime, end: datetime) -> list[MeterReading]:
    """Every reading of the facility in [start, end) still on the topic (no consumer group)."""
    topic = settings.aggregation.readings_topic
    consumer = make_consumer(settings.kafka, group_id=None, client_id=f"{settings.kafka.client_id}-backfill")
    timeout = settings.kafka.request_timeout_s * 4
    await asyncio.wait_for(consumer.start(), timeout)
    out: list[MeterReading] = []
    try:
        parts = await asyncio.wait_for(_partitions(consumer, topic), timeout)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        # Read until every partition passed its reported end AND a poll comes back empty:
        # the local broker (Tansu) reports the end as the base offset of the last record batch.
        reached: set[TopicPartition] = {tp for tp in tps if ends[tp] == 0}
        empty_polls = 0
        while empty_polls < 5:
            got = await asyncio.wait_for(consumer.getmany(timeout_ms=1000, max_records=10_000), timeout)
            for tp, recs in got.items():
                for rec in recs:
                    ev = decode_reading(rec.value)
                    if isinstance(ev, Rejected):
                        continue
                    r = ev.payload
                    if r.facility_id == facility_id and start <= r.ts < end:
                        out.append(r)
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    reached.add(tp)
            empty_polls = 0 if got else empty_polls + 1
            if not got and len(reached) == len(tps):
                break
    finally:
        await consumer.stop()
    return out


async def seeded_span(settings: Settings, facility_id: str) -> SeededSpan | None:
    """The facility's seeded history (``fleet_history``, decision 0820), or None when it has none."""
    from energy.adapters.postgres import create_pool

    pool = await create_pool(settings.postgres, min_size=1, max_size=1)
    try:
        row = await pool.fetchrow(
            "SELECT start_at, end_at, interval_s FROM fleet_history WHERE facility_id = $1", facility_id
        )
    finally:
        await pool.close()
    return SeededSpan(facility_id, row["start_at"], row["end_at"], float(row["interval_s"])) if row else None


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


async def publish(
    settings: Settings, readings: Iterable[MeterReading], on_published: Callable[[int], None] | None = None
) -> dict[TopicPartition, int]:
    """Produce the readings to the readings topic, keyed like ingestion (facility_id), in time
    order; returns the offset after the last record produced, per partition. ``on_published``
    hears of each acknowledged chunk's size (progress)."""
    topic = settings.aggregation.readings_topic
    producer = make_producer(settings.kafka)
    await asyncio.wait_for(producer.start(), settings.kafka.request_timeout_s * 4)
    ends: dict[TopicPartition, int] = {}
    try:
        ordered = sorted(readings, key=lambda r: (r.ts, r.meter_id))
        for i in range(0, len(ordered), PUBLISH_CHUNK):
            futures = []
            for r in ordered[i : i + PUBLISH_CHUNK]:
                event = MeterReadingEvent.wrap(r, source=SOURCE, occurred_at=r.ts, event_id=r.reading_id)
                futures.append(await producer.send(topic, event.to_bytes(), key=r.facility_id.encode()))
            sent = await asyncio.wait_for(asyncio.gather(*futures), settings.kafka.produce_timeout_s * 4)
            for meta in sent:
                tp = TopicPartition(meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
            if on_published is not None:
                on_published(len(sent))
    finally:
        await producer.stop()
    return ends


async def wait_rolled_up(settings: Settings, ends: dict[TopicPartition, int], timeout_s: float) -> bool:
    """True once the aggregation group committed past every published record (the worker wrote them)."""
    consumer = make_consumer(settings.kafka, group_id=settings.aggregation.consumer_group)  # never subscribed
    await asyncio.wait_for(consumer.start(), settings.kafka.request_timeout_s * 4)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            behind = [tp for tp, end in ends.items() if (await consumer.committed(tp) or 0) < end]
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning("backfill_not_rolled_up_yet", partitions=[f"{tp.topic}:{tp.partition}" for tp in behind])
                return False
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def backfill(
    settings: Settings,
    facility_id: str,
    start: datetime,
    end: datetime,
    source: str,
    wait_s: float = 600.0,
    on_read: Callable[[int], None] | None = None,
    on_published: Callable[[int], None] | None = None,
) -> BackfillResult:
    """``on_read`` hears how many readings were found, then ``on_published`` of each chunk produced (progress).
    Raises :class:`BackfillRefusedError` over the facility's seeded history (decision 0950)."""
    reason = backfill_refusal(
        await seeded_span(settings, facility_id), start, end, settings.aggregation.expected_interval_s
    )
    if reason is not None:
        raise BackfillRefusedError(reason)
    if source == "archive":
        readings: list[MeterReading] = list(
            await asyncio.to_thread(
                lambda: list(read_archive(settings.aggregation.archive_uri, facility_id, start, end))
            )
        )
    elif source == "topic":
        readings = await read_topic(settings, facility_id, start, end)
    else:
        raise ValueError(f"unknown source {source!r}: use archive or topic")
    if on_read is not None:
        on_read(len(readings))
    ends = await publish(settings, readings, on_published)
    rolled_up = await wait_rolled_up(settings, ends, wait_s) if wait_s > 0 and ends else not ends
    return BackfillResult(len(readings), rolled_up)


__all__ = [
    "BackfillRefusedError",
    "BackfillResult",
    "backfill",
    "publish",
    "read_topic",
    "seeded_span",
    "wait_rolled_up",
]
