"""Aggregation benchmark: readings/s consumed and rolled up into InfluxDB, and freshness
(reading time -> its 1-min rollup visible in InfluxDB), p50/p99.

Runs the real worker (`energy aggregation run`, one process) against the local broker and
InfluxDB, on its own topic and InfluxDB database.

1. Throughput: a backlog of readings (200 meters, 15 s apart) is produced first; the worker
   then consumes it; readings/s = readings committed / time from first to last commit.
2. Freshness: a live stream (background load + one probe meter); for each probe reading,
   the time from its timestamp (= produce time) until the 1-min meter rollup counts it.
3. Anchors in the same run: step 1 is repeated in interleaved rounds (``--rounds``), each followed
   by the two anchors on the same backlog; the figures are the medians (decision 1010).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from aggregation.config import AggregationSettings
from bench.anchors import run_anchor as anchor
from bench.common import parser, write_results
from energy.adapters.influx import InfluxClient, iter_rows
from energy.settings import Settings, get_settings
from energy.stack.process import free_port
from energy.stack.topics import ensure_topics_async
from schemas.readings import MeterReading, MeterReadingEvent, reading_id
from tests.aggregation.helpers import settings_for, worker_env

# Settings that only name this run's own topics, group and archive location.
_NAMES = {"readings_topic", "dlq_topic", "late_windows_topic", "consumer_group", "archive_group", "archive_uri"}


def _influx_admin(url: str, q: str) -> None:
    data = urllib.parse.urlencode({"q": q}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/query", data=data, method="POST"), timeout=10):
        pass


def _event(meter_id: str, facility_id: str, ts: datetime, kw: float, reg: float, seq: int) -> bytes:
    r = MeterReading(
        reading_id=reading_id(meter_id, ts),
        meter_id=meter_id,
        facility_id=facility_id,
        ts=ts,
        active_power_kw=kw,
        reactive_power_kvar=kw / 4,
        voltage_v=230.0,
        current_a=kw * 1.4,
        energy_kwh=reg,
        seq=seq,
        received_at=ts + timedelta(seconds=1),
    )
    return bytes(MeterReadingEvent.wrap(r, source="ingestion", occurred_at=ts, event_id=r.reading_id).to_bytes())


async def _produce_backlog(bootstrap: str, topic: str, facilities: int, meters: int, per_meter: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1_048_576)
    await producer.start()
    start = (datetime.now(UTC) - timedelta(seconds=15 * per_meter + 120)).replace(second=0, microsecond=0)
    n = 0
    try:
        futs = []
        for i in range(per_meter):
            ts = start + timedelta(seconds=15 * i)
            for f in range(facilities):
                fid = f"bench-fac-{f:03d}"
                for m in range(meters):
                    kw = 10.0 + (i * 7 + m * 3 + f) % 40
                    futs.append(
                        await producer.send(
                            topic, _event(f"{fid}-m{m:02d}", fid, ts, kw, 1000.0 + i * 0.1, i), key=fid.encode()
                        )
                    )
                    n += 1
            if len(futs) > 20_000:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


def _cpu_s(proc: subprocess.Popen[bytes]) -> float:
    import psutil

    try:
        process = psutil.Process(proc.pid)
        times = [process.cpu_times(), *(c.cpu_times() for c in process.children(recursive=True))]
    except psutil.Error:
        return 0.0
    return float(sum(t.user + t.system for t in times))


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("energy")
    with open(log, "ab") as fh:
        return subprocess.Popen([str(exe), "aggregation", "run"], env=env, stdout=fh, stderr=fh)


async def _wait_http(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_answers, port):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("worker did not start")


async def _throughput(bootstrap: str, topic: str, group: str, total: int, timeout_s: float) -> tuple[float, float]:
    """Readings/s between the first and the last commit, polled with one light consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(6)]
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = 0
            for tp in tps:
                done += await consumer.committed(tp) or 0
            now = time.monotonic()
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                assert first is not None
                elapsed = now - first[0]
                return (done - first[1]) / elapsed if elapsed > 0 else float("nan"), elapsed
            await asyncio.sleep(0.25)
    finally:
        await consumer.stop()
    raise RuntimeError(f"worker did not catch up within {timeout_s}s")


