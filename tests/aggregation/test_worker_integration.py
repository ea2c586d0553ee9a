"""The rollup worker against the real broker and InfluxDB (AGG-1, AGG-2, AGG-4)."""

from __future__ import annotations

import asyncio
import base64
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from aggregation.faust_worker import FaustRollupWorker
from energy.adapters.influx import InfluxClient
from tests.aggregation.conftest import make_topics
from tests.aggregation.helpers import (
    assert_matches,
    dlq_records,
    facilities_covering,
    ground_truth,
    hour_floor,
    make_readings,
    new_names,
    now_utc,
    produce,
    raw_count,
    reading,
    settings_for,
    stored_rollups,
    topic_events,
    wait_caught_up,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


@asynccontextmanager
async def running_worker(settings):
    worker = FaustRollupWorker(settings)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, 30)


async def test_rollups_equal_sums_computed_directly_from_readings_and_replays_change_nothing(
    settings, agg_db, agg_influx, uid
):
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"])
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"])
    start = hour_floor(now_utc()) - timedelta(hours=2) + timedelta(minutes=50)  # crosses an hour boundary
    fac_a, fac_b = f"{n['facility']}-a", f"{n['facility']}-b"
    readings = make_readings(fac_a, 3, start, 100, seed=1) + make_readings(fac_b, 2, start, 100, seed=2)
    bootstrap = settings.kafka.bootstrap_servers
    await produce(bootstrap, n["topic"], readings)
    async with running_worker(s):
        await wait_caught_up(bootstrap, n["topic"], n["group"])
        truth = ground_truth(readings)
        assert_matches(await stored_rollups(agg_influx, [fac_a, fac_b]), truth)
        assert await raw_count(agg_influx, fac_a) == 300

        # Duplicates and a replayed batch: the same readings again, shuffled.
        replay = list(reversed(readings[:150])) + readings[400:]
        await produce(bootstrap, n["topic"], replay)
        await wait_caught_up(bootstrap, n["topic"], n["group"])
        assert_matches(await stored_rollups(agg_influx, [fac_a, fac_b]), truth)
        assert await raw_count(agg_influx, fac_a) == 300


async def test_late_readings_update_every_affected_window_only_retention_and_clock_skew_refuse(
    settings, agg_db, agg_influx, uid
):
    from schemas.readings import LateWindowEvent

    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"])
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"])
    start = hour_floor(now_utc()) - timedelta(hours=3)
    fac = n["facility"]
    readings = make_readings(fac, 2, start, 240, seed=3)  # one hour per meter
    late_ones = [r for i, r in enumerate(readings) if i % 7 == 3]  # held back, sent later
    on_time = [r for r in readings if r not in late_ones]
    # Received 2 h after measurement (e.g. parked in Mosquitto during an outage of ours): rolled up.
    parked = reading(f"{fac}-m09", fac, start, 10.0, 1.0, 0, start + timedelta(hours=2))
    # Refused: 30 min inside the retention margin (1 h before the 90 d raw retention ends), and a
    # day in the future.
    expiring_ts = now_utc() - timedelta(days=90) + timedelta(minutes=30)
    expiring = reading(f"{fac}-m08", fac, expiring_ts, 10.0, 1.0, 0, expiring_ts)
    future_ts = hour_floor(now_utc()) + timedelta(days=1)
    future = reading(f"{fac}-m08", fac, future_ts, 10.0, 1.0, 1, now_utc())
    bootstrap = settings.kafka.bootstrap_servers
    await produce(bootstrap, n["topic"], on_time)
    async with running_worker(s):
        await wait_caught_up(bootstrap, n["topic"], n["group"])
        assert_matches(await stored_rollups(agg_influx, [fac]), ground_truth(on_time))
        late_ones = [r.model_copy(update={"received_at": r.ts + timedelta(minutes=40)}) for r in late_ones]
        await produce(bootstrap, n["topic"], [*late_ones, parked, expiring, future])
        await wait_caught_up(bootstrap, n["topic"], n["group"])
        assert_matches(await stored_rollups(agg_influx, [fac]), ground_truth([*readings, parked]))
    dead = await dlq_records(bootstrap, n["dlq"], 2)
    by_reason = {d.payload.reason: base64.b64decode(d.payload.raw_b64).decode() for d in dead}
    assert sorted(by_reason) == ["timestamp_in_future", "too_late"]
    assert all(d.payload.stage == "aggregation" and d.payload.key == fac for d in dead)
    assert str(expiring.reading_id) in by_reason["too_late"]
    assert str(future.reading_id) in by_reason["timestamp_in_future"]
    # Every reading was more than allowed_lateness_s (1 h) old when rolled up: all four quarters of
    # the hour are announced for settlement, with the late readings of each batch counted.
    notices = await topic_events(bootstrap, s.aggregation.late_windows_topic, 8, LateWindowEvent, timeout_s=10)
    quarters = {start + timedelta(minutes=15 * q) for q in range(4)}
    assert {e.payload.window_start for e in notices} == quarters
    assert {e.payload.facility_id for e in notices} == {fac}
    assert sum(e.payload.late_readings for e in notices) == len(on_time) + len(late_ones) + 1
    assert all(e.payload.max_lateness_s > 3600 for e in notices)


