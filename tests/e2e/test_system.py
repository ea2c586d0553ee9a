"""The whole system as `make run` starts it: every process answers, readings flow from the
simulated meters over MQTT, Kafka and the rollup worker into InfluxDB and out of the API,
a second `energy run` is harmless, and `energy stop` leaves no process behind.

Runs on its own ports, MQTT prefix, topics and consumer group, so it never collides with a
developer's running `make run`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest

from energy.runner import PROCESSES
from energy.stack.process import free_port, pid_alive, read_pid
from energy.stack.topics import ensure_topics_async
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _energy(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "energy.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


async def test_energy_run_starts_everything_and_readings_reach_the_api(stack, settings, uid, tmp_path) -> None:
    ports = {spec.port_field: free_port() for spec in PROCESSES}
    readings_topic, dlq_topic = f"e2e-readings-{uid}", f"e2e-dlq-{uid}"
    await ensure_topics_async(settings.kafka.bootstrap_servers, {readings_topic: 6, dlq_topic: 1})
    env = {
        **os.environ,
        "ENERGY_STACK__DATA_DIR": str(tmp_path / "stack"),
        "ENERGY_MQTT__TOPIC_PREFIX": f"e2e-{uid}",
        "ENERGY_INGESTION__MQTT_CLIENT_ID": f"e2e-ingestion-{uid}",
        "ENERGY_INGESTION__READINGS_TOPIC": readings_topic,
        "ENERGY_INGESTION__DLQ_TOPIC": dlq_topic,
        "ENERGY_AGGREGATION__READINGS_TOPIC": readings_topic,
        "ENERGY_AGGREGATION__DLQ_TOPIC": dlq_topic,
        "ENERGY_AGGREGATION__CONSUMER_GROUP": f"e2e-aggregation-{uid}",
        "ENERGY_AGGREGATION__ARCHIVE_URI": str(tmp_path / "archive"),
        "ENERGY_DR__ONLY_UTILITY_IDS": f"e2e-none-{uid}",  # keep this coordinator away from other tests' events
        **{f"ENERGY_ENDPOINTS__{field.upper()}": str(port) for field, port in ports.items()},
    }
    (tmp_path / "stack").mkdir()
    started_at = datetime.now(UTC)
    try:
        first = _energy(env, "run")
        assert first.returncode == 0, first.stdout + first.stderr
        for spec in PROCESSES:
            assert spec.name in first.stdout
            assert "NOT ANSWERING" not in first.stdout

        async with httpx.AsyncClient(timeout=5) as client:
            for spec in PROCESSES:
                r = await client.get(f"http://127.0.0.1:{ports[spec.port_field]}/healthz")
                assert r.status_code == 200, spec.name

            # Readings published every 15 s reach the 1-minute rollup and the API's current load.
            api = f"http://127.0.0.1:{ports['api_port']}"
            headers = {"X-Api-Key": "dev-key-tenant-a-analyst"}

            async def current_load() -> dict:
                r = await client.get(f"{api}/api/facilities/fac-001/current", headers=headers)
                return r.json() if r.status_code == 200 else {}

            # Before the first reading arrives the API answers 200 with no data (as_of null).
            current = await wait_until(
                current_load,
                accept=lambda c: bool(c.get("as_of")) and _utc(c["as_of"]) >= started_at and bool(c.get("rollup_1m")),
                timeout_s=120,
                what="this run's readings in the current load",
                interval_s=2,
            )
            assert current.get("meters_reporting", 0) > 0, current
            assert _utc(current["as_of"]) >= started_at
            assert current["rollup_1m"]["sample_count"] > 0
            # Tenant isolation holds on the running system too: fac-002 belongs to tenant-b.
            r = await client.get(f"{api}/api/facilities/fac-002/current", headers=headers)
            assert r.status_code in (403, 404)

        # ...and they went through this run's own pipeline: its MQTT prefix fed its readings topic, and its
        # rollup worker committed offsets there only after writing to InfluxDB.
        assert await _facility_messages(settings, readings_topic, "fac-001") > 0
        assert await _committed(settings, f"e2e-aggregation-{uid}", readings_topic) > 0

        # A newcomer's demand-response event: the simulated utility calls it through its VTN, whose
        # notification reaches this run's webhook; the command says when the platform has it.
        demo = _energy(env, "dr", "demo", "--facility", "fac-001", "--in", "30m", "--for", "15m", "--wait-s", "90")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "the platform took it as DR event" in demo.stdout
        demo_event = demo.stdout.split("the platform took it as DR event ")[1].split()[0]
        facilities = await _dr_event_facilities(settings, demo_event)
        assert facilities == ["fac-001"]

        second = _energy(env, "run")
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == len(PROCESSES)
    finally:
        pids = [read_pid(tmp_path / "stack" / "run" / f"{spec.name}.pid") for spec in PROCESSES]
        stopped = _energy(env, "stop", timeout=240)
    assert stopped.returncode == 0, stopped.stderr
    assert all(pid is not None for pid in pids)
    assert not any(pid_alive(pid) for pid in pids), "energy stop left a process behind"


async def _dr_event_facilities(settings, dr_event_id: str) -> list[str]:
    """The facilities of a DR event; the event is cancelled afterwards so no other test's coordinator
    dispatches it."""
    import asyncpg

    conn = await asyncpg.connect(settings.postgres.dsn())
    try:
        rows = await conn.fetch(
            "SELECT facility_id FROM dr_event_facilities WHERE dr_event_id = $1::uuid ORDER BY facility_id", dr_event_id
        )
        await conn.execute("UPDATE dr_events SET state = 'cancelled' WHERE dr_event_id = $1::uuid", dr_event_id)
    finally:
        await conn.close()
    return [r["facility_id"] for r in rows]


async def _facility_messages(settings, topic: str, facility_id: str) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000, max_records=5000)
        return sum(1 for records in batch.values() for r in records if r.key == facility_id.encode())
    finally:
        await consumer.stop()


async def _committed(settings, group: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        total = 0
        for partition in partitions:
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
