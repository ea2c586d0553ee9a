"""Test helpers for aggregation: readings, ground truth computed directly from them, waiting."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from energy.adapters.influx import InfluxClient, iter_rows
from energy.settings import Settings
from schemas.readings import MeterReading, MeterReadingEvent, reading_id
from tests.waiting import wait_until

WINDOWS = {"1m": 60, "15m": 900, "1h": 3600}
INTERVAL_S = 15
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Messages each test topic received from this process. The local broker (Tansu) reports the
# end offset of a partition as the base offset of its last record batch, so "caught up" is
# judged against what we produced, not against end offsets.
PRODUCED: dict[str, int] = defaultdict(int)


def hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def make_readings(
    facility_id: str, meters: int, start: datetime, count: int, seed: int = 1, lateness_s: float = 2.0
) -> list[MeterReading]:
    """``count`` readings per meter every 15 s from ``start``; power random, register increasing."""
    rng = random.Random(seed)
    out = []
    for m in range(1, meters + 1):
        meter_id = f"{facility_id}-m{m:02d}"
        register = rng.uniform(1000, 2000)
        for i in range(count):
            ts = start + timedelta(seconds=INTERVAL_S * i)
            kw = round(rng.uniform(5, 50), 3)
            register += kw * INTERVAL_S / 3600
            out.append(reading(meter_id, facility_id, ts, kw, register, i, ts + timedelta(seconds=lateness_s)))
    return out


def reading(
    meter_id: str, facility_id: str, ts: datetime, kw: float, register: float, seq: int, received_at: datetime
) -> MeterReading:
    return MeterReading(
        reading_id=reading_id(meter_id, ts),
        meter_id=meter_id,
        facility_id=facility_id,
        ts=ts,
        active_power_kw=kw,
        reactive_power_kvar=kw / 4,
        voltage_v=230.0,
        current_a=kw * 1000 / 230 / 3,
        energy_kwh=register,
        seq=seq,
        received_at=received_at,
    )


def event_bytes(r: MeterReading) -> bytes:
    ev = MeterReadingEvent.wrap(r, source="ingestion", occurred_at=r.ts, event_id=r.reading_id)
    return bytes(ev.to_bytes())


def facilities_covering(prefix: str, partitions: int, count: int) -> list[str]:
    """``count`` facility ids whose keys land on every one of ``partitions`` (producer's partitioner)."""
    from aiokafka.partitioner import DefaultPartitioner

    assert count >= partitions
    choose, every = DefaultPartitioner(), list(range(partitions))
    first: dict[int, str] = {}
    others: list[str] = []
    i = 0
    while len(first) < partitions or len(first) + len(others) < count:
        fid = f"{prefix}-{i}"
        part = choose(fid.encode(), every, every)
        if part in first:
            others.append(fid)
        else:
            first[part] = fid
        i += 1
    return [*first.values(), *others][:count]


async def produce(bootstrap: str, topic: str, items: Iterable[MeterReading | tuple[str, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1_048_576)
    await producer.start()
    n = 0
    try:
        futs = []
        for item in items:
            if isinstance(item, MeterReading):
                key, value = item.facility_id.encode(), event_bytes(item)
            else:
                key, value = item[0].encode(), item[1]
            futs.append(await producer.send(topic, value, key=key))
            n += 1
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    PRODUCED[topic] += n
    return n


@dataclass(frozen=True)
class Truth:
    energy_kwh: float
    energy_register_kwh: float
    avg_kw: float
    min_kw: float
    max_kw: float
    sample_count: int
    coverage: float
    anomaly_count: int = 0


def ground_truth(readings: Iterable[MeterReading]) -> dict[tuple[str, str | None, str, int], Truth]:
    """Rollups computed the obvious way, straight from the readings, by the rules of decision 0201.

    Dedup by meter + ts (the last one wins, like an overwrite). Readings with anomalies are only
    counted. A valid reading's power holds until the meter's next valid reading, at most 15 s,
    booked in its own window; the register increase from the previous valid reading (at most
    1 h before) in the later reading's window. Facility min/max: per 15 s slot, each meter's mean
    power in the slot, summed. Windows with anomalous readings only have no rollup.
    Key: (facility_id, meter_id or None for the facility, window, window start epoch seconds).
    """
    unique: dict[tuple[str, datetime], MeterReading] = {}
    for r in readings:
        unique[(r.meter_id, r.ts)] = r
    by_meter: dict[str, list[MeterReading]] = defaultdict(list)
    for r in unique.values():
        by_meter[r.meter_id].append(r)
    meter_rows: dict[tuple[str, str | None, str, int], Truth] = {}
    facility_parts: dict[tuple[str, str, int], list[tuple[Truth, list[MeterReading]]]] = defaultdict(list)
    for meter_id, rs in by_meter.items():
        rs.sort(key=lambda r: r.ts)
        valid = [r for r in rs if not r.anomalies]
        hold: dict[datetime, float] = {}
        prev_of: dict[datetime, MeterReading] = {}
        for i, r in enumerate(valid):
            gap = (valid[i + 1].ts - r.ts).total_seconds() if i + 1 < len(valid) else INTERVAL_S
            hold[r.ts] = min(gap, INTERVAL_S)
            if i:
                prev_of[r.ts] = valid[i - 1]
        for w, secs in WINDOWS.items():
            groups: dict[int, list[MeterReading]] = defaultdict(list)
            for r in rs:
                epoch = int(r.ts.timestamp())
                groups[epoch - epoch % secs].append(r)
            for start, grp in groups.items():
                good = [r for r in grp if not r.anomalies]
                if not good:
                    continue
                energy = sum(r.active_power_kw * hold[r.ts] for r in good) / 3600
                covered = sum(hold[r.ts] for r in good)
                reg = 0.0
                for r in good:
                    p = prev_of.get(r.ts)
                    if p is not None and (r.ts - p.ts).total_seconds() <= 3600:
                        reg += max(0.0, r.energy_kwh - p.energy_kwh)
                kws = [r.active_power_kw for r in good]
                t = Truth(
                    energy_kwh=energy,
                    energy_register_kwh=reg,
                    avg_kw=energy * 3600 / covered,
                    min_kw=min(kws),
                    max_kw=max(kws),
                    sample_count=len(good),
                    coverage=min(1.0, covered / secs),
                    anomaly_count=len(grp) - len(good),
                )
                fid = grp[0].facility_id
                meter_rows[(fid, meter_id, w, start)] = t
                facility_parts[(fid, w, start)].append((t, good))
    for (fid, w, start), parts in facility_parts.items():
        totals: dict[int, float] = defaultdict(float)
        for _, good in parts:
            slots: dict[int, list[float]] = defaultdict(list)
            for r in good:
                slots[(r.ts - EPOCH) // timedelta(seconds=INTERVAL_S)].append(r.active_power_kw)
            for slot, kws in slots.items():
                totals[slot] += sum(kws) / len(kws)
        meter_rows[(fid, None, w, start)] = Truth(
            energy_kwh=sum(t.energy_kwh for t, _ in parts),
            energy_register_kwh=sum(t.energy_register_kwh for t, _ in parts),
            avg_kw=sum(t.avg_kw for t, _ in parts),
            min_kw=min(totals.values()),
            max_kw=max(totals.values()),
            sample_count=sum(t.sample_count for t, _ in parts),
            coverage=sum(t.coverage for t, _ in parts) / len(parts),
            anomaly_count=sum(t.anomaly_count for t, _ in parts),
        )
    return meter_rows


async def stored_rollups(
    influx: InfluxClient, facility_ids: Iterable[str]
) -> dict[tuple[str, str | None, str, int], Truth]:
    out: dict[tuple[str, str | None, str, int], Truth] = {}
    for fid in facility_ids:
        for meas in ("meter_rollups", "facility_rollups"):
            q = f'SELECT * FROM "rollups_2y"."{meas}" WHERE facility_id = $f'
            for row in iter_rows(await influx.query(q, {"f": fid}, epoch="s")):
                out[
                    (fid, row.get("meter_id") if meas == "meter_rollups" else None, row["window"], int(row["time"]))
                ] = Truth(
                    float(row["energy_kwh"]),
                    float(row["energy_register_kwh"]),
                    float(row["avg_kw"]),
                    float(row["min_kw"]),
                    float(row["max_kw"]),
                    int(row["sample_count"]),
                    float(row["coverage"]),
                    int(row.get("anomaly_count") or 0),
                )
    return out


def assert_matches(stored: dict[Any, Truth], truth: dict[Any, Truth]) -> None:
    assert set(stored) == set(truth), (
        f"missing {sorted(set(truth) - set(stored), key=str)[:5]} extra {sorted(set(stored) - set(truth), key=str)[:5]}"
    )
    for key, t in truth.items():
        got = stored[key]
        assert (got.sample_count, got.anomaly_count) == (t.sample_count, t.anomaly_count), key
        for name in ("energy_kwh", "energy_register_kwh", "avg_kw", "min_kw", "max_kw", "coverage"):
            a, b = getattr(got, name), getattr(t, name)
            assert abs(a - b) <= 1e-9 * max(1.0, abs(b)), (key, name, a, b)


async def raw_count(influx: InfluxClient, facility_id: str) -> int:
    rows = list(
        iter_rows(
            await influx.query(
                'SELECT count(active_power_kw) FROM "raw_90d"."readings" WHERE facility_id = $f', {"f": facility_id}
            )
        )
    )
    return int(rows[0]["count"]) if rows else 0


async def committed_total(bootstrap: str, topic: str, group: str) -> tuple[int, int]:
    """(sum of committed offsets, sum of end offsets) of a group on a topic."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        while not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await c.end_offsets(tps)
        done = 0
        for tp in tps:
            done += await c.committed(tp) or 0
        return done, sum(ends.values())
    finally:
        await c.stop()


async def wait_caught_up(bootstrap: str, topic: str, group: str, timeout_s: float = 60) -> None:
    """Until the group committed every message this process produced to ``topic``."""
    end = PRODUCED[topic]
    assert end > 0, f"nothing produced to {topic}"
    await wait_until(
        lambda: committed_total(bootstrap, topic, group),
        accept=lambda done_and_end: done_and_end[0] >= end,
        timeout_s=timeout_s,
        what=f"group {group} committed all {end} produced to {topic} (committed, log end)",
        interval_s=0.3,
    )


async def dlq_records(bootstrap: str, topic: str, expect: int, timeout_s: float = 20) -> list[Any]:
    from schemas.dlq import DeadLetterEvent

    return await topic_events(bootstrap, topic, expect, DeadLetterEvent, timeout_s)


async def topic_events(bootstrap: str, topic: str, expect: int, model: Any, timeout_s: float = 20) -> list[Any]:
    """The events on ``topic`` (from the start) once ``expect`` arrived or ``timeout_s`` passed."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await c.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=500)
            for recs in got.values():
                out.extend(model.model_validate_json(r.value) for r in recs)
    finally:
        await c.stop()
    return out


def settings_for(base: Settings, db: str, topic: str, dlq: str, group: str, **agg: Any) -> Settings:
    return base.model_copy(
        update={
            "influx": base.influx.model_copy(update={"database": db}),
            "aggregation": base.aggregation.model_copy(
                update={
                    "readings_topic": topic,
                    "dlq_topic": dlq,
                    "late_windows_topic": f"{topic}-late",
                    "consumer_group": group,
                    "archive_group": f"{group}-archive",
                    "batch_max_wait_s": 0.2,
                    **agg,
                }
            ),
        }
    )


def worker_env(settings: Settings, port: int) -> dict[str, str]:
    a = settings.aggregation
    env = dict(os.environ)
    env.update(
        {
            "ENERGY_INFLUX__URL": settings.influx.url,
            "ENERGY_INFLUX__DATABASE": settings.influx.database,
            "ENERGY_AGGREGATION__READINGS_TOPIC": a.readings_topic,
            "ENERGY_AGGREGATION__DLQ_TOPIC": a.dlq_topic,
            "ENERGY_AGGREGATION__LATE_WINDOWS_TOPIC": a.late_windows_topic,
            "ENERGY_AGGREGATION__CONSUMER_GROUP": a.consumer_group,
            "ENERGY_AGGREGATION__ARCHIVE_GROUP": a.archive_group,
            "ENERGY_AGGREGATION__ARCHIVE_URI": a.archive_uri,
            "ENERGY_AGGREGATION__ARCHIVE_ENABLED": "true" if a.archive_enabled else "false",
            "ENERGY_AGGREGATION__BATCH_MAX_WAIT_S": str(a.batch_max_wait_s),
            "ENERGY_AGGREGATION__BATCH_MAX_READINGS": str(a.batch_max_readings),
            "ENERGY_AGGREGATION__INFLUX_BREAKER_RESET_S": str(a.influx_breaker_reset_s),
            "ENERGY_AGGREGATION__FAULT_KILL_AFTER_WRITES": str(a.fault_kill_after_writes),
            "ENERGY_AGGREGATION__FAUST_STREAM_BUFFER": str(a.faust_stream_buffer),
            "ENERGY_ENDPOINTS__AGGREGATION_PORT": str(port),
            "ENERGY_LOG__LEVEL": os.environ.get("ENERGY_LOG__LEVEL", "INFO"),
        }
    )
    return env


def start_worker(settings: Settings, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("energy")
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [str(exe), "aggregation", "run"], env=worker_env(settings, port), stdout=log, stderr=subprocess.STDOUT
    )


def new_names(uid: str) -> dict[str, str]:
    return {
        "topic": f"agg-readings-{uid}",
        "dlq": f"agg-dlq-{uid}",
        "group": f"agg-{uid}",
        "facility": f"fac-{uid}",
    }


def now_utc() -> datetime:
    return datetime.now(UTC)
