"""Pure validation (no I/O): reasons, anomalies, partial batches, and 10,000 random payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.config import IngestionSettings
from ingestion.domain import DedupWindow, MeterInfo, Reason, RegisterTracker, Validator, dedup_key, parse_topic
from schemas.readings import Anomaly

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
METERS = {
    "fac-001-m01": MeterInfo("fac-001-m01", "fac-001", "hvac", 100.0, 230.0),
    "fac-001-m09": MeterInfo("fac-001-m09", "fac-001", "plug", 40.0, 230.0),
    "fac-002-main": MeterInfo("fac-002-main", "fac-002", "main", 500.0, 400.0),
}


def validator() -> Validator:
    ing = IngestionSettings()
    return Validator(
        lookup=METERS.get,
        limits=ing.limits,
        registers=RegisterTracker(),
        future_tolerance=timedelta(seconds=ing.future_tolerance_s),
        max_message_bytes=ing.max_message_bytes,
        max_age=timedelta(days=90),
    )


def doc(meter_id="fac-001-m01", minutes=0, **override):
    d = {
        "meter_id": meter_id,
        "ts": (NOW - timedelta(minutes=60 - minutes)).isoformat(),
        "active_power_kw": 50.0,
        "reactive_power_kvar": 20.0,
        "voltage_v": 231.0,
        "current_a": 230.0,
        "energy_kwh": 1000.0 + minutes,
        "seq": minutes,
    }
    d.update(override)
    return d


def single(v: Validator, d: dict, topic: str = "meters/fac-001/fac-001-m01"):
    return v.mqtt_message(topic, json.dumps(d).encode(), "meters", NOW)


def test_valid_reading_is_enriched_with_its_registry_facility_and_a_deterministic_id():
    out = single(validator(), doc())
    assert not out.rejected
    (r,) = out.accepted
    assert (r.facility_id, r.anomalies, r.received_at) == ("fac-001", (), NOW)
    again = single(validator(), doc())
    assert again.accepted[0].reading_id == r.reading_id


def test_rejections_carry_machine_readable_reasons():
    v = validator()
    assert single(v, doc()).accepted
    cases = {
        Reason.INVALID_JSON: v.mqtt_message("meters/fac-001/fac-001-m01", b'{"meter_id": "fac', "meters", NOW),
        Reason.SCHEMA_MISMATCH: single(v, doc(active_power_kw="50")),
        Reason.UNKNOWN_METER: single(v, doc("fac-009-m01"), "meters/fac-009/fac-009-m01"),
        Reason.METER_MISMATCH: single(v, doc("fac-001-m09"), "meters/fac-001/fac-001-m01"),
        Reason.FACILITY_MISMATCH: single(v, doc(), "meters/fac-002/fac-001-m01"),
        Reason.BAD_TOPIC: single(v, doc(), "meters/fac-001"),
    }
    for reason, out in cases.items():
        assert not out.accepted, reason
        assert [r.reason for r in out.rejected] == [reason]
        assert out.rejected[0].raw and out.rejected[0].detail
    claimed = single(v, doc(facility_id="fac-002"))
    assert [r.reason for r in claimed.rejected] == [Reason.FACILITY_MISMATCH]


def test_out_of_range_values_are_kept_and_flagged_not_dropped():
    v = validator()
    cases = {
        Anomaly.NEGATIVE_POWER: doc(active_power_kw=-5.0),
        Anomaly.POWER_ABOVE_RATING: doc(active_power_kw=400.0),
        Anomaly.VOLTAGE_OUT_OF_RANGE: doc(voltage_v=480.0),
        Anomaly.CURRENT_OUT_OF_RANGE: doc(current_a=5000.0),
    }
    for i, (anomaly, d) in enumerate(cases.items()):
        d["meter_id"] = "fac-001-m01"
        d["seq"] = 100 + i
        out = single(v, d)
        assert not out.rejected
        assert anomaly in out.accepted[0].anomalies, anomaly


def test_timestamps_beyond_the_clock_skew_or_the_raw_retention_are_rejected_with_the_reason():
    v = validator()
    assert IngestionSettings().future_tolerance_s == 300.0  # the 5 minutes of the issue
    cases = [
        (NOW + timedelta(seconds=299), None),
        (NOW + timedelta(seconds=301), Reason.TIMESTAMP_IN_FUTURE),
        (datetime(9999, 12, 31, tzinfo=UTC), Reason.TIMESTAMP_IN_FUTURE),
        (NOW - timedelta(days=89, hours=23), None),
        (NOW - timedelta(days=90, seconds=1), Reason.TIMESTAMP_TOO_OLD),
        (datetime(1, 1, 1, tzinfo=UTC), Reason.TIMESTAMP_TOO_OLD),
    ]
    for i, (ts, reason) in enumerate(cases):
        out = single(v, doc(ts=ts.isoformat(), seq=200 + i))
        if reason is None:
            assert [r.ts for r in out.accepted] == [ts] and not out.rejected
        else:
            assert not out.accepted
            assert [(r.reason, r.meter_id) for r in out.rejected] == [(reason, "fac-001-m01")]
            assert ts.isoformat() in out.rejected[0].detail
            assert b'"ts"' in out.rejected[0].raw


def test_a_rejected_future_reading_does_not_poison_the_register_check():
    v = validator()
    far = single(v, doc(ts=(NOW + timedelta(days=365)).isoformat(), energy_kwh=10_000.0, seq=1))
    assert [r.reason for r in far.rejected] == [Reason.TIMESTAMP_IN_FUTURE]
    fine = single(v, doc(energy_kwh=1000.0, seq=2))
    assert fine.accepted and Anomaly.ENERGY_REGISTER_DECREASED not in fine.accepted[0].anomalies


def test_negative_power_is_normal_for_a_main_meter_that_may_export():
    d = doc("fac-002-main", active_power_kw=-30.0, voltage_v=400.0, current_a=80.0)
    out = single(validator(), d, "meters/fac-002/fac-002-main")
    assert out.accepted[0].anomalies == ()


def test_energy_register_going_backwards_is_flagged():
    v = validator()
    assert single(v, doc(minutes=1, energy_kwh=1000.0)).accepted[0].anomalies == ()
    out = single(v, doc(minutes=2, energy_kwh=900.0))
    assert out.accepted[0].anomalies == (Anomaly.ENERGY_REGISTER_DECREASED,)


def test_a_gateway_batch_with_some_bad_readings_keeps_the_good_ones():
    v = validator()
    batch = {
        "gateway_id": "gw-1",
        "readings": [doc(minutes=1), doc(minutes=2, voltage_v="x"), doc("fac-001-m09", minutes=1), "junk"],
    }
    out = v.mqtt_message("meters/fac-001/gateway", json.dumps(batch).encode(), "meters", NOW)
    assert sorted(r.meter_id for r in out.accepted) == ["fac-001-m01", "fac-001-m09"]
    assert [r.reason for r in out.rejected] == [Reason.SCHEMA_MISMATCH, Reason.SCHEMA_MISMATCH]
    assert json.loads(out.rejected[0].raw)["voltage_v"] == "x"
    wrong_facility = v.mqtt_message("meters/fac-002/gateway", json.dumps(batch).encode(), "meters", NOW)
    assert {r.reason for r in wrong_facility.rejected} >= {Reason.FACILITY_MISMATCH}


def test_topic_parsing():
    assert parse_topic("meters/fac-1/m-1", "meters").meter_id == "m-1"
    assert parse_topic("meters/fac-1/gateway", "meters").meter_id is None
    assert parse_topic("other/fac-1/m-1", "meters") is None
    assert parse_topic("meters/fac-1/m-1/x", "meters") is None


def test_dedup_window_is_bounded_and_forgets_the_oldest():
    w = DedupWindow(3)
    v = validator()
    readings = [single(v, doc(minutes=i)).accepted[0] for i in range(5)]
    for r in readings:
        w.add(dedup_key(r))
    assert len(w) == 3
    assert not w.seen(dedup_key(readings[0])) and w.seen(dedup_key(readings[4]))


VALIDATOR = validator()
topics = st.sampled_from(
    ["meters/fac-001/fac-001-m01", "meters/fac-001/gateway", "meters/x", "meters/fac-002/fac-002-main", "a/b/c"]
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(topic=topics, payload=st.binary(max_size=300))
def test_ten_thousand_random_byte_strings_never_crash_validation(topic, payload):
    out = VALIDATOR.mqtt_message(topic, payload, "meters", NOW)
    assert out.accepted or out.rejected  # every message is accounted for: accepted or rejected with a reason
    for r in out.rejected:
        assert isinstance(r.reason, Reason) and r.raw is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    readings=st.lists(
        st.fixed_dictionaries({}, optional={k: json_values for k in doc()}) | json_values, min_size=1, max_size=5
    )
)
def test_random_json_batches_never_crash_and_every_reading_is_accounted_for(readings):
    body = json.dumps({"gateway_id": "gw-1", "readings": readings}).encode()
    out = VALIDATOR.mqtt_message("meters/fac-001/gateway", body, "meters", NOW)
    assert len(out.accepted) + len(out.rejected) in (len(readings), 1)


def test_published_reading_events_pass_the_strict_event_schema():
    from ingestion.pipeline import build_records
    from schemas.readings import MeterReadingEvent

    v = validator()
    out = single(v, doc(minutes=5, active_power_kw=-1.0))
    records, dropped = build_records(
        out, readings_topic="r", dlq_topic="d", source="mqtt:x", path="mqtt", now=NOW, dedup=None
    )
    assert dropped == 0
    reading_records = [r for r in records if r.kind == "reading"]
    assert len(reading_records) == 1 and len(records) == 2  # plus the anomaly copy in the DLQ
    event = MeterReadingEvent.model_validate_json(reading_records[0].value)
    assert event.event_id == event.payload.reading_id == out.accepted[0].reading_id
    assert event.payload.anomalies == (Anomaly.NEGATIVE_POWER,)
    assert event.occurred_at == event.payload.ts and event.produced_at == NOW
    from schemas.registry import decode_event

    letter = decode_event(next(r for r in records if r.kind == "dlq").value)
    assert (letter.event_type, letter.payload.stage, letter.payload.reason) == (
        "dead_letter",
        "ingestion.anomaly",
        "anomaly_negative_power",
    )
