"""One writer per window (decision 0210): a rebalance with a write in flight never lets a window
go back to fewer samples.

Worker A owns every partition and is writing a batch (half of each window's samples) when worker
B joins. The write is held in flight (a slow InfluxDB) until A's revocation has begun (the
rebalance then waits on it), or until B has written. No fixed hold: on a loaded machine a hold
timed from B's start could end before the rebalance even began, and the test would pass having
tested nothing. After every write of either worker the test reads the windows' sample counts back
from InfluxDB; the sequence per window must never decrease, A's revocation must return only after
the held write landed, and the final rollups must equal the ground truth.

The second test switches the fence off (the revocation neither waits nor fences, as before 0210)
and shows that the same check sees the regression: B writes the full window, then A's held write
lands with half of it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from aggregation.faust_worker import FaustRollupWorker
from energy.adapters.influx import InfluxClient, iter_rows
from tests.aggregation.conftest import make_topics
from tests.aggregation.helpers import (
    assert_matches,
    facilities_covering,
    ground_truth,
    hour_floor,
    make_readings,
    new_names,
    now_utc,
    produce,
    settings_for,
    stored_rollups,
    wait_caught_up,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

Key = tuple[str, str, str, int]  # facility, meter, window, window start (epoch s)


async def window_counts(influx: InfluxClient, facilities: list[str]) -> dict[Key, int]:
    """Samples per (facility, meter, window, start) as InfluxDB holds them now."""
    out = {}
    for fid in facilities:
        q = 'SELECT * FROM "rollups_2y"."meter_rollups" WHERE facility_id = $f'
        for row in iter_rows(await influx.query(q, {"f": fid}, epoch="s")):
            out[(fid, row["meter_id"], row["window"], int(row["time"]))] = int(row["sample_count"])
    return out


async def run_rebalance_with_write_in_flight(
    settings: Any, agg_db: str, agg_influx: InfluxClient, uid: str, fence: bool
) -> tuple[list[dict[Key, int]], list[Any], list[str], list[str]]:
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=2)
    s = settings_for(
        settings,
        agg_db,
        n["topic"],
        n["dlq"],
        n["group"],
        batch_max_readings=5000,
        rebalance_timeout_ms=20_000,
        revoke_write_wait_s=12.0,
    )
    bootstrap = settings.kafka.bootstrap_servers
    start = hour_floor(now_utc()) - timedelta(hours=2)
    facilities = facilities_covering(n["facility"], partitions=2, count=2)
    readings = [r for i, f in enumerate(facilities) for r in make_readings(f, 2, start, 120, seed=70 + i)]
    mid = start + timedelta(minutes=15)
    first = [r for r in readings if r.ts < mid]
    second = [r for r in readings if r.ts >= mid]

    history: list[dict[Key, int]] = []
    held, b_wrote, a_revoking = asyncio.Event(), asyncio.Event(), asyncio.Event()
    order: list[str] = []  # when A's held write landed and when A's revocation returned
    a, b = FaustRollupWorker(s), FaustRollupWorker(s)

    async def no_fence() -> None:  # the revocation as it was before 0210
        return None

    fence_writes = a.fence_writes if fence else no_fence

    async def observed_fence() -> None:
        if not held.is_set():  # A's own joins before the write under test
            await fence_writes()
            return
        a_revoking.set()
        await fence_writes()
        order.append("a revoked")

    a.fence_writes = observed_fence  # type: ignore[method-assign]

    async def release() -> bool:
        if fence and a_revoking.is_set():
            return True  # the rebalance now waits on the held write (0210): let it land
        # without the fence: B wrote a meter's full hour, now A's stale write lands
        return b_wrote.is_set() and 120 in (await window_counts(agg_influx, facilities)).values()

    def observed(worker: FaustRollupWorker, name: str) -> None:
        write = worker.engine.write

        async def wrapper(plan: Any) -> None:
            raw = "".join(plan.raw_lines)
            both = all(f"facility_id={f}" in raw for f in facilities)
            holding = name == "a" and not held.is_set() and both
            if holding:
                held.set()  # A's first write covering both facilities stays in flight: a slow InfluxDB
                await wait_until(release, timeout_s=120, what="a reason to let A's held write land", interval_s=0.05)
            await write(plan)
            if holding:
                order.append("a held write landed")
            history.append(await window_counts(agg_influx, facilities))
            if name == "b":
                b_wrote.set()

        worker.engine.write = wrapper  # type: ignore[method-assign]

    observed(a, "a")
    observed(b, "b")
    task_a = asyncio.create_task(a.run())
    task_b: asyncio.Task[None] | None = None
    try:
        await produce(bootstrap, n["topic"], first)
        await asyncio.wait_for(held.wait(), 60)
        await produce(bootstrap, n["topic"], second)
        task_b = asyncio.create_task(b.run())
        await asyncio.wait_for(b_wrote.wait(), 90)
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=90)
        history.append(await window_counts(agg_influx, facilities))
    finally:
        a.stop.set()
        b.stop.set()
        await asyncio.gather(task_a, *([task_b] if task_b else []), return_exceptions=True)
    return history, readings, facilities, order


def regressions(history: list[dict[Key, int]]) -> list[tuple[Any, int, int]]:
    seen: dict[Key, int] = defaultdict(int)
    out = []
    for snapshot in history:
        for key, count in snapshot.items():
            if count < seen[key]:
                out.append((key, seen[key], count))
            seen[key] = max(seen[key], count)
    return out


async def test_a_rebalance_with_a_write_in_flight_never_takes_a_window_back_to_fewer_samples(
    settings, agg_db, agg_influx, uid
):
    history, readings, facilities, order = await run_rebalance_with_write_in_flight(
        settings, agg_db, agg_influx, uid, fence=True
    )
    assert len(history) >= 3, "writes of both workers were observed"
    # the revocation went on only once the write it found in flight had landed
    assert order[:2] == ["a held write landed", "a revoked"], order
    assert regressions(history) == []
    # 120 readings per meter in one hour: each meter's hourly window holds 120 samples.
    hour = int(hour_floor(readings[0].ts).timestamp())
    assert {k: v for k, v in history[-1].items() if k[2] == "1h"} == {
        (r.facility_id, r.meter_id, "1h", hour): 120 for r in readings
    }
    assert_matches(await stored_rollups(agg_influx, facilities), ground_truth(readings))


async def test_without_the_fence_the_same_check_sees_the_old_owner_overwrite_a_window_with_fewer_samples(
    settings, agg_db, agg_influx, uid
):
    history, _, _, order = await run_rebalance_with_write_in_flight(settings, agg_db, agg_influx, uid, fence=False)
    assert order[0] == "a revoked", order  # the old revocation did not wait for the write in flight
    found = regressions(history)
    assert found, "B wrote full windows, then A's stale write landed: the check must see it"
    assert all(after < before for _, before, after in found)


async def test_a_worker_with_a_static_group_instance_id_joins_and_rolls_up_on_the_local_broker(
    settings, agg_db, agg_influx, uid
):
    """Static membership (0210) is a setting; the local broker (Tansu) accepts the join with a
    group.instance.id and the worker rolls up as usual, also after a restart under the same id."""
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=2)
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"], group_instance_id=f"pod-{uid}")
    bootstrap = settings.kafka.bootstrap_servers
    start = hour_floor(now_utc()) - timedelta(hours=2)
    readings = make_readings(n["facility"], 2, start, 80, seed=90)
    for part in (readings[:80], readings[80:]):  # one worker, then its restart under the same id
        worker = FaustRollupWorker(s)
        assert worker.app.conf.consumer_group_instance_id == f"pod-{uid}"
        task = asyncio.create_task(worker.run())
        try:
            await produce(bootstrap, n["topic"], part)
            await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=90)
        finally:
            worker.stop.set()
            await asyncio.wait_for(task, 30)
    assert_matches(await stored_rollups(agg_influx, [n["facility"]]), ground_truth(readings))


async def test_a_batch_retrying_against_a_failing_influxdb_stops_retrying_once_its_partitions_are_revoked(
    settings, uid
):
    """Before 0210 the retry loop of a revoked batch went on until InfluxDB answered, then wrote."""
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    from energy.stack.process import free_port
    from tests.aggregation.helpers import event_bytes

    down = settings.influx.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})  # nothing listens
    worker = FaustRollupWorker(settings.model_copy(update={"influx": down}))
    tp = TopicPartition(f"t-{uid}", 0)
    readings = make_readings(f"fac-{uid}", 1, hour_floor(now_utc()) - timedelta(hours=1), 3)
    records = [
        ConsumerRecord(tp.topic, 0, i, 0, 0, r.facility_id.encode(), event_bytes(r), None, 0, 0, ())
        for i, r in enumerate(readings)
    ]
    try:
        staging = asyncio.create_task(worker._stage({tp: records}))
        await wait_until(  # retrying: InfluxDB is failing
            lambda: "sink_backpressure" in worker.health.conditions or staging.done(),
            timeout_s=30,
            what="the batch retrying against the failing InfluxDB",
        )
        assert not staging.done(), "the batch must still be retrying"
        await worker.fence_writes()  # the revocation
        staged = await asyncio.wait_for(staging, worker.cfg.backpressure_max_delay_s + 10)
        assert staged is not None and staged.fenced and staged.plan is None
        await worker._finish(staged)  # neither written nor acked (the app was never started)
        assert worker.writes_done == 0 and worker.batches_acked == 0
        assert "sink_backpressure" not in worker.health.conditions
    finally:
        await worker.close()