async def _freshness(bootstrap: str, topic: str, influx: InfluxClient, seconds: float, load_per_s: int) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    probe_fac, probe_meter = "bench-probe", "bench-probe-m01"
    pending: list[tuple[datetime, int]] = []  # (ts, count expected in its minute)
    per_minute: dict[datetime, int] = {}
    results: list[float] = []
    stop = asyncio.Event()

    async def load() -> None:
        seq = 0
        while not stop.is_set():
            t0 = time.monotonic()
            ts = datetime.now(UTC)
            for k in range(load_per_s // 10):
                fid = f"bench-live-{k % 20:03d}"
                await producer.send(topic, _event(f"{fid}-m{k:03d}", fid, ts, 20.0, 1.0 + seq, seq), key=fid.encode())
            seq += 1
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

    async def probe() -> None:
        seq = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ts = datetime.now(UTC)
            minute = ts.replace(second=0, microsecond=0)
            per_minute[minute] = per_minute.get(minute, 0) + 1
            pending.append((ts, per_minute[minute]))
            await producer.send(topic, _event(probe_meter, probe_fac, ts, 5.0, 1.0 + seq, seq), key=probe_fac.encode())
            seq += 1
            await asyncio.sleep(0.5)

    async def watch() -> None:
        q = (
            'SELECT sample_count FROM "rollups_2y"."meter_rollups" WHERE meter_id = $m AND "window" = \'1m\' '
            "AND time >= $a"
        )
        while not stop.is_set() or pending:
            if pending:
                since = int(pending[0][0].replace(second=0, microsecond=0).timestamp()) * 10**9
                rows = list(iter_rows(await influx.query(q, {"m": probe_meter, "a": since}, epoch="s")))
                counts = {datetime.fromtimestamp(int(r["time"]), UTC): int(r["sample_count"]) for r in rows}
                now = datetime.now(UTC)
                while pending and counts.get(pending[0][0].replace(second=0, microsecond=0), 0) >= pending[0][1]:
                    results.append((now - pending[0][0]).total_seconds())
                    pending.pop(0)
                if pending and (now - pending[0][0]).total_seconds() > 60:
                    raise RuntimeError("a probe reading did not show up within 60 s")
            await asyncio.sleep(0.05)

    loader = asyncio.create_task(load())
    watcher = asyncio.create_task(watch())
    try:
        await probe()
        stop.set()
        await loader
        await asyncio.wait_for(watcher, 90)
    finally:
        stop.set()
        await producer.stop()
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _create_db(url: str, db: str, rollups: bool = True) -> None:
    _influx_admin(url, f'CREATE DATABASE "{db}"')
    _influx_admin(url, f'CREATE RETENTION POLICY "raw_90d" ON "{db}" DURATION 90d REPLICATION 1 DEFAULT')
    if rollups:
        _influx_admin(url, f'CREATE RETENTION POLICY "rollups_2y" ON "{db}" DURATION 730d REPLICATION 1')


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)


def _round_figures(
    rate: float, worker_cpu_s: float, total: int, consumer: dict[str, Any], writer: dict[str, Any]
) -> dict[str, float]:
    consumer_rate = consumer["items"] / consumer["seconds"]
    writer_rate = writer["items"] / writer["seconds"]
    path_rate = 1 / (1 / consumer_rate + 1 / writer_rate)
    engine_cpu = worker_cpu_s / total * 100_000
    anchor_cpu = (consumer["cpu_s"] + writer["cpu_s"]) / total * 100_000
    return {
        "rate": rate,
        "engine_cpu": engine_cpu,
        "consumer_rate": consumer_rate,
        "writer_rate": writer_rate,
        "path_rate": path_rate,
        "anchor_cpu": anchor_cpu,
        "ratio_rate": rate / path_rate,
        "ratio_cpu": anchor_cpu / engine_cpu,
    }


