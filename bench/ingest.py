"""Ingestion benchmark: MQTT -> ingestion service -> Kafka, against the local stack.

The ingestion service runs as its own process (``energy ingestion run``) on bench-only topics,
MQTT prefix and client id. This process publishes readings of the seeded fleet over MQTT
(QoS 1) and reads them back from Kafka, timing each one from its MQTT publish to its arrival
on the topic (a consumer with a 5 ms fetch wait; so the latency includes the broker append
and one fetch, an upper bound of publish -> append).

Phases: single-reading messages as fast as the publisher goes; gateway batches (100 readings
per message) as fast as it goes; then single messages paced at a fixed rate for the latency
figures of a service that is not saturated.

    python -m bench.ingest            # full: 20 s per phase
    python -m bench.ingest --quick    # 5 s per phase
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
from aiokafka import AIOKafkaConsumer

from bench.common import parser, write_results
from energy.fleet import build_fleet
from energy.settings import get_settings
from energy.stack.process import free_port
from energy.stack.topics import ensure_topics_async

ROOT = Path(__file__).resolve().parents[1]
QUIET = logging.getLogger("bench.mqtt")
QUIET.setLevel(logging.ERROR)
BATCH = 100
PACED_RATE = 1000.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Readings:
    """Pre-built payloads of the fleet's meters, timestamps stepping 15 s per round."""

    def __init__(self, run: str) -> None:
        self.meters = [(f.facility_id, m.meter_id) for f in build_fleet() for m in f.meters]
        self.start = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=hash(run) % 300)
        self.n = 0

    def next(self) -> tuple[str, str, int, dict[str, object]]:
        facility_id, meter_id = self.meters[self.n % len(self.meters)]
        rnd = self.n // len(self.meters)
        self.n += 1
        doc = {
            "meter_id": meter_id,
            "ts": (self.start + timedelta(seconds=15 * rnd)).isoformat(),
            "active_power_kw": 12.5,
            "reactive_power_kvar": 5.3,
            "voltage_v": 230.0,
            "current_a": 59.0,
            "energy_kwh": 1000.0 + rnd * 0.05,
            "seq": rnd,
        }
        return facility_id, meter_id, rnd, doc


async def phase(
    prefix: str, topic: str, bootstrap: str, duration_s: float, batch: int, rate: float | None, mqtt: tuple[str, int]
) -> dict[str, float]:
    sent: dict[tuple[str, int], float] = {}
    arrived: dict[tuple[str, int], float] = {}
    gen = Readings(f"{topic}-{batch}-{rate}")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    await consumer.seek_to_end()
    stop_reading = asyncio.Event()

    async def read() -> None:
        while not stop_reading.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=20_000)
            now = time.perf_counter()
            for records in batches.values():
                for r in records:
                    p = json.loads(r.value)["payload"]
                    arrived.setdefault((p["meter_id"], p["seq"]), now)

    reader = asyncio.create_task(read())
    t0 = time.perf_counter()
    async with aiomqtt.Client(mqtt[0], mqtt[1], max_inflight_messages=2000, logger=QUIET) as client:
        client.pending_calls_threshold = 10**9
        inflight: set[asyncio.Task[None]] = set()
        sem = asyncio.Semaphore(2000)
        readings_sent = 0

        async def publish(t: str, payload: bytes) -> None:
            try:
                await client.publish(t, payload, qos=1)
            finally:
                sem.release()

        while time.perf_counter() - t0 < duration_s:
            docs = [gen.next() for _ in range(batch)]
            facility_id = docs[0][0]
            if batch == 1:
                _, meter_id, seq, doc = docs[0]
                t, payload = f"{prefix}/{facility_id}/{meter_id}", json.dumps(doc).encode()
            else:
                t = f"{prefix}/{facility_id}/gateway"
                payload = json.dumps({"gateway_id": "bench", "readings": [d[3] for d in docs]}).encode()
            await sem.acquire()
            now = time.perf_counter()
            for _, meter_id, seq, _ in docs:
                sent[(meter_id, seq)] = now
            task = asyncio.create_task(publish(t, payload))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            readings_sent += batch
            if rate is not None:
                ahead = readings_sent / rate - (time.perf_counter() - t0)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            elif readings_sent % 500 < batch:
                await asyncio.sleep(0)
        await asyncio.gather(*inflight, return_exceptions=True)
    publish_s = time.perf_counter() - t0
    deadline = time.perf_counter() + 60
    while len(arrived) < len(sent) and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    stop_reading.set()
    await reader
    await consumer.stop()
    got = [k for k in sent if k in arrived]
    last = max((arrived[k] for k in got), default=t0)
    latencies_ms = [(arrived[k] - sent[k]) * 1000 for k in got]
    return {
        "sent": float(len(sent)),
        "arrived": float(len(got)),
        "publish_per_s": len(sent) / publish_s,
        "end_to_end_per_s": len(got) / max(1e-9, last - t0),
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "mean_ms": statistics.fmean(latencies_ms) if latencies_ms else float("nan"),
    }


