"""Ingestion benchmark: MQTT -> ingestion service -> Kafka, against the local stack.

The ingestion service runs as its own process (``energy ingestion run``) on bench-only topics,
MQTT prefix and client id. This process publishes readings of the seeded fleet over MQTT
(QoS 1) and reads them back from Kafka, timing each one from its MQTT publish to its arrival
on the topic (a consumer with a 5 ms fetch wait; so the latency includes the broker append
and one fetch, an upper bound of publish -> append).

Phases: three rounds of (the anchors, then a backlog of single-reading messages), then a backlog
of gateway batches (100 readings per message), each backlog queued in the service's persistent
MQTT session while it is stopped and then drained (its sustained capacity, whatever this
publisher's pace); then single messages paced at a fixed rate for the latency of a service
that keeps up. Single-message figures are medians over the rounds (docs/benchmarks.md).

    python -m bench.ingest            # full: 3 x 15,000 messages, 200,000 batched readings, 20 s paced
    python -m bench.ingest --quick    # 3 x 5,000 messages, 50,000 batched readings, 5 s paced
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import psutil
from aiokafka import AIOKafkaConsumer

from bench.anchors import run_anchor as anchor
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
INFLIGHT = 200  # aiomqtt scans its pending calls on every publish: more in flight costs more CPU per message


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Readings:
    """Readings of the fleet's meters, facility by facility, timestamps stepping 15 s per round."""

    def __init__(self, run: str) -> None:
        self.facilities = [(f.facility_id, [m.meter_id for m in f.meters]) for f in build_fleet()]
        # Three days ago (inside raw retention: older readings go to the DLQ), shifted by a run-specific
        # fraction of the 15 s interval so no two runs share a (meter, timestamp) the deduplication knows.
        now = datetime.now(UTC).replace(microsecond=0)
        self.start = now - timedelta(days=3) + timedelta(milliseconds=hash(run) % 15_000)
        self.rounds = [0] * len(self.facilities)
        self.n = 0
        self._pending: list[tuple[str, str, int, dict[str, object]]] = []

    def block(self, size: int) -> list[tuple[str, str, int, dict[str, object]]]:
        """``size`` readings of one facility (all its meters, round after round): one gateway's batch."""
        index = self.n % len(self.facilities)
        self.n += 1
        facility_id, meters = self.facilities[index]
        out = []
        while len(out) < size:
            rnd = self.rounds[index]
            self.rounds[index] += 1
            out.extend(self.doc(facility_id, meter_id, rnd) for meter_id in meters)
        return out[:size] if size == 1 else out

    def doc(self, facility_id: str, meter_id: str, rnd: int) -> tuple[str, str, int, dict[str, object]]:
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

    def single(self) -> list[tuple[str, str, int, dict[str, object]]]:
        if not self._pending:
            self._pending = self.block(len(self.facilities[self.n % len(self.facilities)][1]))[::-1]
        return [self._pending.pop()]


