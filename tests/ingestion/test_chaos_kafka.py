"""Chaos: the broker hangs (SIGSTOP) or dies and restarts empty while meters keep publishing.

ING-3: the buffer stays within its limit, the MQTT reader stops taking messages (they wait,
unacknowledged, in Mosquitto's persistent session), readiness reports the backpressure,
and when the broker answers again every reading arrives: counted by (meter, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from datetime import timedelta

import psutil
import pytest

from energy.fleet import build_fleet
from energy.stack.servers import KafkaServer
from tests.ingestion.conftest import RECENT_DAY, ingest_settings, read_topic, run_sim
from tests.waiting import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

FACILITIES = 5
COUNT = 90  # readings per meter
RATE = 150  # readings/s: about 30 s of publishing
BUFFER = 400
HANG_S = 20.0
DOWN_S = 20.0
MOSQUITTO_MAX_INFLIGHT = 1000  # max_inflight_messages in the stack's mosquitto.conf
EXPECTED = {(m.meter_id, q) for f in build_fleet()[:FACILITIES] for m in f.meters for q in range(COUNT)}


class Sampler:
    """Samples buffer depth, MQTT queue and RSS every 100 ms while the test runs."""

    def __init__(self, service) -> None:
        self.service = service
        self.proc = psutil.Process(os.getpid())
        self.rss_start = self.proc.memory_info().rss
        self.rss_max = self.rss_start
        self.depth_max = 0
        self.not_ready_seen = False
        self.held_max = 0  # MQTT messages in this process not yet acknowledged to Mosquitto
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.rss_max = max(self.rss_max, self.proc.memory_info().rss)
            self.depth_max = max(self.depth_max, self.service.buffer.used)
            self.held_max = max(self.held_max, self.service.mqtt.pending + self.service.mqtt.unacked)
            if "kafka_backpressure" in self.service.health.conditions:
                self.not_ready_seen = True
            await asyncio.sleep(0.1)  # the sampling period: a pace, not a wait for anything

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def sim_args():
    return ("--count", str(COUNT), "--rate", str(RATE), "--facilities", str(FACILITIES), "--seed", "3")


async def wait_drained(service, timeout_s: float = 60) -> None:
    await wait_until(
        lambda: service.buffer.used == 0 and service.mqtt.unacked == 0,
        timeout_s=timeout_s,
        what=f"drained (buffer {service.buffer.used}, unacked {service.mqtt.unacked} when the wait began)",
    )


async def test_broker_hung_for_20s_loses_no_reading_and_memory_stays_bounded(
    settings, uid, private_server, start_service
):
    broker = private_server(KafkaServer)
    s = ingest_settings(
        settings,
        uid,
        bootstrap=f"127.0.0.1:{broker.port}",
        buffer_size=BUFFER,
        publish_timeout_s=2.0,
        dedup_enabled=False,
    )
    service = await start_service(s)
    sampler = Sampler(service)
    sim = asyncio.create_task(run_sim(s, *sim_args()))
    await wait_until(
        lambda: service.publisher.stats.published["reading"], timeout_s=60, what="Kafka acknowledged readings"
    )
    broker.pause()
    paused_at = time.monotonic()
    try:
        # The reader stops when the buffer is full and Kafka does not answer. Proof that it stopped, not a
        # fixed wait: after that point at least 100 more messages reach this process's MQTT client (or
        # Mosquitto's in-flight window is exhausted) and the reader takes at most one of them: the one it
        # may already hold when the buffer fills (it takes a message, then waits for room to put it).
        await wait_until(
            lambda: service.buffer.full and "kafka_backpressure" in service.health.conditions,
            timeout_s=60,
            what="buffer full under Kafka backpressure",
        )
        taken_mid_pause = service.mqtt.messages
        offered_mark = service.mqtt.pending
        await wait_until(
            lambda: (
                service.mqtt.pending >= offered_mark + 100
                or service.mqtt.pending + service.mqtt.unacked >= MOSQUITTO_MAX_INFLIGHT
                or service.mqtt.messages > taken_mid_pause + 1
            ),
            timeout_s=60,
            what="MQTT messages offered to the stopped reader",
        )
        # The hang lasts its full 20 s (the outage is the cause under test, not the proof).
        await asyncio.sleep(max(0.0, HANG_S - (time.monotonic() - paused_at)))
        taken_end_of_pause = service.mqtt.messages
        held_in_pause = sampler.held_max
        ready_ok, ready_body = await service.health.ready()
    finally:
        broker.resume()
    summary = await sim
    await wait_drained(service)
    await sampler.stop()

    assert summary["readings"] == len(EXPECTED)
    records = await read_topic(s, s.ingestion.readings_topic, expect=len(EXPECTED), timeout_s=60)
    got = {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records}
    assert got == EXPECTED, f"missing {len(EXPECTED - got)}"
    # While the broker hung: the reader stopped taking messages (they stayed in Mosquitto),
    # readiness said why, and the buffer never went over its limit.
    assert taken_end_of_pause - taken_mid_pause <= 1
    assert not ready_ok and "kafka_backpressure" in ready_body["conditions"]
    assert sampler.not_ready_seen
    assert sampler.depth_max <= BUFFER
    # Mosquitto stops sending at max_inflight_messages (1000) unacknowledged QoS 1 messages; the rest wait
    # in its persistent session. After the broker returns, bulk acks let a bounded burst through.
    assert held_in_pause <= 1000
    assert sampler.held_max <= 3000
    assert sampler.rss_max - sampler.rss_start < 150 * 2**20
    assert "kafka_backpressure" not in service.health.conditions
    duplicates = len(records) - len(got)
    print(json.dumps({"readings": len(EXPECTED), "records": len(records), "duplicates": duplicates}))


async def test_broker_down_20s_then_restarted_empty_gets_every_reading_published_meanwhile(
    settings, uid, private_server, start_service
):
    readings_topic, dlq_topic = f"t-readings-{uid}", f"t-dlq-{uid}"
    # provision() creates the topics with asyncio.run, so start and restart run off the event loop.
    # The memory-only Tansu acknowledges produce requests for a topic it does not have (yet) and drops them;
    # real Kafka answers UNKNOWN_TOPIC_OR_PARTITION (retriable) and keeps its topics across a restart anyway.
    # So the restart below freezes this event loop (and the in-process service with it) until the new broker
    # has its topics again: the service's first produce meets the topics as they were.
    broker = await asyncio.to_thread(private_server, KafkaServer, topics=((readings_topic, 6), (dlq_topic, 1)))
    s = ingest_settings(settings, uid, bootstrap=f"127.0.0.1:{broker.port}", buffer_size=BUFFER, publish_timeout_s=2.0)
    service = await start_service(s)
    meters = [m.meter_id for f in build_fleet()[:FACILITIES] for m in f.meters]
    start = RECENT_DAY + timedelta(hours=8)
    before = ("--rate", "500", "--facilities", str(FACILITIES), "--seed", "5")
    # The broker keeps its log in memory only: what it had is gone after the restart. So the first
    # run is read back before the stop, and the second runs entirely while the broker is down.
    await run_sim(s, "--count", "20", "--start", start.isoformat(), *before)
    first = await read_topic(s, readings_topic, expect=20 * len(meters))
    assert {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in first} == {
        (m, q) for m in meters for q in range(20)
    }

    await asyncio.to_thread(broker.stop)
    sampler = Sampler(service)
    later = start + timedelta(minutes=20 * 15 // 60 + 5)
    sim = asyncio.create_task(
        run_sim(
            s,
            "--count",
            "60",
            "--seq-start",
            "20",
            "--start",
            later.isoformat(),
            "--rate",
            str(RATE),
            "--facilities",
            str(FACILITIES),
            "--seed",
            "6",
        )
    )
    down_at = time.monotonic()
    await wait_until(
        lambda: service.buffer.used > 0 and "kafka_backpressure" in service.health.conditions,
        timeout_s=60,
        what="readings held in the buffer while the broker is down",
    )
    # The broker stays down its full 20 s (the outage is the cause under test, not the proof).
    await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
    down_depth = service.buffer.used
    ready_ok, ready_body = await service.health.ready()
    restart = threading.Thread(target=broker.start)  # a new, empty broker on the same port, topics recreated
    restart.start()
    restart.join()  # deliberately blocking the loop: see above
    summary = await sim
    await wait_drained(service)
    await sampler.stop()

    assert summary["readings"] == 60 * len(meters)
    records = await read_topic(s, readings_topic, expect=60 * len(meters), timeout_s=60)
    got = {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records}
    expected = {(m, q) for m in meters for q in range(20, 80)}
    assert got == expected, (
        f"missing {len(expected - got)}; acked by Kafka {service.publisher.stats.published}; "
        f"MQTT messages taken {service.mqtt.messages}; sim {summary['messages']}; records read {len(records)}"
    )
    assert 0 < down_depth <= BUFFER
    assert not ready_ok and "kafka_backpressure" in ready_body["conditions"]
    assert sampler.depth_max <= BUFFER
    assert sampler.rss_max - sampler.rss_start < 150 * 2**20


async def test_mqtt_messages_are_acknowledged_only_after_kafka_has_them_so_a_restart_loses_nothing(
    settings, uid, private_server, start_service
):
    broker = private_server(KafkaServer)
    s = ingest_settings(settings, uid, bootstrap=f"127.0.0.1:{broker.port}", publish_timeout_s=1.0, dedup_enabled=False)
    first = await start_service(s)
    broker.pause()
    try:
        summary = await run_sim(s, "--count", "5", "--rate", "500", "--facilities", "2", "--seed", "9")
        await wait_until(
            lambda: first.mqtt.messages == summary["messages"],
            timeout_s=30,
            what=f"all {summary['messages']} MQTT messages taken",
        )
        assert first.mqtt.messages == summary["messages"] == 100
        assert first.publisher.stats.published["reading"] == 0
        await first.stop()  # the service goes away with all 100 messages taken but none acknowledged
    finally:
        broker.resume()
    second = await start_service(s)  # same client id: Mosquitto redelivers what was never acknowledged
    records = await read_topic(s, s.ingestion.readings_topic, expect=100, timeout_s=60)
    got = {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records}
    expected = {(m.meter_id, q) for f in build_fleet()[:2] for m in f.meters for q in range(5)}
    assert got == expected
    assert second.mqtt.messages >= 100
