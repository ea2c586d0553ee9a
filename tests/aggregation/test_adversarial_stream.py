"""Adversarial stream (issue 11): hypothesis draws hostile mixes, a real worker process eats them.

One ``energy aggregation run`` subprocess (Faust engine, real Tansu broker and InfluxDB) serves
every example. Each example gets a facility of its own and sends, shuffled: valid readings of two
15 s meters and one 5 s meter, late by up to 7 days, some flagged as anomalies (10^9 kW spikes,
negative power), duplicates, a share encoded as ``meter.reading`` 1.1 (extra fields), malformed
bytes, far-future and far-past timestamps and a 2.0 event. Then:
- the stored rollups equal a ground truth computed in the test from the valid readings
  (``helpers.ground_truth``, written from decision 0201, not from the code under test);
- the DLQ holds exactly the rejects of the example, each with its raw bytes and reason;
- the worker process is still running.
Bounded: a few examples, no shrinking (each example costs a few seconds of real I/O).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from energy.adapters.influx import InfluxClient
from energy.settings import Settings
from energy.stack.process import free_port
from schemas.readings import Anomaly, MeterReading
from tests.aggregation.conftest import create_influx_db, influx_admin, make_topics
from tests.aggregation.helpers import (
    assert_matches,
    dlq_records,
    event_bytes,
    ground_truth,
    new_names,
    now_utc,
    produce,
    reading,
    settings_for,
    start_worker,
    stored_rollups,
    wait_caught_up,
)
from tests.aggregation.test_chaos import stop_proc, wait_ready

pytestmark = [pytest.mark.slow]

MALFORMED_REASONS = {"undecodable", "schema_mismatch"}


@dataclass
class Worker:
    settings: Settings
    names: dict[str, str]
    proc: Any
    dlq_expected: int = 0
    examples: int = 0
    seen_facilities: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def worker(settings: Settings, stack: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    uid = uuid.uuid4().hex[:10]
    names = new_names(uid)
    db = f"aggtest_adv_{uid}"
    create_influx_db(settings.influx.url, db)
    asyncio.run(make_topics(settings, names["topic"], names["dlq"], partitions=2))
    s = settings_for(settings, db, names["topic"], names["dlq"], names["group"], archive_enabled=False)
    port = free_port()
    proc = start_worker(s, port, tmp_path_factory.mktemp("adversarial") / "worker.log")
    try:
        asyncio.run(wait_ready(port, timeout_s=60))
        yield Worker(s, names, proc)
    finally:
        stop_proc(proc)
        influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')


def newer_minor(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["schema_minor"] = 1
    doc["payload"]["power_factor"] = 0.93
    doc["payload"]["phase"] = {"l1": 1.0}
    return json.dumps(doc).encode()


def other_major(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["schema_version"] = 2
    return json.dumps(doc).encode()


@dataclass
class Scenario:
    facility: str
    items: list[tuple[str, bytes]]  # (kafka key, value), in send order
    valid: list[MeterReading]  # what the rollups must be made of (duplicates included)
    rejects: Counter[str]  # expected DLQ reasons
    malformed: set[bytes]


def build(facility: str, now: datetime, late_min: int, sizes: tuple[int, int, int], rnd: random.Random) -> Scenario:
    base = (now - timedelta(minutes=late_min)).replace(second=0, microsecond=0)
    valid: list[MeterReading] = []
    for m, (interval, count) in enumerate(zip((15, 15, 5), sizes, strict=True)):
        meter_id = f"{facility}-m{m}"
        register = rnd.uniform(100, 200)
        for i in range(count):
            ts = base + timedelta(seconds=interval * i + (3 if m == 1 else 0))
            kw = round(rnd.uniform(0, 60), 3)
            register += kw * interval / 3600
            r = reading(meter_id, facility, ts, kw, register, i, now)
            if rnd.random() < 0.12:  # a spike or a negative sub-meter, flagged by ingestion
                spike = rnd.choice([(1e9, Anomaly.POWER_ABOVE_RATING), (-500.0, Anomaly.NEGATIVE_POWER)])
                r = r.model_copy(update={"active_power_kw": spike[0], "anomalies": (spike[1],)})
            valid.append(r)
    items: list[tuple[str, bytes]] = []
    for r in valid + rnd.sample(valid, k=len(valid) // 5):  # duplicates
        raw = event_bytes(r)
        items.append((facility, newer_minor(raw) if rnd.random() < 0.3 else raw))
    rejects: Counter[str] = Counter()
    out_of_range = [
        (now + timedelta(days=1), "timestamp_in_future"),
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "timestamp_in_future"),
        (now - timedelta(days=100), "too_late"),
        (datetime(1971, 1, 1, tzinfo=UTC), "too_late"),
    ]
    for ts, reason in rnd.sample(out_of_range, k=rnd.randint(1, len(out_of_range))):
        items.append((facility, event_bytes(reading(f"{facility}-m0", facility, ts, 5.0, 1.0, 999, now))))
        rejects[reason] += 1
    items.append((facility, other_major(event_bytes(valid[0]))))
    rejects["incompatible_version"] += 1
    malformed = {rnd.randbytes(rnd.randint(0, 60)), event_bytes(valid[-1])[:-7], b'{"event_type": "meter.reading"}'}
    for raw in malformed:
        items.append((facility, raw))
    rejects["malformed"] += len(malformed)
    rnd.shuffle(items)  # reordered: late, early, duplicates, poison all mixed
    return Scenario(facility, items, valid, rejects, malformed)


@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    late_min=st.integers(10, 7 * 24 * 60),
    sizes=st.tuples(st.integers(4, 40), st.integers(4, 40), st.integers(6, 90)),
    seed=st.integers(0, 2**32),
)
def test_hostile_stream_rollups_equal_ground_truth_dlq_holds_exactly_the_rejects_worker_never_stops(
    worker: Worker, late_min: int, sizes: tuple[int, int, int], seed: int
) -> None:
    rnd = random.Random(seed)  # the mix's proportions stay realistic however hypothesis draws
    worker.examples += 1
    facility = f"{worker.names['facility']}-{worker.examples}"
    sc = build(facility, now_utc(), late_min, sizes, rnd)
    s, names = worker.settings, worker.names
    bootstrap = s.kafka.bootstrap_servers
    worker.dlq_expected += sum(sc.rejects.values())

    async def run() -> tuple[dict[Any, Any], list[Any]]:
        await produce(bootstrap, names["topic"], sc.items)
        await wait_caught_up(bootstrap, names["topic"], names["group"], timeout_s=90)
        client = InfluxClient(s.influx, breaker_name="influxdb-aggtests-adversarial")
        try:
            stored = await stored_rollups(client, [facility])
        finally:
            await client.close()
        # Dead letters are acknowledged before the batch's offsets are committed: all are there.
        dead = await dlq_records(bootstrap, names["dlq"], worker.dlq_expected, timeout_s=15)
        return stored, [d for d in dead if d.payload.key == facility]

    stored, dead = asyncio.run(run())
    assert worker.proc.poll() is None, "the worker process stopped"
    assert_matches(stored, ground_truth(sc.valid))
    assert stored, "nothing was rolled up"
    got: Counter[str] = Counter()
    for d in dead:
        assert d.payload.stage == "aggregation"
        raw = base64.b64decode(d.payload.raw_b64)
        if d.payload.reason in MALFORMED_REASONS:
            assert raw in sc.malformed, raw[:80]
            got["malformed"] += 1
        else:
            assert json.loads(raw)["payload"]["facility_id"] == facility
            got[d.payload.reason] += 1
    assert got == sc.rejects