class Collector:
    """Reads the readings topic from its end and notes when each (meter, seq) arrived."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        self.arrived: dict[tuple[str, int], float] = {}
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.seek_to_end()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50, max_records=20_000)
            now = time.perf_counter()
            for records in batches.values():
                for r in records:
                    p = json.loads(r.value)["payload"]
                    self.arrived.setdefault((p["meter_id"], p["seq"]), now)

    async def wait_for(self, keys: Iterable[tuple[str, int]], timeout_s: float) -> None:
        wanted = set(keys)
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline and not wanted <= self.arrived.keys():  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def publish(
    gen: Readings, prefix: str, mqtt: tuple[str, int], readings: int, batch: int, rate: float | None
) -> dict[tuple[str, int], float]:
    """Publish ``readings`` readings (QoS 1) in messages of ``batch``; returns each one's publish time."""
    sent: dict[tuple[str, int], float] = {}
    t0 = time.perf_counter()
    async with aiomqtt.Client(mqtt[0], mqtt[1], max_inflight_messages=INFLIGHT, logger=QUIET) as client:
        client.pending_calls_threshold = 10**9
        inflight: set[asyncio.Task[None]] = set()
        sem = asyncio.Semaphore(INFLIGHT)

        async def send(t: str, payload: bytes) -> None:
            try:
                await client.publish(t, payload, qos=1)
            finally:
                sem.release()

        while len(sent) < readings:
            docs = gen.single() if batch == 1 else gen.block(batch)
            facility_id = docs[0][0]
            if batch == 1:
                _, meter_id, _, doc = docs[0]
                t, payload = f"{prefix}/{facility_id}/{meter_id}", json.dumps(doc).encode()
            else:
                t = f"{prefix}/{facility_id}/gateway"
                payload = json.dumps({"gateway_id": "bench", "readings": [d[3] for d in docs]}).encode()
            await sem.acquire()
            now = time.perf_counter()
            for _, meter_id, seq, _ in docs:
                sent[(meter_id, seq)] = now
            task = asyncio.create_task(send(t, payload))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            if rate is not None:
                ahead = len(sent) / rate - (time.perf_counter() - t0)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*inflight, return_exceptions=True)
    return sent


def drain_rate(sent: dict[tuple[str, int], float], arrived: dict[tuple[str, int], float]) -> tuple[float, int]:
    """Sustained rate: readings per second between the first and the last arrival; and how many never came."""
    times = sorted(arrived[k] for k in sent if k in arrived)
    missing = sum(1 for k in sent if k not in arrived)
    if len(times) < 2:
        return 0.0, missing
    return (len(times) - 1) / (times[-1] - times[0]), missing


def start_service(env: dict[str, str], port: int, path: str = "/healthz") -> subprocess.Popen[bytes]:
    """Start ``energy ingestion run`` and wait until ``path`` answers 200 (``/ready``: MQTT subscribed)."""
    exe = ROOT / ".venv" / "bin" / "energy"
    argv = [str(exe), "ingestion", "run"] if exe.exists() else [sys.executable, "-m", "energy.cli", "ingestion", "run"]
    log_dir = get_settings().stack.data_dir / "run"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "bench-ingest-service.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp,
        ):
            if resp.status == 200:
                return proc
        if proc.poll() is not None:
            raise SystemExit(
                f"ingestion service exited with {proc.returncode}; see .stack/run/bench-ingest-service.log"
            )
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("ingestion service not ready within 60 s")


