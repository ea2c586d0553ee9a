"""Fixtures of the ingestion tests: an in-process service on its own topics, MQTT prefix and
client id; the meter simulator as a subprocess; a Kafka reader that collects a topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest_asyncio

from energy.settings import Settings
from energy.stack.process import free_port
from energy.stack.topics import ensure_topics_async

ROOT = Path(__file__).resolve().parents[2]
# Midnight UTC yesterday: readings of the tests are recent, i.e. within the raw retention that
# ingestion enforces (timestamp_too_old) and never in the future.
RECENT_DAY = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
ENERGY = ROOT / ".venv" / "bin" / "energy"


def ingest_settings(settings: Settings, uid: str, bootstrap: str | None = None, **ingestion: Any) -> Settings:
    """The shared settings with this test's own topics, MQTT prefix and client id."""
    ing = settings.ingestion.model_copy(
        update={
            "readings_topic": f"t-readings-{uid}",
            "dlq_topic": f"t-dlq-{uid}",
            "mqtt_client_id": f"t-ingestion-{uid}",
            **ingestion,
        }
    )
    update: dict[str, Any] = {
        "ingestion": ing,
        "mqtt": settings.mqtt.model_copy(update={"topic_prefix": f"t-{uid}"}),
        "environment": "test",
    }
    if bootstrap is not None:
        update["kafka"] = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    return settings.model_copy(update=update)


@dataclass
class Record:
    key: bytes | None
    value: dict[str, Any]
    headers: dict[str, bytes]
    partition: int


async def read_topic(
    settings: Settings, topic: str, expect: int, timeout_s: float = 30.0, idle_s: float = 1.5
) -> list[Record]:
    """Every record of ``topic`` from the start, until ``expect`` are read (then ``idle_s`` more
    to catch extras such as duplicates) or ``timeout_s`` passes."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=15_000,
    )
    await consumer.start()
    out: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    idle_until: float | None = None
    try:
        while loop.time() < deadline:
            if idle_until is not None and loop.time() >= idle_until:
                break
            batches = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for records in batches.values():
                for r in records:
                    out.append(Record(r.key, json.loads(r.value), dict(r.headers), r.partition))
            if len(out) >= expect and idle_until is None:
                idle_until = loop.time() + idle_s
    finally:
        await consumer.stop()
    return out


async def run_sim(settings: Settings, *args: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run ``energy sim meters`` as a separate process against ``settings``' MQTT and prefix."""
    env = dict(os.environ)
    env["ENERGY_MQTT__HOST"] = settings.mqtt.host
    env["ENERGY_MQTT__PORT"] = str(settings.mqtt.port)
    env["ENERGY_LOG__LEVEL"] = "WARNING"
    exe = [str(ENERGY)] if ENERGY.exists() else [sys.executable, "-m", "energy.cli"]
    proc = await asyncio.create_subprocess_exec(
        *exe,
        "sim",
        "meters",
        "--prefix",
        settings.mqtt.topic_prefix,
        "--port",
        str(free_port()),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, err.decode()[-2000:]
    line = [x for x in out.decode().splitlines() if x.startswith('{"summary"')][-1]
    return json.loads(line)["summary"]  # type: ignore[no-any-return]


async def clear_mqtt_session(settings: Settings) -> None:
    """Drop the persistent session the test's service left in the shared Mosquitto."""
    with contextlib.suppress(Exception):
        async with aiomqtt.Client(
            settings.mqtt.host, settings.mqtt.port, identifier=settings.ingestion.mqtt_session_id, clean_session=True
        ):
            pass


@pytest_asyncio.fixture(loop_scope="session")
async def start_service(stack: Any) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_service(settings)`` runs an IngestionService in-process until the test ends."""
    from ingestion.service import IngestionService

    started: list[IngestionService] = []

    async def start(s: Settings, http_port: int | None = None, wait_mqtt: bool = True) -> IngestionService:
        await ensure_topics_async(
            s.kafka.bootstrap_servers, {s.ingestion.readings_topic: 6, s.ingestion.dlq_topic: 1}, timeout_s=20
        )
        service = IngestionService(s, http_port=http_port or free_port())
        await service.start()
        started.append(service)
        if wait_mqtt:
            assert service.mqtt is not None
            await asyncio.wait_for(service.mqtt.connected.wait(), 15)
        return service

    yield start
    for service in started:
        await service.stop()
        await clear_mqtt_session(service.settings)
