"""No single record stops a partition; events of a newer minor are read (real broker and InfluxDB)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from aggregation.faust_worker import FaustRollupWorker
from tests.aggregation.conftest import create_influx_db, influx_admin, make_topics
from tests.aggregation.helpers import (
    assert_matches,
    dlq_records,
    event_bytes,
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

pytestmark = pytest.mark.asyncio(loop_scope="session")


@asynccontextmanager
async def running(settings):
    worker = FaustRollupWorker(settings)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, 30)
        assert worker.failure is None, f"the worker stopped on {worker.failure!r}"


def as_newer_minor(raw: bytes) -> bytes:
    """The same event as a producer on meter.reading 1.1 sends it: extra fields in envelope and payload."""
    doc = json.loads(raw)
    doc["schema_minor"] = 1
    doc["payload"]["power_factor"] = 0.96
    return json.dumps(doc).encode()


async def test_a_record_whose_rollup_fails_for_good_is_bisected_out_to_the_dlq_and_the_partition_moves_on(
    settings, uid
):
    """A non-transient error while preparing a batch (here: someone wrote ``active_power_kw`` as a
    string into the hour a facility's readings need, so loading that hour cannot be parsed) hits
    only the readings that need that hour; they go to the DLQ with their bytes, the rest is rolled up."""
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=1)
    db = f"aggtest_poison_{uid}"
    create_influx_db(settings.influx.url, db)
    s = settings_for(settings, db, n["topic"], n["dlq"], n["group"], batch_max_readings=500)
    good_fac, bad_fac = f"{n['facility']}-good", f"{n['facility']}-bad"
    hour = hour_floor(now_utc()) - timedelta(hours=3)
    # Raw shards are one day long and field types are per shard: the foreign string lives in a
    # day of its own, so only readings that need that hour are affected.
    bad_hour = hour_floor(now_utc()) - timedelta(days=2)
    at_ns = int(bad_hour.timestamp()) * 10**9
    foreign = f'readings,facility_id={bad_fac},meter_id=x active_power_kw="text",energy_kwh=1 {at_ns}'
    req = urllib.request.Request(
        f"{settings.influx.url}/write?db={db}&rp=raw_90d", data=foreign.encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    good = make_readings(good_fac, 2, hour, 60, seed=60)
    poisoned = make_readings(bad_fac, 1, bad_hour + timedelta(minutes=20), 3, seed=61)
    after = make_readings(good_fac, 2, hour + timedelta(minutes=15), 20, seed=62)
    after = [r.model_copy(update={"meter_id": r.meter_id + "x"}) for r in after]  # other meters: no overlap
    items = [*good[:50], *poisoned[:2], *good[50:], poisoned[2]]
    bootstrap = settings.kafka.bootstrap_servers
    await produce(bootstrap, n["topic"], items)
    try:
        async with running(s):
            await wait_caught_up(bootstrap, n["topic"], n["group"])
            await produce(bootstrap, n["topic"], after)  # the partition moved on
            await wait_caught_up(bootstrap, n["topic"], n["group"])
        from energy.adapters.influx import InfluxClient

        client = InfluxClient(s.influx, breaker_name="influxdb-aggtests-poison")
        try:
            assert_matches(await stored_rollups(client, [good_fac]), ground_truth([*good, *after]))
        finally:
            await client.close()
        dead = await dlq_records(bootstrap, n["dlq"], 3)
        assert sorted(d.payload.reason for d in dead) == ["unprocessable"] * 3
        raws = [json.loads(base64.b64decode(d.payload.raw_b64)) for d in dead]
        assert sorted(doc["payload"]["reading_id"] for doc in raws) == sorted(str(r.reading_id) for r in poisoned)
        assert all("ValueError" in d.payload.detail for d in dead)
    finally:
        influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')


async def test_rolling_deploy_producer_on_1_1_consumer_on_1_0_no_dlq_no_gap(settings, agg_db, agg_influx, uid):
    """Ingestion upgraded first sends meter.reading 1.1 (extra fields); aggregation still at 1.0
    rolls every reading up: nothing dead-lettered, no window missing. A 2.0 event is refused."""
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=2)
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"])
    fac = n["facility"]
    start = hour_floor(now_utc()) - timedelta(hours=2)
    old = make_readings(fac, 2, start, 40, seed=70)  # 10 minutes from the 1.0 producer...
    new = make_readings(fac, 2, start + timedelta(minutes=10), 40, seed=71)  # ...then 10 from 1.1
    bootstrap = settings.kafka.bootstrap_servers
    await produce(bootstrap, n["topic"], old)
    async with running(s):
        await produce(bootstrap, n["topic"], [(r.facility_id, as_newer_minor(event_bytes(r))) for r in new])
        await wait_caught_up(bootstrap, n["topic"], n["group"])
        truth = ground_truth([*old, *new])
        assert_matches(await stored_rollups(agg_influx, [fac]), truth)
        minutes = {k[3] for k in truth if k[1] is None and k[2] == "1m"}
        assert len(minutes) == 20  # no gap: every minute of the 20 has its facility rollup
        assert await dlq_records(bootstrap, n["dlq"], 1, timeout_s=1) == []
        # A major this consumer does not know is the only refusal.
        doc = json.loads(event_bytes(new[0]))
        doc["schema_version"] = 2
        await produce(bootstrap, n["topic"], [(fac, json.dumps(doc).encode())])
        await wait_caught_up(bootstrap, n["topic"], n["group"])
    dead = await dlq_records(bootstrap, n["dlq"], 1)
    assert [d.payload.reason for d in dead] == ["incompatible_version"]


async def test_backfill_applies_the_live_rule_a_week_old_reading_counts_one_beyond_retention_does_not(
    settings, agg_db, agg_influx, uid
):
    from aggregation.backfill import rebuild

    n = new_names(uid)
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"])
    fac = n["facility"]
    week_old = make_readings(fac, 1, hour_floor(now_utc()) - timedelta(days=7), 8, seed=80)
    # Stamped by ingestion a week after measurement (e.g. replayed from the archive): not late.
    week_old = [r.model_copy(update={"received_at": r.ts + timedelta(days=7)}) for r in week_old]
    expired = make_readings(fac, 1, now_utc() - timedelta(days=91), 2, seed=81)
    result = await rebuild(s, [*week_old, *expired], influx=agg_influx)
    assert (result.readings, result.too_late) == (8, 2)
    assert_matches(await stored_rollups(agg_influx, [fac]), ground_truth(week_old))


async def test_a_time_without_an_int64_nanosecond_form_is_refused_by_the_engine_not_sent_to_influxdb(
    settings, agg_influx
):
    from datetime import UTC, datetime

    from aggregation.engine import RollupEngine, UnrepresentableTimeError
    from tests.aggregation.helpers import reading

    engine = RollupEngine(agg_influx, "raw_90d", "rollups_2y", settings.aggregation)
    far = datetime(2262, 4, 11, 23, 0, tzinfo=UTC)  # int64 ns end at 2262-04-11T23:47:16Z, minus 2 h
    with pytest.raises(UnrepresentableTimeError, match="int64"):
        await engine.prepare([reading("m", "f", far, 1.0, 1.0, 0, far)])
    assert engine.states == {}  # refused before anything was loaded or merged
