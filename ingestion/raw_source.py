"""Kafka source of raw meter payloads (production: AWS IoT Core's rule forwards MQTT to MSK unchanged).

Each record's value is the MQTT payload; its MQTT topic is in the ``mqtt_topic`` header (or the
key). Records go through the same validation and bounded buffer as MQTT messages; a fetched
batch's offsets are committed only after Kafka acknowledged every reading and dead letter it
produced, so a crash re-reads (same ids) and never skips. A full buffer stops fetching.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from energy.adapters.kafka import make_consumer
from energy.observability import tracing
from energy.observability.health import Health
from energy.observability.logging import get_logger
from energy.resilience import RetryPolicy, keep_trying
from energy.settings import Settings
from ingestion import metrics
from ingestion.domain import DedupWindow, Validator
from ingestion.pipeline import Buffer, WorkItem, build_records

log = get_logger(__name__)
TOPIC_HEADER = "mqtt_topic"
RECONNECT = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=10.0)


def mqtt_topic_of(record: Any) -> str:
    for key, value in record.headers or ():
        if key == TOPIC_HEADER:
            return bytes(value).decode("utf-8", errors="replace")
    return bytes(record.key).decode("utf-8", errors="replace") if record.key else ""


class RawKafkaSource:
    def __init__(
        self, settings: Settings, validator: Validator, buffer: Buffer, health: Health, dedup: DedupWindow | None
    ) -> None:
        self._settings = settings
        self._validator = validator
        self._buffer = buffer
        self._health = health
        self._dedup = dedup
        self.records = 0
        self.committed = 0
        self._received = metrics.MESSAGES_RECEIVED.labels("kafka_raw")

    async def run(self) -> None:
        """Consume until cancelled; on a failure, restart from the last committed offsets (re-read, same ids)."""
        await keep_trying(
            "kafka-raw-source",
            self._consume,
            policy=RECONNECT,
            on_error=self._failed,
            fresh_after_s=RECONNECT.max_delay_s,
        )

    def _failed(self, exc: BaseException) -> None:
        self._health.set_not_ready("kafka_raw_source", f"{type(exc).__name__}: {exc}"[:300])
        log.warning("raw_source_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _consume(self) -> None:
        ing = self._settings.ingestion
        assert ing.raw_topic is not None
        consumer = make_consumer(self._settings.kafka, ing.raw_topic, group_id=ing.raw_group_id, max_poll_records=1_000)
        await consumer.start()
        self._health.clear("kafka_raw_source")
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1_000)
                if not batches:
                    continue
                waits: list[asyncio.Future[None]] = []
                offsets = {}
                for tp, records in batches.items():
                    for record in records:
                        waits.append(await self._handle(record))
                    offsets[tp] = records[-1].offset + 1
                await asyncio.gather(*waits)
                await asyncio.wait_for(consumer.commit(offsets), self._settings.kafka.request_timeout_s * 2)
                self.committed += sum(len(r) for r in batches.values())
        finally:
            await consumer.stop()

    async def _handle(self, record: Any) -> asyncio.Future[None]:
        self.records += 1
        self._received.inc()
        ing = self._settings.ingestion
        topic = mqtt_topic_of(record)
        now = datetime.now(UTC)
        outcome = self._validator.mqtt_message(topic, bytes(record.value or b""), self._settings.mqtt.topic_prefix, now)
        records, _ = build_records(
            outcome,
            readings_topic=ing.readings_topic,
            dlq_topic=ing.dlq_topic,
            source=f"kafka:{record.topic}/{record.partition}/{record.offset}:{topic}"[:500],
            path="kafka_raw",
            now=now,
            dedup=self._dedup,
            trace=tracing.from_kafka_headers(record.headers) or tracing.new_trace(),
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not records:
            done.set_result(None)
            return done
        await self._buffer.put(WorkItem(records, time.monotonic(), done=done))
        return done
