"""Raw archive to Parquet (day/facility partitions) and backfill from archive or topic (AGG-5)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aggregation.archive import Archiver, read_archive, write_partitions
from aggregation.backfill import backfill
from aggregation.faust_worker import FaustRollupWorker
from tests.aggregation.conftest import make_topics
from tests.aggregation.helpers import (
    PRODUCED,
    assert_matches,
    ground_truth,
    hour_floor,
    make_readings,
    new_names,
    now_utc,
    produce,
    raw_count,
    settings_for,
    stored_rollups,
    wait_caught_up,
    worker_env,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def delete_facility(influx, facility_id: str) -> None:
    for meas in ("readings", "meter_rollups", "facility_rollups"):
        await influx.query(f'DELETE FROM "{meas}" WHERE facility_id = $f', {"f": facility_id})


async def test_archive_writes_parquet_by_day_and_facility_and_backfill_rebuilds_rollups(
    settings, agg_db, agg_influx, uid, tmp_path, port
):
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"])
    archive_dir = tmp_path / "archive"
    s = settings_for(
        settings, agg_db, n["topic"], n["dlq"], n["group"], archive_uri=str(archive_dir), archive_batch_max_wait_s=0.5
    )
    bootstrap = settings.kafka.bootstrap_servers
    # Crosses midnight UTC when run near it; otherwise one day. Two facilities.
    start = hour_floor(now_utc()) - timedelta(hours=3)
    fac_a, fac_b = f"{n['facility']}-a", f"{n['facility']}-b"
    readings = make_readings(fac_a, 2, start, 300, seed=7) + make_readings(fac_b, 2, start, 50, seed=8)
    await produce(bootstrap, n["topic"], [*readings, ("x", b"poison is not archived")])

    archiver = Archiver(s)
    task = asyncio.create_task(archiver.run())
    try:
        await wait_caught_up(bootstrap, n["topic"], s.aggregation.archive_group)
    finally:
        archiver.stop.set()
        await asyncio.wait_for(task, 30)

    day = start.date().isoformat()
    files = sorted(Path(archive_dir).rglob("*.parquet"))
    assert files and all(f"day={f.parent.parent.name[4:]}" == f.parent.parent.name for f in files)
    assert {f.parent.name for f in files} == {f"facility_id={fac_a}", f"facility_id={fac_b}"}
    assert any(f.parent.parent.name == f"day={day}" for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == len(readings)

    # The archive alone reproduces the readings of a range.
    t1, t2 = start + timedelta(minutes=10), start + timedelta(minutes=50)
    from_archive = sorted(read_archive(str(archive_dir), fac_a, t1, t2), key=lambda r: (r.meter_id, r.ts))
    expected = sorted(
        (r for r in readings if r.facility_id == fac_a and t1 <= r.ts < t2), key=lambda r: (r.meter_id, r.ts)
    )
    assert from_archive == expected

    # Lose everything of fac_a in InfluxDB, then rebuild it from the archive with the CLI: the
    # readings are replayed through the running rollup worker (it committed the topic first).
    await delete_facility(agg_influx, fac_a)
    assert await raw_count(agg_influx, fac_a) == 0
    exe = Path(sys.executable).with_name("energy")
    t_end = start + timedelta(hours=2)
    worker = FaustRollupWorker(s)
    worker_task = asyncio.create_task(worker.run())
    out = await asyncio.to_thread(
        subprocess.run,
        [
            str(exe),
            "aggregation",
            "backfill",
            "--facility",
            fac_a,
            "--from",
            start.isoformat(),
            "--to",
            t_end.isoformat(),
            "--source",
            "archive",
        ],
        env=worker_env(s, port),
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "600 readings republished" in out.stdout and "rolled up by the aggregation worker" in out.stdout
        fac_a_readings = [r for r in readings if r.facility_id == fac_a]
        assert_matches(await stored_rollups(agg_influx, [fac_a]), ground_truth(fac_a_readings))
        assert await raw_count(agg_influx, fac_a) == 600

        # And from the topic (within Kafka retention), in-process.
        await delete_facility(agg_influx, fac_b)
        res = await backfill(s, fac_b, start, t_end, "topic", wait_s=120)
        assert res.readings == 100 and res.rolled_up
    finally:
        worker.stop.set()
        await asyncio.wait_for(worker_task, 30)
    assert_matches(
        await stored_rollups(agg_influx, [fac_b]), ground_truth(r for r in readings if r.facility_id == fac_b)
    )


async def test_archive_write_failure_reports_not_ready_commits_nothing_and_recovers(settings, agg_db, uid, tmp_path):
    from energy.observability.health import Health
    from tests.aggregation.helpers import committed_total

    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"])
    archive_dir = tmp_path / "archive"
    archive_dir.write_text("a file where the archive folder should be")  # every write fails
    s = settings_for(
        settings, agg_db, n["topic"], n["dlq"], n["group"], archive_uri=str(archive_dir), archive_batch_max_wait_s=0.5
    )
    bootstrap = settings.kafka.bootstrap_servers
    readings = make_readings(n["facility"], 2, hour_floor(now_utc()) - timedelta(hours=1), 40, seed=9)
    await produce(bootstrap, n["topic"], readings)
    health = Health("aggregation-test")
    archiver = Archiver(s, health=health)
    task = asyncio.create_task(archiver.run())
    try:
        await wait_until(lambda: "archive_failing" in health.conditions, timeout_s=30, what="archive_failing reported")
        assert not task.done(), "the archiver keeps running"
        done, _ = await committed_total(bootstrap, n["topic"], s.aggregation.archive_group)
        assert done == 0, "nothing committed while the files cannot be written"
        archive_dir.unlink()  # the disk is back
        await wait_caught_up(bootstrap, n["topic"], s.aggregation.archive_group)
    finally:
        archiver.stop.set()
        await asyncio.wait_for(task, 30)
    assert "archive_failing" not in health.conditions
    files = list(archive_dir.rglob("*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == len(readings)


async def test_backfill_of_a_day_while_the_worker_streams_the_same_day_final_rollups_equal_ground_truth(
    settings, agg_db, agg_influx, uid, tmp_path
):
    """Meter m01 streams live; meter m02's readings of the same hours exist only in the archive
    (lost from InfluxDB and gone from the topic). The backfill runs while the worker streams.
    Before 0211 the backfill wrote InfluxDB itself and the worker, whose cached hours never saw
    m02, overwrote the facility rollups without it."""
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"])
    archive_dir = tmp_path / "archive"
    s = settings_for(settings, agg_db, n["topic"], n["dlq"], n["group"], archive_uri=str(archive_dir))
    bootstrap = settings.kafka.bootstrap_servers
    start = hour_floor(now_utc()) - timedelta(hours=4)
    fac = n["facility"]
    both = make_readings(fac, 2, start, 720, seed=31)  # 3 hours of 2 meters
    live = [r for r in both if r.meter_id.endswith("m01")]
    archived = [r for r in both if r.meter_id.endswith("m02")]
    write_partitions(str(archive_dir), archived, "part-lost-from-influx")
    worker = FaustRollupWorker(s)
    task = asyncio.create_task(worker.run())
    try:
        await produce(bootstrap, n["topic"], live[:240])  # the worker caches these hours first
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=60)

        async def stream() -> None:
            for i in range(240, len(live), 60):
                await produce(bootstrap, n["topic"], live[i : i + 60])
                await asyncio.sleep(0)

        streaming = asyncio.create_task(stream())
        res = await backfill(s, fac, start, start + timedelta(days=1), "archive", wait_s=120)
        await streaming
        assert res.readings == len(archived) == 720 and res.rolled_up
        PRODUCED[n["topic"]] += res.readings
        await wait_caught_up(bootstrap, n["topic"], n["group"], timeout_s=60)
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, 30)
    assert_matches(await stored_rollups(agg_influx, [fac]), ground_truth(both))
    assert await raw_count(agg_influx, fac) == 1440