async def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--workers", type=int, default=1, help="worker processes in the group (<= 6 partitions)")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="interleaved rounds of engine, consumer anchor, writer anchor (default: 3, --quick: 2); medians reported",
    )
    args = p.parse_args()
    workers = max(1, min(6, int(args.workers)))
    quick = bool(args.quick)
    rounds = max(1, int(args.rounds) or (2 if quick else 3))
    base = get_settings()
    uid = uuid.uuid4().hex[:8]
    topic, dlq, group, db = f"bench-agg-{uid}", f"bench-agg-dlq-{uid}", f"bench-agg-{uid}", f"bench_agg_{uid}"
    facilities, meters = 20, 10
    per_meter = 300 if quick else 1500  # 60k or 300k readings
    fresh_s = 15.0 if quick else 60.0
    bootstrap = base.kafka.bootstrap_servers
    url = base.influx.url
    await ensure_topics_async(bootstrap, {topic: 6, dlq: 1})
    # Default settings: only the names (topic, group, database) and the archiver (another consumer,
    # off) differ; settings_for's test-speed batch_max_wait_s is put back to the default.
    defaults = AggregationSettings()

    def settings(k: int) -> Settings:
        return settings_for(
            base,
            f"{db}_r{k}",
            topic,
            dlq,
            f"{group}-r{k}",
            archive_enabled=False,
            batch_max_wait_s=defaults.batch_max_wait_s,
        )

    s = settings(0)
    overrides = {
        name: getattr(s.aggregation, name)
        for name in AggregationSettings.model_fields
        if getattr(s.aggregation, name) != getattr(defaults, name) and name not in _NAMES
    }
    log = Path(tempfile.gettempdir()) / f"bench-aggregate-{uid}.log"
    procs: list[subprocess.Popen[bytes]] = []
    per_round: list[dict[str, float]] = []
    loads: list[float] = [os.getloadavg()[0]]
    created: list[str] = []
    influx: InfluxClient | None = None
    try:
        t0 = time.perf_counter()
        total = await _produce_backlog(bootstrap, topic, facilities, meters, per_meter)
        produce_s = time.perf_counter() - t0
        # Rounds, each: the engine drains the whole backlog (a new consumer group, an empty database),
        # then the anchors on the same backlog: a bare consumer that only decodes it, and a bare writer
        # of as many raw points into an empty scratch database. Interleaving puts the engine and its
        # anchors under the same load; the medians of the rounds are the figures (decision 1010).
        for k in range(rounds):
            s = settings(k)
            _create_db(url, s.influx.database)
            created.append(s.influx.database)
            ports = [free_port() for _ in range(workers)]
            procs = [_spawn(worker_env(s, port), log) for port in ports]
            for port in ports:
                await _wait_http(port)
            cpu0 = sum(_cpu_s(proc) for proc in procs)
            rate, elapsed = await _throughput(bootstrap, topic, s.aggregation.consumer_group, total, timeout_s=600)
            worker_cpu_s = sum(_cpu_s(proc) for proc in procs) - cpu0
            try:
                import psutil

                rss_mb = max(psutil.Process(proc.pid).memory_info().rss for proc in procs) / 2**20
            except Exception:
                rss_mb = float("nan")
            if k < rounds - 1:
                _stop(procs)
                procs = []
            consumer = anchor(["kafka-consumer-decode", "--topic", topic, "--n", str(total)])
            anchor_db = f"{db}_anchor_r{k}"
            _create_db(url, anchor_db, rollups=False)
            created.append(anchor_db)
            writer = anchor(["influx-writer", "--database", anchor_db, "--n", str(total)])
            per_round.append({**_round_figures(rate, worker_cpu_s, total, consumer, writer), "elapsed": elapsed})
            loads.append(os.getloadavg()[0])
        # Freshness with the last round's worker, still running: live readings on the same topic.
        influx = InfluxClient(s.influx, breaker_name="influxdb-bench")
        fresh = await _freshness(bootstrap, topic, influx, fresh_s, load_per_s=2000)
        loads.append(os.getloadavg()[0])
    finally:
        _stop(procs)
        if influx is not None:
            await influx.close()
        for name in created:
            _influx_admin(url, f'DROP DATABASE "{name}"')

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in per_round))

    def listed(key: str, digits: int) -> str:
        return ", ".join(f"{r[key]:.{digits}f}" for r in per_round)

    rate = med("rate")
    figures = {
        "readings_per_s": round(rate, 1),
        "readings_per_s_per_worker": round(rate / workers, 1),
        "cpu_s_per_100k_readings": round(med("engine_cpu"), 2),
        "anchor_consumer_decode_per_s": round(med("consumer_rate"), 1),
        "anchor_influx_writer_points_per_s": round(med("writer_rate"), 1),
        "anchor_consumer_plus_writer_per_s": round(med("path_rate"), 1),
        "ratio_engine_vs_consumer_plus_writer": round(med("ratio_rate"), 3),
        "anchor_cpu_s_per_100k_readings": round(med("anchor_cpu"), 2),
        "cpu_ratio_engine_vs_anchors": round(med("engine_cpu") / med("anchor_cpu"), 2),
        "ratio_anchors_vs_engine_per_cpu": round(med("ratio_cpu"), 3),
        "rounds": rounds,
        "rounds_readings_per_s": listed("rate", 0),
        "rounds_cpu_s_per_100k_readings": listed("engine_cpu", 2),
        "rounds_anchor_cpu_s_per_100k_readings": listed("anchor_cpu", 2),
        "rounds_ratio_engine_vs_consumer_plus_writer": listed("ratio_rate", 3),
        "rounds_ratio_anchors_vs_engine_per_cpu": listed("ratio_cpu", 3),
        "readings": total,
        "workers": workers,
        "settings_overrides": ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "none",
        "consume_seconds": round(med("elapsed"), 2),
        "freshness_p50_s": round(statistics.median(fresh), 3),
        "freshness_p99_s": round(_pct(fresh, 0.99), 3),
        "freshness_samples": len(fresh),
        "worker_rss_mib": round(rss_mb, 1),
        "backlog_produce_readings_per_s": round(total / produce_s, 1),
        "load_average_1m": ", ".join(f"{x:.1f}" for x in loads),
    }
    units = {
        "readings_per_s": "1/s",
        "readings_per_s_per_worker": "1/s",
        "cpu_s_per_100k_readings": "cpu-s",
        "anchor_consumer_decode_per_s": "1/s",
        "anchor_influx_writer_points_per_s": "1/s",
        "anchor_consumer_plus_writer_per_s": "1/s",
        "ratio_engine_vs_consumer_plus_writer": "ratio",
        "anchor_cpu_s_per_100k_readings": "cpu-s",
        "cpu_ratio_engine_vs_anchors": "ratio",
        "ratio_anchors_vs_engine_per_cpu": "ratio",
        "consume_seconds": "s",
        "freshness_p50_s": "s",
        "freshness_p99_s": "s",
        "worker_rss_mib": "MiB",
        "backlog_produce_readings_per_s": "1/s",
    }
    goals = {
        "readings_per_s_per_worker": ">= 25000",
        "ratio_engine_vs_consumer_plus_writer": ">= 0.8",
        "freshness_p99_s": "< 2",
    }
    notes = (
        f"{workers} worker process(es) (Faust, the one engine) on a 2-core machine shared with other jobs "
        f"(1-min load average at start, after each round and after freshness: {figures['load_average_1m']}); "
        f"backlog of {facilities} "
        f"facilities x {meters} meters, topic with 6 partitions; "
        "raw + 1m/15m/1h meter and facility rollups written per batch, "
        "offsets committed (Faust: acked) after the writes; "
        "freshness under 2000 readings/s live load plus a probe meter every 0.5 s; default aggregation settings "
        "except the ones named in settings_overrides. "
        f"{rounds} interleaved rounds (engine on a new group and empty database, then its anchors); every figure "
        "is the median of the rounds (the rounds_* rows list them). "
        "Anchors (bench/anchors.py, own processes, same backlog): a bare aiokafka consumer decoding every "
        "record with the worker's decoder, and a bare InfluxDB writer of as many raw points (batches of 5,000); "
        "the consumer+writer figure is both in series, the least work the engine does per reading; "
        "ratio_anchors_vs_engine_per_cpu = anchors' CPU-s / engine's CPU-s for the same readings."
    )
    write_results("aggregate", figures, units, quick, goals, notes)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(asyncio.run(main()))
