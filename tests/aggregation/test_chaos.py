"""Chaos: kill -9 the worker mid-stream (AGG-1); stop InfluxDB under load (AGG-3).

The worker runs as a real subprocess (`energy aggregation run`); the final rollups must
equal the ground truth computed from the readings: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from datetime import timedelta

import psutil
import pytest

from energy.adapters.influx import InfluxClient
from energy.stack.servers import InfluxServer
from tests.aggregation.conftest import make_topics
from tests.aggregation.helpers import (
    assert_matches,
    committed_total,
    ground_truth,
    hour_floor,
    make_readings,
    new_names,
    now_utc,
    produce,
    raw_count,
    settings_for,
    start_worker,
    stored_rollups,
    wait_caught_up,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.chaos, pytest.mark.slow]


def http_get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def fetched_queue(port: int) -> tuple[float, float]:
    """(depth, capacity) of the worker's read-ahead of fetched batches, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        for name in ("energy_queue_depth", "energy_queue_capacity"):
            if line.startswith(f'{name}{{queue="aggregation_fetched_batches"}}'):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values.get("energy_queue_depth", 0.0), values.get("energy_queue_capacity", 0.0)


async def wait_http(port: int, timeout_s: float = 90, path: str = "/healthz") -> None:
    # A positive wait (only a failure takes this long): a worker process took over 30 s to answer at load 14.
    await wait_until(
        lambda: http_get(port, path)[0] == 200,
        timeout_s=timeout_s,
        what=f"the worker answering {path} with 200",
        interval_s=0.2,
        ignore=(OSError,),
    )


async def wait_ready(port: int, timeout_s: float = 90) -> None:
    """Until /ready is 200: the worker has its partitions (the Faust worker is not ready before)."""
    await wait_http(port, timeout_s, "/ready")


def stop_proc(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except Exception:
            proc.kill()
            proc.wait(5)


async def test_kill_9_between_the_influxdb_write_and_the_commit_then_restart_final_rollups_equal_ground_truth(
    settings, agg_db, agg_influx, uid, port, tmp_path
):
    """The worker's fault point (``fault_kill_after_writes``) SIGKILLs it right after its 3rd
    InfluxDB write, before that batch is acked or committed: deterministic, not by chance."""
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=3)
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"], batch_max_readings=300, archive_enabled=False)
    faulty = settings_for(
        settings,
        agg_db,
        n["topic"],
        n["dlq"],
        n["group"],
        batch_max_readings=300,
        archive_enabled=False,
        fault_kill_after_writes=3,
    )
    bootstrap = settings.kafka.bootstrap_servers
    start = hour_floor(now_utc()) - timedelta(hours=2) + timedelta(minutes=30)
    facilities = [f"{n['facility']}-{i}" for i in range(4)]
    readings = [r for i, f in enumerate(facilities) for r in make_readings(f, 5, start, 240, seed=10 + i)]
    readings.sort(key=lambda r: r.ts)  # a live stream: time order across facilities
    proc = start_worker(faulty, port, tmp_path / "worker1.log")
    try:
        await wait_http(port)
        await wait_ready(port)  # joined: the stream below is consumed while it flows
        for i in range(0, len(readings), 200):
            await produce(bootstrap, n["topic"], readings[i : i + 200])
        assert await asyncio.to_thread(proc.wait, 90) == -signal.SIGKILL  # the fault point fired
        log = (tmp_path / "worker1.log").read_text()
        assert "fault_point_sigkill" in log and "batch_committed" not in log.split("fault_point_sigkill")[-1]
        committed, _ = await committed_total(bootstrap, n["topic"], n["group"])
        written = sum([await raw_count(agg_influx, f) for f in facilities])
        # The killed batch is in InfluxDB but its offsets are not committed: it will replay.
        assert committed < written <= len(readings), (committed, written)
        proc = start_worker(s, port, tmp_path / "worker2.log")
        await wait_http(port)
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=90)
    finally:
        stop_proc(proc)
    assert_matches(await stored_rollups(agg_influx, facilities), ground_truth(readings))
    for f in facilities:
        assert await raw_count(agg_influx, f) == 5 * 240


