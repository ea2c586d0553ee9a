"""The outbox relay's run loop retries a failed publish through the one retry policy (decision 0840):
with the broker paused the rows stay and each retry is counted; once it is back every row is
published; ``stop`` ends the loop even in the middle of a backoff wait."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from dr_coordinator.entrypoints.relay import OutboxRelay
from energy.adapters.kafka import make_producer
from energy.observability.metrics import REGISTRY
from energy.settings import Settings
from energy.stack.servers import KafkaServer
from energy.stack.topics import ensure_topics_async
from tests.waiting import wait_until

pytestmark = pytest.mark.chaos


def _relay_retries() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "energy_retries":
            total += sum(
                s.value
                for s in metric.samples
                if s.name.endswith("_total") and s.labels["dependency"] == "outbox-relay"
            )
    return total


async def test_relay_run_retries_while_the_broker_is_paused_then_publishes_and_stops(
    settings: Settings, pg_pool: Any, private_server: Any, uid: str
) -> None:
    topic = f"dr-relay-run-{uid}"
    broker = private_server(KafkaServer)
    kafka = settings.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{broker.port}", "request_timeout_s": 2.0}
    )
    await ensure_topics_async(kafka.bootstrap_servers, {topic: 1})
    producer = make_producer(kafka, request_timeout_ms=2000)
    await producer.start()
    relay = OutboxRelay(pg_pool, producer, lambda: datetime.now(UTC), batch=20, send_timeout_s=1, topics=[topic])
    stop = asyncio.Event()
    try:
        broker.pause()
        await pg_pool.executemany(
            "INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, 'k', $3, '{}'::jsonb)",
            [(i, topic, json.dumps({"n": n}).encode()) for n, i in enumerate(uuid.uuid4() for _ in range(30))],
        )
        before = _relay_retries()
        task = asyncio.create_task(relay.run(stop, interval_s=0.1))

        async def retried_twice() -> bool:
            return _relay_retries() - before >= 2

        await wait_until(retried_twice, timeout_s=30, what="two retries of the failed publish")
        assert await relay.backlog() == 30  # nothing published, nothing lost
        broker.resume()

        async def drained() -> bool:
            return await relay.backlog() == 0

        await wait_until(drained, timeout_s=60, what="the backlog to drain after the broker returned")
        broker.pause()  # fail again so the loop sits in a backoff wait when told to stop
        await pg_pool.execute(
            "INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, 'k', '{}', '{}'::jsonb)",
            uuid.uuid4(),
            topic,
        )
        failed = _relay_retries()

        async def retrying_again() -> bool:
            return _relay_retries() > failed

        await wait_until(retrying_again, timeout_s=30, what="a retry after the second pause")
        stop.set()
        await asyncio.wait_for(task, 10)  # the wait is cut short; no retry after stop
    finally:
        stop.set()
        broker.resume()
        await producer.stop()