async def main_async(quick: bool) -> None:
    settings = get_settings()
    load_start = os.getloadavg()[0]
    run = uuid.uuid4().hex[:8]
    prefix, topic, dlq = f"bench-{run}", f"bench-readings-{run}", f"bench-dlq-{run}"
    client_id = f"bench-ingestion-{run}"
    bootstrap = settings.kafka.bootstrap_servers
    await ensure_topics_async(bootstrap, {topic: 6, dlq: 1})
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
    n_single, n_batched = (5_000, 50_000) if quick else (15_000, 200_000)
    rounds = 3  # service and anchors interleaved, medians over the rounds (see docs/benchmarks.md)
    paced_s = 5.0 if quick else 20.0
    mqtt = (settings.mqtt.host, settings.mqtt.port)
    gen = Readings(run)
    collector = Collector(topic, bootstrap)
    await collector.start()
    proc = start_service(env, port, "/ready")  # subscribes: the persistent session exists from here on
    per_round: list[dict[str, float]] = []
    single_missing = 0
    try:
        for index in range(rounds):
            # Capacity: the service is stopped while a backlog is queued in its persistent MQTT session, then
            # started; the rate at which readings arrive in Kafka is what it sustains, whatever the publisher's
            # pace. Each round runs the anchors right before the service drains (so under the same load).
            proc = restart(proc, env, port, stop_only=True)
            single_sent = await publish(gen, prefix, mqtt, n_single, 1, None)
            subscriber, producer = await anchors(f"{run}-{index}", prefix, topic, mqtt, n_single, bootstrap)
            proc = start_service(env, port)
            with CpuSampler(proc.pid) as sampler:
                await collector.wait_for(single_sent, 300)
            rate, missing, per_cpu = drain_figures(single_sent, collector.arrived, sampler)
            single_missing += missing
            per_round.append(round_figures(rate, per_cpu, subscriber, producer))

        proc = restart(proc, env, port, stop_only=True)
        batched_sent = await publish(gen, prefix, mqtt, n_batched, BATCH, None)
        proc = start_service(env, port)
        with CpuSampler(proc.pid) as sampler:
            await collector.wait_for(batched_sent, 300)
        batched_rate, batched_missing, batched_per_cpu = drain_figures(batched_sent, collector.arrived, sampler)

        # Latency of a service that keeps up: single messages at a steady rate, publish -> read from Kafka.
        paced_sent = await publish(gen, prefix, mqtt, int(PACED_RATE * paced_s), 1, PACED_RATE)
        await collector.wait_for(paced_sent, 60)
        latencies = [(collector.arrived[k] - t) * 1000 for k, t in paced_sent.items() if k in collector.arrived]
        paced_missing = len(paced_sent) - len(latencies)

    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        await collector.stop()
        with contextlib.suppress(Exception):
            async with aiomqtt.Client(mqtt[0], mqtt[1], identifier=client_id, clean_session=True, logger=QUIET):
                pass

    def median(key: str) -> float:
        return statistics.median(r[key] for r in per_round)

    single_rate = median("service_msgs_per_s")
    subscriber_rate = median("subscriber_msgs_per_s")
    producer_rate = median("producer_records_per_s")
    per_cpu = median("service_msgs_per_cpu_s")
    subscriber_per_cpu = median("subscriber_msgs_per_cpu_s")
    producer_per_cpu = median("producer_records_per_cpu_s")
    serial_per_cpu = median("serial_msgs_per_cpu_s")
    figures = {
        "messages_per_s_single": round(single_rate, 1),
        "anchor_mqtt_subscriber_msgs_per_s": round(subscriber_rate, 1),
        "anchor_kafka_producer_records_per_s": round(producer_rate, 1),
        "ratio_single_vs_mqtt_subscriber": round(single_rate / subscriber_rate, 3),
        "ratio_single_vs_kafka_producer": round(single_rate / producer_rate, 3),
        "anchor_mqtt_subscriber_msgs_per_cpu_s": round(subscriber_per_cpu, 1),
        "anchor_kafka_producer_records_per_cpu_s": round(producer_per_cpu, 1),
        "anchor_serial_subscriber_producer_msgs_per_cpu_s": round(serial_per_cpu, 1),
        "ratio_single_per_cpu_vs_mqtt_subscriber": round(median("ratio_vs_subscriber"), 3),
        "ratio_single_per_cpu_vs_kafka_producer": round(median("ratio_vs_producer"), 3),
        "ratio_single_per_cpu_vs_serial_anchor": round(median("ratio_vs_serial"), 3),
        "ratio_single_per_cpu_vs_serial_anchor_rounds": ", ".join(f"{r['ratio_vs_serial']:.3f}" for r in per_round),
        "service_cpu_us_per_single_message": round(1e6 / per_cpu, 1),
        "anchor_serial_cpu_us_per_message": round(1e6 / serial_per_cpu, 1),
        "readings_per_s_batched": round(batched_rate, 1),
        "p50_latency_ms": round(percentile(latencies, 50), 1),
        "p99_latency_ms": round(percentile(latencies, 99), 1),
        "paced_rate_readings_per_s": PACED_RATE,
        "single_messages_per_cpu_s": round(per_cpu, 1),
        "batched_readings_per_cpu_s": round(batched_per_cpu, 1),
        "single_messages": n_single,
        "single_rounds": rounds,
        "batched_readings": n_batched,
        "lost_readings": single_missing + batched_missing + paced_missing,
        "load_avg_1m_start": round(load_start, 1),
        "load_avg_1m_end": round(os.getloadavg()[0], 1),
    }
    units = {
        "messages_per_s_single": "msg/s",
        "anchor_mqtt_subscriber_msgs_per_s": "msg/s",
        "anchor_kafka_producer_records_per_s": "records/s",
        "ratio_single_vs_mqtt_subscriber": "ratio",
        "ratio_single_vs_kafka_producer": "ratio",
        "anchor_mqtt_subscriber_msgs_per_cpu_s": "msg/cpu-s",
        "anchor_kafka_producer_records_per_cpu_s": "records/cpu-s",
        "anchor_serial_subscriber_producer_msgs_per_cpu_s": "msg/cpu-s",
        "ratio_single_per_cpu_vs_mqtt_subscriber": "ratio",
        "ratio_single_per_cpu_vs_kafka_producer": "ratio",
        "ratio_single_per_cpu_vs_serial_anchor": "ratio",
        "ratio_single_per_cpu_vs_serial_anchor_rounds": "ratios",
        "service_cpu_us_per_single_message": "µs CPU",
        "anchor_serial_cpu_us_per_message": "µs CPU",
        "single_rounds": "rounds",
        "readings_per_s_batched": "readings/s",
        "p50_latency_ms": "ms",
        "p99_latency_ms": "ms",
        "paced_rate_readings_per_s": "readings/s",
        "single_messages_per_cpu_s": "msg/cpu-s",
        "batched_readings_per_cpu_s": "readings/cpu-s",
        "single_messages": "messages",
        "batched_readings": "readings",
        "lost_readings": "readings",
        "load_avg_1m_start": "runnable processes",
        "load_avg_1m_end": "runnable processes",
    }
    goals = {
        "ratio_single_per_cpu_vs_serial_anchor": ">= 0.60 (per CPU-second, of subscriber + producer in series)",
        "p99_latency_ms": "< 250",
        "lost_readings": "0",
    }
    load = os.getloadavg()
    notes = (
        "Service in its own process (energy ingestion run); publisher and Kafka reader in the bench process. "
        "Anchors (bench/anchors.py, own processes, same run): a bare aiomqtt QoS 1 subscriber draining the same "
        "backlog of single messages (decodes each), and a bare aiokafka producer (the platform's producer "
        "settings) sending the same number of pre-built meter.reading records; ratios are service / anchor. "
        "The serial anchor is both in series on one CPU, per CPU-second 1 / (1/subscriber + 1/producer): "
        "the least any MQTT-to-Kafka service spends per message, and the goal's reference (decision 0960). "
        "Throughput: a backlog queued in the service's persistent MQTT session while it is stopped, then drained; "
        "rate = readings read back from Kafka per second between the first and last arrival. "
        f"Single messages: {rounds} rounds of {n_single:,}, each round the two anchors then the service; every "
        "single-message figure is the median over the rounds, the ratios the median of each round's ratio. "
        f"Batched = {BATCH} readings per gateway message. Latency: single messages paced at {PACED_RATE:.0f}/s, "
        "MQTT publish -> read back from Kafka (5 ms fetch wait). "
        "Per CPU-second figures: messages or readings drained per CPU-second of the service process "
        "(user+system, sampled every 10 ms and taken between the first and the last arrival, so start-up is "
        "not in it): what one free core would sustain. "
        f"Machine shared with other engineers' work: load average at the end {load[0]:.1f} on {os.cpu_count()} cores."
    )
    write_results("ingest", figures, units, quick, goals, notes)