async def test_influxdb_down_under_load_pauses_with_bounded_memory_and_catches_up_without_loss(
    settings, private_server, uid, port, tmp_path
):
    influx_srv = private_server(InfluxServer)
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=3)
    base = settings.model_copy(
        update={"influx": settings.influx.model_copy(update={"url": f"http://127.0.0.1:{influx_srv.port}"})}
    )
    # A small stream buffer and a backlog 20x its size: unbounded buffering would show in the RSS.
    s = settings_for(
        base,
        "energy",
        n["topic"],
        n["dlq"],
        n["group"],
        archive_enabled=False,
        influx_breaker_reset_s=2.0,
        batch_max_readings=1000,
        faust_stream_buffer=2000,
    )
    bootstrap = settings.kafka.bootstrap_servers
    start = hour_floor(now_utc()) - timedelta(hours=2)
    facilities = [f"{n['facility']}-{i}" for i in range(10)]
    readings = [r for i, f in enumerate(facilities) for r in make_readings(f, 10, start, 480, seed=20 + i)]
    readings.sort(key=lambda r: r.ts)
    first, during = readings[:4000], readings[4000:]
    assert len(during) >= 20 * s.aggregation.faust_stream_buffer
    proc = start_worker(s, port, tmp_path / "worker.log")
    client = InfluxClient(s.influx, breaker_name="influxdb-aggtests-private")
    try:
        await wait_http(port)
        await produce(bootstrap, n["topic"], first)
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=60)
        rss_before = psutil.Process(proc.pid).memory_info().rss

        influx_srv.stop()
        rss_max = rss_before
        not_ready_reason = None
        for i in range(0, len(during), 2000):  # the stream goes on while InfluxDB is down
            await produce(bootstrap, n["topic"], during[i : i + 2000])

        # Wait (with a deadline) for the state where the worker takes no more: it reports the
        # backpressure, and its read-ahead of fetched batches is full, so its fetch loop waits.
        # The RSS then holds all it will hold while the outage lasts.
        def saturated() -> tuple[str | None, float, float]:
            nonlocal rss_max, not_ready_reason
            rss_max = max(rss_max, psutil.Process(proc.pid).memory_info().rss)
            status, body = http_get(port, "/ready")
            if status == 503 and "sink_backpressure" in body["conditions"]:
                not_ready_reason = body["conditions"]["sink_backpressure"]
            depth, capacity = fetched_queue(port)
            return (not_ready_reason, depth, capacity)

        await wait_until(
            saturated,
            accept=lambda seen: seen[0] is not None and seen[2] > 0 and seen[1] >= seen[2],
            timeout_s=120,
            what="the worker paused with a full read-ahead (reason, depth, capacity)",
            interval_s=0.5,
        )
        rss_max = max(rss_max, psutil.Process(proc.pid).memory_info().rss)
        done, _ = await committed_total(bootstrap, n["topic"], n["group"])
        assert len(readings) - done >= len(during) - 2000, "the worker must stop committing while InfluxDB is down"
        assert not_ready_reason is not None and "influxdb" in not_ready_reason
        assert proc.poll() is None, "the worker must not crash"
        # Bounded: one batch + a bounded prefetch, not the backlog (44k readings, ~33 MB of JSON).
        assert rss_max - rss_before < 64 * 2**20, (rss_before, rss_max)

        influx_srv.start()
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=90)
        assert http_get(port, "/ready")[0] == 200
        assert_matches(await stored_rollups(client, facilities), ground_truth(readings))
        assert sum([await raw_count(client, f) for f in facilities]) == len(readings)
    finally:
        stop_proc(proc)
        await client.close()
