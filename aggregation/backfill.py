"""Backfill: rebuild raw points and rollups of one facility for a time range, from the Parquet
archive or from the Kafka topic, through the same engine as the live worker (so the same
lateness rule and the same maths apply, and the writes overwrite)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from aggregation.archive import read_archive
from aggregation.decode import Rejected, decode_reading
from aggregation.dlq import utcnow
from aggregation.engine import RollupEngine
from aggregation.late_windows import lateness_policy
from energy.adapters.influx import InfluxClient
from energy.adapters.kafka import make_consumer
from energy.settings import Settings
from schemas.readings import MeterReading


@dataclass
class BackfillResult:
    readings: int
    too_late: int
    raw_points: int
    rollup_points: int


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


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


async def rebuild(
    settings: Settings, readings: Iterable[MeterReading], influx: InfluxClient | None = None, chunk: int = 5000
) -> BackfillResult:
    cfg = settings.aggregation
    own = influx is None
    client = influx or InfluxClient(settings.influx, breaker_name="influxdb-backfill")
    engine = RollupEngine(client, settings.influx.raw_retention_policy, settings.influx.rollup_retention_policy, cfg)
    policy, now = lateness_policy(settings), utcnow()
    accepted: list[MeterReading] = []
    late = 0
    for r in readings:
        if policy.refusal(r.ts, now) is not None:  # the live worker's rule: beyond retention or in the future
            late += 1
        else:
            accepted.append(r)
    accepted.sort(key=lambda r: (r.ts, r.meter_id))
    raw = rollups = 0
    try:
        for i in range(0, len(accepted), chunk):
            plan = await engine.process(accepted[i : i + chunk])
            raw += len(plan.raw_lines)
            rollups += len(plan.rollup_lines)
    finally:
        if own:
            await client.close()
    return BackfillResult(len(accepted), late, raw, rollups)


async def backfill(settings: Settings, facility_id: str, start: datetime, end: datetime, source: str) -> BackfillResult:
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
    return await rebuild(settings, readings)


__all__ = ["BackfillResult", "backfill", "read_topic", "rebuild"]