class CpuSampler:
    """CPU-seconds (user+system) of a process, sampled every 10 ms in a thread, to read its CPU between two
    moments (here: the first and the last arrival of a drain) rather than since it started."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                times = self._process.cpu_times()
            except psutil.Error:
                return
            self.samples.append((time.perf_counter(), float(times.user + times.system)))
            self._stop.wait(0.01)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_at(self, when: float) -> float:
        """The process's CPU-seconds at ``when`` (perf_counter), interpolated between the samples around it."""
        times = [t for t, _ in self.samples]
        i = min(max(bisect.bisect_left(times, when), 1), len(times) - 1)
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (when - t0) / max(t1 - t0, 1e-9)


def drain_figures(
    sent: dict[tuple[str, int], float], arrived: dict[tuple[str, int], float], sampler: CpuSampler
) -> tuple[float, int, float]:
    """A drain between its first and last arrival: readings per second, readings missing, readings per
    CPU-second of the service."""
    times = sorted(arrived[k] for k in sent if k in arrived)
    missing = len(sent) - len(times)
    if len(times) < 2:
        return 0.0, missing, float("nan")
    cpu = sampler.cpu_at(times[-1]) - sampler.cpu_at(times[0])
    return (len(times) - 1) / (times[-1] - times[0]), missing, (len(times) - 1) / max(cpu, 1e-9)


