"""Chaos (issue 11): Kafka hangs longer than the lateness setting while meters publish.

Meters -> Mosquitto -> ingestion -> private Kafka -> aggregation worker -> InfluxDB, all real.
``allowed_lateness_s`` is shortened to 2 s and the broker is paused (SIGSTOP) for longer than
that while the simulator publishes. Before decision 0202's revision the readings parked during
the outage came out "too late" and were dead-lettered; now every reading within the raw
retention is rolled up: after recovery no reading is lost or late-dropped, the rollups equal the
ground truth computed from what ingestion published, and the late windows were announced.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from aggregation.faust_worker import FaustRollupWorker
from energy.adapters.influx import InfluxClient
from energy.fleet import build_fleet
from energy.stack.servers import KafkaServer
from energy.stack.topics import ensure_topics_async
from schemas.readings import LateWindowEvent, MeterReadingEvent
from tests.aggregation.conftest import create_influx_db, influx_admin
from tests.aggregation.helpers import (
    assert_matches,
    dlq_records,
    ground_truth,
    raw_count,
    settings_for,
    stored_rollups,
    topic_events,
)
from tests.ingestion.conftest import ingest_settings, read_topic, run_sim
from tests.waiting import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

FACILITIES = 2
COUNT = 60  # readings per meter
RATE = 60  # readings/s over all meters
OUTAGE_S = 8.0  # the broker is hung this long: four times the shortened lateness
LATENESS_S = 2.0


async def test_kafka_hung_longer_than_the_lateness_bound_loses_and_late_drops_nothing(
    settings, uid, private_server, start_service
):
    broker = private_server(KafkaServer)
    bootstrap = f"127.0.0.1:{broker.port}"
    s = ingest_settings(settings, uid, bootstrap=bootstrap, dedup_enabled=False, publish_timeout_s=2.0)
    service = await start_service(s)
    db = f"aggtest_outage_{uid}"
    create_influx_db(settings.influx.url, db)
    agg_dlq = f"agg-dlq-{uid}"
    await ensure_topics_async(bootstrap, {agg_dlq: 1}, timeout_s=20)
    ws = settings_for(
        s,
        db,
        s.ingestion.readings_topic,
        agg_dlq,
        f"agg-{uid}",
        allowed_lateness_s=LATENESS_S,
        archive_enabled=False,
    )
    worker = FaustRollupWorker(ws)
    run = asyncio.create_task(worker.run())
    influx = InfluxClient(ws.influx, breaker_name="influxdb-aggtests-outage")
    facilities = [f.facility_id for f in build_fleet()[:FACILITIES]]
    expected = sum(len(f.meters) for f in build_fleet()[:FACILITIES]) * COUNT
    try:
        sim = asyncio.create_task(
            run_sim(s, "--count", str(COUNT), "--rate", str(RATE), "--facilities", str(FACILITIES), "--seed", "8")
        )

        async def publishing() -> bool:
            return service.mqtt is not None and service.mqtt.messages > 0

        await wait_until(publishing, timeout_s=30, what="the first readings", interval_s=0.2)
        broker.pause()
        paused_at = time.monotonic()
        try:
            # The outage has to last: it is the fault injected, not a wait for something to happen.
            await asyncio.sleep(OUTAGE_S)
        finally:
            broker.resume()
        outage = time.monotonic() - paused_at
        summary = await sim
        assert summary["readings"] == expected

        async def all_stored() -> bool:
            return sum([await raw_count(influx, f) for f in facilities]) >= expected

        await wait_until(all_stored, timeout_s=120, what="every reading in InfluxDB", interval_s=0.2)
        assert worker.failure is None and not run.done()
        published = await read_topic(s, s.ingestion.readings_topic, expect=expected, timeout_s=60)
        readings = [MeterReadingEvent.model_validate_json(json.dumps(r.value)).payload for r in published]
        assert len({(r.meter_id, r.ts) for r in readings}) == expected  # 0 lost between meters and Kafka
        assert [await raw_count(influx, f) for f in facilities] == [
            sum(1 for m in build_fleet()[i].meters) * COUNT for i in range(FACILITIES)
        ]
        # Rollups are computed from InfluxDB only after the raw write, so wait for the last batch's commit.
        truth = ground_truth(readings)

        async def rolled_up() -> bool:
            stored = await stored_rollups(influx, facilities)
            return set(stored) == set(truth) and all(stored[k].sample_count == truth[k].sample_count for k in truth)

        await wait_until(rolled_up, timeout_s=60, what="the rollups of every reading", interval_s=0.2)
        assert_matches(await stored_rollups(influx, facilities), truth)
        assert await dlq_records(bootstrap, agg_dlq, 1, timeout_s=2) == []  # nothing too_late
        # Readings older than the 2 s notification threshold were announced, not dropped.
        oldest = min(r.ts for r in readings)
        late = await topic_events(bootstrap, ws.aggregation.late_windows_topic, 1, LateWindowEvent, timeout_s=20)
        assert late and all(e.payload.facility_id in facilities for e in late)
        assert min(e.payload.window_start for e in late) <= oldest
        assert outage > LATENESS_S
    finally:
        worker.stop.set()
        await asyncio.wait_for(run, 30)
        await influx.close()
        influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')
