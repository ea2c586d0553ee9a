"""Ingestion scale-out (decision 0210): replicas with their own client ids share one MQTT
subscription ($share/<group>/...) on the real Mosquitto; every reading reaches Kafka once, and
a replica killed with SIGKILL loses nothing (its session is resumed when it comes back, as a
restarted container of the same pod does)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from energy.fleet import build_fleet
from energy.stack.process import free_port
from tests.ingestion.conftest import ENERGY, clear_mqtt_session, ingest_settings, read_topic, run_sim
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


def replica_env(s, replica: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENERGY_ENVIRONMENT": "test",
            "ENERGY_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "ENERGY_MQTT__HOST": s.mqtt.host,
            "ENERGY_MQTT__PORT": str(s.mqtt.port),
            "ENERGY_MQTT__TOPIC_PREFIX": s.mqtt.topic_prefix,
            "ENERGY_INGESTION__READINGS_TOPIC": s.ingestion.readings_topic,
            "ENERGY_INGESTION__DLQ_TOPIC": s.ingestion.dlq_topic,
            "ENERGY_INGESTION__MQTT_CLIENT_ID": s.ingestion.mqtt_client_id,
            "ENERGY_INGESTION__MQTT_REPLICA_ID": replica,
            "ENERGY_INGESTION__DEDUP_ENABLED": "false",
            "ENERGY_ENDPOINTS__INGESTION_PORT": str(free_port()),
            "ENERGY_LOG__LEVEL": "INFO",
        }
    )
    return env


def start_replica(s, replica: str, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [str(ENERGY), "ingestion", "run"], env=replica_env(s, replica), stdout=log, stderr=subprocess.STDOUT
    )


async def wait_log(path: Path, text: str, count: int = 1, timeout_s: float = 30) -> None:
    await wait_until(
        lambda: path.read_text(errors="replace").count(text) >= count,
        timeout_s=timeout_s,
        what=f"{text!r} x{count} in {path}",
    )


async def test_two_replicas_on_a_shared_subscription_deliver_every_reading_once_and_a_killed_one_loses_nothing(
    settings, uid, start_service, tmp_path
):
    s = ingest_settings(settings, uid, dedup_enabled=False, mqtt_replica_id="a")
    s_b = s.model_copy(update={"ingestion": s.ingestion.model_copy(update={"mqtt_replica_id": "b"})})
    a = await start_service(s)
    log_b = tmp_path / "replica-b.log"
    b = start_replica(s, "b", log_b)
    try:
        await wait_log(log_b, "mqtt_subscribed")
        fleet = build_fleet()[:2]
        meters = [m.meter_id for f in fleet for m in f.meters]

        # 1. Both replicas up: every reading once, and both took a share.
        summary = await run_sim(s, "--count", "10", "--rate", "400", "--facilities", "2", "--seed", "3")
        expected = {(m, q) for m in meters for q in range(10)}
        assert summary["messages"] == len(expected)
        records = await read_topic(s, s.ingestion.readings_topic, expect=len(expected), timeout_s=60)
        counts = Counter((r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records)
        assert set(counts) == expected
        assert max(counts.values()) == 1, "a reading reached Kafka twice"
        assert 0 < a.mqtt.messages < len(expected), "the broker shares the messages between the replicas"

        # 2. Kill -9 replica b while meters publish, then it comes back with the same id.
        sim = asyncio.create_task(
            run_sim(s, "--count", "20", "--rate", "200", "--facilities", "2", "--seed", "4", "--seq-start", "10")
        )
        await wait_until(  # the second stream is flowing
            lambda: a.mqtt.messages >= len(expected) + 20 or sim.done(),
            timeout_s=60,
            what="replica a taking readings of the second stream",
            interval_s=0.05,
        )
        assert not sim.done(), "the kill must land while meters publish"
        b.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(b.wait, 10) == -signal.SIGKILL
        await sim
        b = start_replica(s, "b", log_b)
        await wait_log(log_b, "mqtt_subscribed", count=2)
        expected2 = expected | {(m, q) for m in meters for q in range(10, 30)}
        records = await read_topic(s, s.ingestion.readings_topic, expect=len(expected2), timeout_s=60)
        got = {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records}
        assert got == expected2, f"lost {sorted(expected2 - got)[:5]}"
    finally:
        if b.poll() is None:
            b.send_signal(signal.SIGTERM)
            await asyncio.to_thread(b.wait, 20)
        await clear_mqtt_session(s_b)
