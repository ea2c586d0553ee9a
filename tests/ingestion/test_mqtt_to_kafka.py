"""MQTT -> validation -> Kafka, against the real Mosquitto and the real broker (ING-1, ING-2)."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import timedelta

import aiomqtt

from energy.fleet import build_fleet
from energy.observability.tracing import parse_traceparent
from schemas.readings import reading_id
from tests.ingestion.conftest import RECENT_DAY, ingest_settings, read_topic, run_sim

FLEET = {m.meter_id: m.facility_id for f in build_fleet() for m in f.meters}


async def test_valid_readings_arrive_keyed_by_facility_with_deterministic_ids_and_traceparent(
    settings, uid, start_service
):
    s = ingest_settings(settings, uid)
    service = await start_service(s)
    summary = await run_sim(s, "--count", "3", "--rate", "2000", "--facilities", "2", "--seed", "1")
    assert summary["readings"] == 60 and summary["messages"] == 60

    records = await read_topic(s, s.ingestion.readings_topic, expect=60)

    assert len(records) == 60
    seen = {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records}
    assert seen == {(m, q) for m, f in FLEET.items() if f in ("fac-001", "fac-002") for q in range(3)}
    for r in records:
        payload = r.value["payload"]
        assert r.key == payload["facility_id"].encode() == FLEET[payload["meter_id"]].encode()
        assert r.value["event_type"] == "meter.reading"
        from datetime import datetime

        expected_id = reading_id(payload["meter_id"], datetime.fromisoformat(payload["ts"]))
        assert r.value["event_id"] == payload["reading_id"] == str(expected_id)
        assert parse_traceparent(r.headers["traceparent"]) is not None
        assert r.headers["event_type"] == b"meter.reading"
        assert payload["anomalies"] == []
    assert service.publisher.stats.published["reading"] == 60
    assert service.buffer.used == 0


async def test_each_fault_kind_lands_in_the_dlq_with_its_reason_and_nothing_valid_is_lost(settings, uid, start_service):
    s = ingest_settings(settings, uid, dedup_enabled=False)
    await start_service(s)
    summary = await run_sim(
        s, "--count", "10", "--rate", "3000", "--facilities", "2", "--faults", "0.25", "--seed", "11"
    )
    faults = summary["faults"]
    assert all(faults[k] > 0 for k in ("malformed_json", "wrong_type", "out_of_range", "duplicate", "late")), faults
    rejected = {tuple(x) for x in summary["rejected"]}
    anomalous = {tuple(x) for x in summary["anomalous"]}
    valid_messages = summary["readings"] - len(rejected) + faults["duplicate"]

    readings = await read_topic(s, s.ingestion.readings_topic, expect=valid_messages)
    dlq = await read_topic(s, s.ingestion.dlq_topic, expect=len(rejected) + len(anomalous))

    # Every reading not sent as a broken payload arrived; the broken ones did not.
    got = Counter((r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in readings)
    expected = {(m, q) for m, f in FLEET.items() if f in ("fac-001", "fac-002") for q in range(10)} - rejected
    assert set(got) == expected
    # Duplicates (same meter + ts) carry the same event id: one id per (meter, seq).
    ids_per_reading = {}
    for r in readings:
        key = (r.value["payload"]["meter_id"], r.value["payload"]["seq"])
        ids_per_reading.setdefault(key, set()).add(r.value["event_id"])
    assert all(len(ids) == 1 for ids in ids_per_reading.values())
    assert sum(n - 1 for n in got.values()) == faults["duplicate"]
    # Out-of-range readings are kept, flagged, and copied to the DLQ with an anomaly reason.
    flagged = {k for k, _ in got.items() if k in anomalous}
    assert flagged == anomalous
    for r in readings:
        key = (r.value["payload"]["meter_id"], r.value["payload"]["seq"])
        assert bool(r.value["payload"]["anomalies"]) == (key in anomalous)

    reasons = Counter(d.value["payload"]["reason"] for d in dlq)
    assert reasons["invalid_json"] == faults["malformed_json"]
    assert reasons["schema_mismatch"] == faults["wrong_type"]
    assert sum(n for k, n in reasons.items() if k.startswith("anomaly_")) == faults["out_of_range"]
    for d in dlq:
        letter = d.value["payload"]
        assert letter["source"].startswith(f"mqtt:{s.mqtt.topic_prefix}/")
        raw = base64.b64decode(letter["raw_b64"])
        if letter["reason"] == "schema_mismatch":
            assert json.loads(raw)["meter_id"] in FLEET  # the raw bytes are the original payload


async def test_exact_repeats_are_dropped_early_within_the_dedup_window(settings, uid, start_service):
    s = ingest_settings(settings, uid, dedup_enabled=True)
    service = await start_service(s)
    payload = json.dumps(
        {
            "meter_id": "fac-003-m01",
            "ts": (RECENT_DAY + timedelta(hours=10)).isoformat(),
            "active_power_kw": 50.0,
            "reactive_power_kvar": 20.0,
            "voltage_v": 231.0,
            "current_a": 230.0,
            "energy_kwh": 1234.5,
            "seq": 7,
        }
    ).encode()
    topic = f"{s.mqtt.topic_prefix}/fac-003/fac-003-m01"
    async with aiomqtt.Client(s.mqtt.host, s.mqtt.port) as client:
        await client.publish(topic, payload, qos=1)
        records = await read_topic(s, s.ingestion.readings_topic, expect=1, idle_s=0.5)
        await client.publish(topic, payload, qos=1)  # an MQTT redelivery after Kafka had it
        changed = payload.replace(b"50.0", b"51.0")  # same meter+ts, corrected value: not an exact repeat
        await client.publish(topic, changed, qos=1)
    records = await read_topic(s, s.ingestion.readings_topic, expect=2, idle_s=1.0)
    assert [r.value["payload"]["active_power_kw"] for r in records] == [50.0, 51.0]
    assert records[0].value["event_id"] == records[1].value["event_id"]
    assert len(service.dedup) >= 2


async def test_random_bytes_over_mqtt_all_land_in_the_dlq_and_the_service_keeps_going(settings, uid, start_service):
    import random

    s = ingest_settings(settings, uid)
    service = await start_service(s)
    rng = random.Random(42)
    payloads = [rng.randbytes(rng.randint(0, 200)) for _ in range(1000)]
    topics = [f"{s.mqtt.topic_prefix}/fac-001/fac-001-m01", f"{s.mqtt.topic_prefix}/fac-001/gateway"]
    async with aiomqtt.Client(s.mqtt.host, s.mqtt.port, max_inflight_messages=500) as client:
        for i, p in enumerate(payloads):
            await client.publish(topics[i % 2], p, qos=1)
        valid = {
            "meter_id": "fac-001-m01",
            "ts": (RECENT_DAY + timedelta(hours=10)).isoformat(),
            "active_power_kw": 50.0,
            "reactive_power_kvar": 20.0,
            "voltage_v": 231.0,
            "current_a": 230.0,
            "energy_kwh": 1234.5,
            "seq": 1,
        }
        await client.publish(topics[0], json.dumps(valid).encode(), qos=1)
    dlq = await read_topic(s, s.ingestion.dlq_topic, expect=1000, timeout_s=60)
    readings = await read_topic(s, s.ingestion.readings_topic, expect=1, idle_s=0.5)
    assert len(dlq) == 1000
    raws = Counter(base64.b64decode(d.value["payload"]["raw_b64"]) for d in dlq)
    assert raws == Counter(payloads)
    assert {d.value["payload"]["reason"] for d in dlq} <= {"invalid_json", "schema_mismatch"}
    assert [r.value["payload"]["seq"] for r in readings] == [1]
    assert service.mqtt.messages == 1001