def start_service(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    exe = ROOT / ".venv" / "bin" / "energy"
    argv = [str(exe), "ingestion", "run"] if exe.exists() else [sys.executable, "-m", "energy.cli", "ingestion", "run"]
    log = open(ROOT / "bench" / "results" / "ingest-service.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        if proc.poll() is not None:
            raise SystemExit(f"ingestion service exited with {proc.returncode}; see bench/results/ingest-service.log")
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("ingestion service not ready within 60 s")


async def main_async(quick: bool) -> None:
    settings = get_settings()
    run = uuid.uuid4().hex[:8]
    prefix, topic, dlq = f"bench-{run}", f"bench-readings-{run}", f"bench-dlq-{run}"
    client_id = f"bench-ingestion-{run}"
    await ensure_topics_async(settings.kafka.bootstrap_servers, {topic: 6, dlq: 1})
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "ENERGY_MQTT__TOPIC_PREFIX": prefix,
            "ENERGY_INGESTION__READINGS_TOPIC": topic,
            "ENERGY_INGESTION__DLQ_TOPIC": dlq,
            "ENERGY_INGESTION__MQTT_CLIENT_ID": client_id,
            "ENERGY_ENDPOINTS__INGESTION_PORT": str(port),
            "ENERGY_LOG__LEVEL": "WARNING",
        }
    )
    duration = 5.0 if quick else 20.0
    mqtt = (settings.mqtt.host, settings.mqtt.port)
    proc = start_service(env, port)
    try:
        single = await phase(prefix, topic, settings.kafka.bootstrap_servers, duration, 1, None, mqtt)
        batched = await phase(prefix, topic, settings.kafka.bootstrap_servers, duration, BATCH, None, mqtt)
        paced = await phase(prefix, topic, settings.kafka.bootstrap_servers, duration, 1, PACED_RATE, mqtt)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        with contextlib.suppress(Exception):
            async with aiomqtt.Client(mqtt[0], mqtt[1], identifier=client_id, clean_session=True, logger=QUIET):
                pass
    figures = {
        "messages_per_s_single": round(single["end_to_end_per_s"], 1),
        "readings_per_s_batched": round(batched["end_to_end_per_s"], 1),
        "p50_latency_ms": round(paced["p50_ms"], 1),
        "p99_latency_ms": round(paced["p99_ms"], 1),
        "paced_rate_readings_per_s": PACED_RATE,
        "single_p99_latency_ms_saturated": round(single["p99_ms"], 1),
        "batched_p99_latency_ms_saturated": round(batched["p99_ms"], 1),
        "single_publish_per_s": round(single["publish_per_s"], 1),
        "batched_publish_readings_per_s": round(batched["publish_per_s"], 1),
        "lost_readings": int(
            single["sent"] - single["arrived"] + batched["sent"] - batched["arrived"] + paced["sent"] - paced["arrived"]
        ),
        "phase_seconds": duration,
    }
    units = {
        "messages_per_s_single": "msg/s",
        "readings_per_s_batched": "readings/s",
        "p50_latency_ms": "ms",
        "p99_latency_ms": "ms",
        "paced_rate_readings_per_s": "readings/s",
        "single_p99_latency_ms_saturated": "ms",
        "batched_p99_latency_ms_saturated": "ms",
        "single_publish_per_s": "msg/s",
        "batched_publish_readings_per_s": "readings/s",
        "lost_readings": "readings",
        "phase_seconds": "s",
    }
    goals = {
        "messages_per_s_single": ">= 5,000",
        "readings_per_s_batched": ">= 20,000",
        "p99_latency_ms": "< 250",
        "lost_readings": "0",
    }
    notes = (
        "Service in its own process; publisher and Kafka reader share the bench process on the same "
        f"2 shared cores. Latency: MQTT publish -> read back from Kafka, paced at {PACED_RATE:.0f} readings/s; "
        f"batched = {BATCH} readings per gateway message. Throughput = readings read back from Kafka per "
        "second of the phase (publish start -> last arrival)."
    )
    write_results("ingest", figures, units, quick, goals, notes)


def main() -> None:
    args = parser(__doc__.splitlines()[0] if __doc__ else "ingest").parse_args()
    asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    main()