async def test_poison_messages_go_to_dlq_with_raw_bytes_and_the_partition_moves_on(settings, agg_db, agg_influx, uid):
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=1)
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"])
    fac = n["facility"]
    start = hour_floor(now_utc()) - timedelta(hours=1)
    good = make_readings(fac, 1, start, 8, seed=4)
    poison = [
        (fac, b"\xff\xfe not json"),
        (fac, b'{"event_type": "meter.reading", "payload": {}}'),
        (fac, b""),
    ]
    items = [good[0], poison[0], *good[1:4], poison[1], poison[2], *good[4:]]
    await produce(settings.kafka.bootstrap_servers, n["topic"], items)
    async with running_worker(s):
        await wait_caught_up(settings.kafka.bootstrap_servers, n["topic"], n["group"])
    assert_matches(await stored_rollups(agg_influx, [fac]), ground_truth(good))
    dead = await dlq_records(settings.kafka.bootstrap_servers, n["dlq"], 3)
    assert sorted(d.payload.reason for d in dead) == ["schema_mismatch", "undecodable", "undecodable"]
    assert {base64.b64decode(d.payload.raw_b64) for d in dead} == {p[1] for p in poison}
    assert all(d.payload.source.startswith(f"kafka:{n['topic']}/0@") for d in dead)


async def test_a_reading_influxdb_refuses_for_good_goes_to_dlq_and_the_worker_goes_on(settings, uid):
    from tests.aggregation.conftest import create_influx_db, influx_admin

    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=1)
    db = f"aggtest_conflict_{uid}"
    create_influx_db(settings.influx.url, db)
    s = settings_for(settings, db, n["topic"], n["dlq"], n["group"])
    fac = n["facility"]
    bad_day = hour_floor(now_utc()) - timedelta(days=2)
    # Someone wrote `seq` as a string into that day's shard: every int `seq` there now conflicts.
    conflict = f'readings,facility_id=other,meter_id=other seq="text" {int(bad_day.timestamp()) * 10**9}'
    import urllib.request

    req = urllib.request.Request(
        f"{settings.influx.url}/write?db={db}&rp=raw_90d", data=conflict.encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    good = make_readings(fac, 2, hour_floor(now_utc()) - timedelta(hours=2), 20, seed=40)
    refused = make_readings(fac, 1, bad_day + timedelta(minutes=5), 1, seed=41)
    await produce(settings.kafka.bootstrap_servers, n["topic"], [*good[:20], *refused, *good[20:]])
    client = InfluxClient(s.influx, breaker_name="influxdb-aggtests-conflict")
    try:
        async with running_worker(s):
            await wait_caught_up(settings.kafka.bootstrap_servers, n["topic"], n["group"])
        dead = await dlq_records(settings.kafka.bootstrap_servers, n["dlq"], 1)
        assert [d.payload.reason for d in dead] == ["sink_rejected"]
        assert "conflict" in dead[0].payload.detail
        assert str(refused[0].reading_id) in base64.b64decode(dead[0].payload.raw_b64).decode()
        assert await raw_count(client, fac) == len(good)
    finally:
        await client.close()
        influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')


async def test_two_workers_share_partitions_and_one_leaving_mid_stream_loses_and_doubles_nothing(
    settings, agg_db, agg_influx, uid
):
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=4)
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"], batch_max_readings=200)
    bootstrap = settings.kafka.bootstrap_servers
    start = hour_floor(now_utc()) - timedelta(hours=2)
    facilities = facilities_covering(n["facility"], partitions=4, count=6)
    readings = [r for i, f in enumerate(facilities) for r in make_readings(f, 3, start, 160, seed=50 + i)]
    readings.sort(key=lambda r: r.ts)
    half = len(readings) // 2
    a, b = FaustRollupWorker(s), FaustRollupWorker(s)
    task_a, task_b = asyncio.create_task(a.run()), asyncio.create_task(b.run())
    try:
        await wait_until(lambda: a.assignment() and b.assignment(), timeout_s=30, what="both workers with partitions")
        assert not (a.assignment() & b.assignment())
        await produce(bootstrap, n["topic"], readings[:half])
        a.stop.set()  # graceful: finishes and commits its batch, leaves the group
        await asyncio.wait_for(task_a, 30)
        # The rebalance takes seconds on Tansu (0200): until it completes, b only reads its own half.
        await wait_until(
            lambda: len(b.assignment()) == 4,
            timeout_s=60,
            what="the remaining worker taking over every partition",
            interval_s=0.2,
        )
        await produce(bootstrap, n["topic"], readings[half:])
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=60)
        assert len(b.assignment()) == 4
    finally:
        a.stop.set()
        b.stop.set()
        await asyncio.gather(task_a, task_b, return_exceptions=True)
    assert_matches(await stored_rollups(agg_influx, facilities), ground_truth(readings))
