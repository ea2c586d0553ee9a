"""The ingestion process: MQTT and HTTP in, validated readings and dead letters out to Kafka.

``energy ingestion run`` builds one :class:`IngestionService` from the settings and runs it
until SIGTERM; tests build it in-process with settings whose topics, client id and ports
are their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from energy.adapters.kafka import make_producer, security_options
from energy.adapters.postgres import create_pool
from energy.fleet import token_hash
from energy.observability.health import Health
from energy.observability.http import DOCS_ASSETS_URL, ops_router, serve_app
from energy.observability.logging import configure_logging, get_logger
from energy.resilience import RetryPolicy, keep_trying
from energy.settings import Settings, get_settings
from energy.stack.topics import ensure_topics_async
from ingestion.domain import DedupWindow, RegisterTracker, Validator
from ingestion.http_api import readings_router
from ingestion.mqtt_source import MqttSource
from ingestion.pipeline import Buffer, Publisher
from ingestion.raw_source import RawKafkaSource
from ingestion.registry import MeterRegistry, upsert_gateway_key
from schemas.topics import TOPICS

log = get_logger(__name__)
DEV_KEY_ID = "dev-gateway"
PRODUCER_START_RETRY = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=2.0)  # until Kafka answers


def http_app(
    settings: Settings,
    health: Health,
    validator: Validator,
    registry: MeterRegistry,
    buffer: Buffer,
    dedup: DedupWindow | None,
) -> FastAPI:
    """The HTTP service: ops endpoints, ``POST /v1/readings``, and offline Swagger UI / ReDoc."""
    app = FastAPIOffline(title="energy ingestion", version="1", static_url=DOCS_ASSETS_URL)
    app.include_router(ops_router(health))
    app.include_router(readings_router(settings, validator, registry, buffer, dedup))
    return app


class IngestionService:
    def __init__(self, settings: Settings, http_port: int | None = None) -> None:
        self.settings = settings
        ing = settings.ingestion
        self.http_port = http_port if http_port is not None else settings.endpoints.ingestion_port
        self.health = Health("ingestion")
        self.buffer = Buffer(ing.buffer_size)
        self.dedup = DedupWindow(ing.dedup_window) if ing.dedup_enabled else None
        self._pool: Any = None
        self.registry: MeterRegistry | None = None
        self.publisher: Publisher | None = None
        self.mqtt: MqttSource | None = None
        self.raw: RawKafkaSource | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._producer: Any = None

    def app(self) -> FastAPI:
        assert self.registry is not None
        return http_app(self.settings, self.health, self._validator, self.registry, self.buffer, self.dedup)

    async def start(self) -> None:
        s = self.settings
        ing = s.ingestion
        self._pool = await create_pool(s.postgres, min_size=1, max_size=3)
        self.registry = MeterRegistry(self._pool, ing.registry_refresh_s)
        if s.environment in ("local", "test"):
            await upsert_gateway_key(self._pool, DEV_KEY_ID, token_hash(ing.dev_gateway_key.get_secret_value()), None)
        await self.registry.refresh()
        self._validator = Validator(
            lookup=self.registry.get,
            limits=ing.limits,
            registers=RegisterTracker(),
            future_tolerance=timedelta(seconds=ing.future_tolerance_s),
            max_message_bytes=ing.max_message_bytes,
            max_age=timedelta(seconds=s.influx.raw_retention_s),
        )
        with contextlib.suppress(Exception):  # the broker may be down at start: we still serve and push back
            await ensure_topics_async(
                s.kafka.bootstrap_servers,
                {
                    ing.readings_topic: TOPICS["meter-readings"].partitions,
                    ing.dlq_topic: TOPICS["meter-readings-dlq"].partitions,
                },
                timeout_s=s.kafka.request_timeout_s,
                security=security_options(s.kafka),
            )
        self._producer = self._make_producer()
        await self._start_producer()
        self.publisher = Publisher(
            self._producer,
            self.buffer,
            self.health,
            timeout_s=ing.publish_timeout_s,
            concurrency=ing.publisher_concurrency,
            chunk_records=ing.publish_chunk_readings,
            dedup=self.dedup,
            linger_s=ing.publisher_linger_ms / 1000,
        )
        self.publisher.start()
        self.mqtt = MqttSource(s, self._validator, self.registry, self.buffer, self.health, self.dedup)
        self._tasks = []
        if ing.mqtt_enabled:
            self.health.set_not_ready("mqtt", "connecting")
            self._tasks.append(asyncio.create_task(self.mqtt.run(), name="mqtt"))
        if ing.raw_topic is not None:
            self.raw = RawKafkaSource(s, self._validator, self.buffer, self.health, self.dedup)
            self._tasks.append(asyncio.create_task(self.raw.run(), name="kafka-raw"))
        self._tasks += [
            asyncio.create_task(self.registry.refresh_forever(), name="registry"),
            asyncio.create_task(serve_app(self.app(), s.stack.bind_host, self.http_port, self._stop), name="http"),
        ]
        log.info("ingestion_started", http_port=self.http_port, topic=ing.readings_topic)

    def _make_producer(self) -> Any:
        return make_producer(self.settings.kafka, linger_ms=self.settings.ingestion.producer_linger_ms)

    async def _start_producer(self) -> None:
        """Start the Kafka producer, retrying (with a fresh producer each time) until Kafka answers."""

        async def start() -> None:
            try:
                await asyncio.wait_for(self._producer.start(), self.settings.kafka.request_timeout_s * 2)
            except Exception as exc:
                self.health.set_not_ready("kafka_backpressure", f"Kafka unavailable at start: {exc}"[:300])
                log.warning("kafka_start_failed", error=str(exc)[:300])
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = self._make_producer()
                raise

        await keep_trying("kafka-producer-start", start, policy=PRODUCER_START_RETRY)

    async def stop(self) -> None:
        """Stop taking messages, deliver what is buffered (bounded), then close clients."""
        self._stop.set()
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        deadline = asyncio.get_running_loop().time() + self.settings.ingestion.publish_timeout_s
        while self.buffer.used and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.publisher is not None:
            await self.publisher.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 5)
        if self._pool is not None:
            await self._pool.close()
        log.info("ingestion_stopped", buffered_left=self.buffer.used)


async def run_service(settings: Settings) -> None:
    service = IngestionService(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    await service.stop()


def main() -> int:
    settings = get_settings()
    configure_logging("ingestion", settings.log.level, settings.log.json_logs)
    asyncio.run(run_service(settings))
    return 0