async def anchors(
    run: str, prefix: str, topic: str, mqtt: tuple[str, int], n: int, bootstrap: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bare MQTT subscriber draining a backlog of ``n`` single messages, then the bare Kafka producer
    sending ``n`` pre-built records (bench/anchors.py), each in its own process."""
    client = f"bench-anchor-{run}"
    anchor(["mqtt-subscriber", "--prefix", f"{prefix}-anchor-{run}", "--client-id", client, "--prepare"])
    await publish(Readings(f"{run}-anchor"), f"{prefix}-anchor-{run}", mqtt, n, 1, None)
    subscriber = anchor(["mqtt-subscriber", "--prefix", f"{prefix}-anchor-{run}", "--client-id", client, "--n", str(n)])
    await ensure_topics_async(bootstrap, {f"{topic}-anchor-{run}": 6})
    producer = anchor(["kafka-producer", "--topic", f"{topic}-anchor-{run}", "--n", str(n)])
    return subscriber, producer


def round_figures(
    rate: float, per_cpu: float, subscriber: dict[str, Any], producer: dict[str, Any]
) -> dict[str, float]:
    """One round's service and anchor figures; the serial anchor is subscriber and producer in series on one
    CPU, per CPU-second 1 / (1/subscriber + 1/producer) (decision 0960)."""
    subscriber_per_cpu = subscriber["items"] / subscriber["cpu_s"]
    producer_per_cpu = producer["items"] / producer["cpu_s"]
    serial_per_cpu = 1 / (1 / subscriber_per_cpu + 1 / producer_per_cpu)
    return {
        "service_msgs_per_s": rate,
        "service_msgs_per_cpu_s": per_cpu,
        "subscriber_msgs_per_s": subscriber["items"] / subscriber["seconds"],
        "producer_records_per_s": producer["items"] / producer["seconds"],
        "subscriber_msgs_per_cpu_s": subscriber_per_cpu,
        "producer_records_per_cpu_s": producer_per_cpu,
        "serial_msgs_per_cpu_s": serial_per_cpu,
        "ratio_vs_subscriber": per_cpu / subscriber_per_cpu,
        "ratio_vs_producer": per_cpu / producer_per_cpu,
        "ratio_vs_serial": per_cpu / serial_per_cpu,
    }


def restart(proc: subprocess.Popen[bytes], env: dict[str, str], port: int, stop_only: bool = False) -> Any:
    proc.terminate()
    proc.wait(30)
    return proc if stop_only else start_service(env, port)


def main() -> None:
    args = parser(__doc__.splitlines()[0] if __doc__ else "ingest").parse_args()
    asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    main()
