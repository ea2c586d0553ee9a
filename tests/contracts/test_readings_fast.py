"""The msgspec mirror of ``meter.reading`` (schemas/readings_fast.py, decision 0910) accepts only
what the pydantic model accepts, with the same values; what it refuses the registry judges."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aggregation.decode import Rejected, decode_reading, decode_reading_fast
from schemas.readings import MeterReading, MeterReadingEvent
from schemas.readings_fast import FastMeterReading, FastMeterReadingEvent, decode_meter_reading

BASE: dict[str, Any] = {
    "event_id": "0b6c0f1e-3f0e-5d7a-9a44-0c1b2d3e4f50",
    "event_type": "meter.reading",
    "schema_version": 1,
    "occurred_at": "2026-12-03T10:00:00Z",
    "produced_at": "2026-12-03T10:00:01.250000+00:00",
    "source": "ingestion",
    "correlation_id": None,
    "payload": {
        "reading_id": "0b6c0f1e-3f0e-5d7a-9a44-0c1b2d3e4f50",
        "meter_id": "m-1",
        "facility_id": "fac.A:1",
        "ts": "2026-12-03T11:00:00+01:00",
        "active_power_kw": 12.5,
        "reactive_power_kvar": 3.0,
        "voltage_v": 230.0,
        "current_a": 54.3,
        "energy_kwh": 1000.25,
        "seq": 7,
        "anomalies": ["negative_power"],
        "received_at": "2026-12-03T10:00:00.500000Z",
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    event = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    target = event
    for p in parents:
        target = target[p]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return event


_DROP = object()


def _pydantic(raw: bytes) -> MeterReadingEvent | None:
    try:
        return MeterReadingEvent.model_validate_json(raw)
    except ValidationError:
        return None


def _same_values(fast: FastMeterReadingEvent | MeterReadingEvent, slow: MeterReadingEvent) -> None:
    p, q = fast.payload, slow.payload
    for name in MeterReading.model_fields:
        assert getattr(p, name) == getattr(q, name), name
    for name in ("event_id", "event_type", "schema_version", "occurred_at", "produced_at", "source", "correlation_id"):
        assert getattr(fast, name) == getattr(slow, name), name


def test_the_mirror_has_the_pydantic_models_fields_and_required_fields() -> None:
    assert set(FastMeterReading.__struct_fields__) == set(MeterReading.model_fields)
    assert set(FastMeterReadingEvent.__struct_fields__) == set(MeterReadingEvent.model_fields)
    required = {n for n, f in MeterReading.model_fields.items() if f.is_required()}
    fast_required = set(FastMeterReading.__struct_fields__[: len(FastMeterReading.__struct_fields__) - 1])
    assert fast_required == required  # only anomalies has a default, in both
    event_required = {n for n, f in MeterReadingEvent.model_fields.items() if f.is_required()}
    assert set(FastMeterReadingEvent.__struct_fields__) - {"correlation_id", "event_type", "schema_version"} == (
        event_required - {"event_type", "schema_version"}
    )


def test_a_valid_event_decodes_to_the_same_values_as_pydantic() -> None:
    raw = json.dumps(BASE).encode()
    fast, slow = decode_meter_reading(raw), _pydantic(raw)
    assert fast is not None and slow is not None
    _same_values(fast, slow)
    assert fast.payload.ts == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)  # the offset is kept as an instant
    assert fast.payload.reading_id == uuid.UUID("0b6c0f1e-3f0e-5d7a-9a44-0c1b2d3e4f50")


# (mutation, accepted?) — each verdict by hand from schemas/readings.py and schemas/envelope.py
CASES = [
    (("payload.extra_field", 1), True),  # a newer minor adds a field: ignored
    (("extra_top", {"a": 1}), True),
    (("payload.anomalies", _DROP), True),  # optional
    (("correlation_id", _DROP), True),
    (("payload.active_power_kw", 12), True),  # a JSON integer for a float field (pydantic strict too)
    (("payload.meter_id", "m-1\n"), False),  # Python's $ matches before a newline; pydantic refuses
    (("payload.meter_id", "-m"), False),
    (("payload.meter_id", "m" * 65), False),
    (("payload.meter_id", "m" * 64), True),
    (("payload.facility_id", "fac 1"), False),
    (("source", "Ingestion"), False),  # a valid id but not a valid source
    (("payload.ts", "2026-12-03T10:00:00"), False),  # naive
    (("received_at", "not a time"), True),  # unknown top-level field: ignored
    (("payload.received_at", "2026-12-03T10:00:00"), False),
    (("payload.seq", -1), False),
    (("payload.seq", 1.0), False),
    (("payload.seq", True), False),
    (("payload.active_power_kw", True), False),
    (("payload.active_power_kw", "1.0"), False),
    (("payload.energy_kwh", None), False),
    (("payload.anomalies", ["not_an_anomaly"]), False),
    (("payload.reading_id", "nope"), False),
    (("schema_version", 2), False),  # another major: the registry says incompatible_version
    (("event_type", "meter.other"), False),
    (("correlation_id", "c" * 129), False),
    (("payload", _DROP), False),
    # Time and UUID forms: the same verdict and value, whichever decoder reads them
    (("payload.ts", "2026-12-03t10:00:00z"), True),
    (("payload.ts", "2026-12-03T10:00:00+0100"), True),
    (("payload.ts", "2026-12-03T10:00:00.1234567Z"), True),  # pydantic truncates; the fast path defers
    (("payload.ts", "2026-12-03T10:00:00.123456789+01:00"), True),
    (("payload.ts", "2026-12-03T10:00Z"), True),  # msgspec does not read it; pydantic does
    (("payload.ts", "2026-12-03T24:00:00Z"), False),
    (("payload.ts", 1733220000), False),
    (("payload.reading_id", "{0b6c0f1e-3f0e-5d7a-9a44-0c1b2d3e4f50}"), True),
    (("payload.reading_id", "0b6c0f1e3f0e5d7a9a440c1b2d3e4f50"), True),
]


@pytest.mark.parametrize(("mutation", "accepted"), CASES, ids=[f"{m[0]}={m[1]!r}"[:60] for m, _ in CASES])
def test_mutations_get_the_verdict_pydantic_gives(mutation: tuple[str, Any], accepted: bool) -> None:
    raw = json.dumps(_with(*mutation)).encode()
    fast, slow = decode_reading_fast(raw), _pydantic(raw)
    assert (slow is not None) == accepted, "the hand verdict disagrees with the pydantic model"
    assert (not isinstance(fast, Rejected)) == accepted
    if slow is not None and not isinstance(fast, Rejected):
        _same_values(fast, slow)  # type: ignore[arg-type]


def test_infinite_numbers_are_refused_like_pydantic() -> None:
    raw = json.dumps(BASE).encode().replace(b"12.5", b"1e999")
    assert _pydantic(raw) is None
    assert decode_meter_reading(raw) is None


def test_sub_microsecond_times_are_left_to_pydantic_and_other_numbers_are_not() -> None:
    raw = json.dumps(_with("payload.ts", "2026-12-03T10:00:00.1234567Z")).encode()
    assert decode_meter_reading(raw) is None
    got = decode_reading_fast(raw)
    assert not isinstance(got, Rejected)
    assert got.payload.ts == datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)  # truncated, as pydantic does
    many_digits = json.dumps(_with("payload.current_a", 2.0999999999999996)).encode()
    assert decode_meter_reading(many_digits) is not None


def test_what_the_fast_path_refuses_gets_the_registrys_reason() -> None:
    major = json.dumps(_with("schema_version", 2)).encode()
    got = decode_reading_fast(major)
    assert isinstance(got, Rejected) and got.reason == "incompatible_version"
    got = decode_reading_fast(json.dumps(_with("payload.meter_id", "m-1\n")).encode())
    assert isinstance(got, Rejected) and got.reason == "schema_mismatch"
    got = decode_reading_fast(b"{not json")
    assert isinstance(got, Rejected) and got.reason == "undecodable"
    got = decode_reading_fast(b"")
    assert isinstance(got, Rejected) and got.reason == "undecodable"
    assert decode_reading_fast(json.dumps(BASE).encode()) == decode_meter_reading(json.dumps(BASE).encode())
    assert not isinstance(decode_reading(json.dumps(BASE).encode()), Rejected)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_paths = st.sampled_from(
    [f"payload.{n}" for n in MeterReading.model_fields] + [n for n in MeterReadingEvent.model_fields if n != "payload"]
)
_id_like = st.text(alphabet="aZ09_.:- \n\t/é", min_size=0, max_size=70)


@settings(max_examples=400, deadline=None)
@given(
    mutations=st.lists(st.tuples(_paths, _json_values | _id_like | st.just(_DROP)), min_size=1, max_size=3),
)
def test_the_fast_path_never_accepts_what_pydantic_refuses(mutations: list[tuple[str, Any]]) -> None:
    event: dict[str, Any] = json.loads(json.dumps(BASE))
    for path, value in mutations:
        event = _with_in(event, path, value)
    raw = json.dumps(event).encode()
    fast = decode_meter_reading(raw)
    if fast is not None:
        slow = _pydantic(raw)
        assert slow is not None, f"fast path accepted what pydantic refuses: {raw!r}"
        _same_values(fast, slow)


def _with_in(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = event
    for p in parents:
        target = target[p]
    if value is _DROP:
        target.pop(last, None)
    else:
        target[last] = value
    return event


def test_msgspec_is_the_decoder_not_a_stand_in() -> None:
    assert isinstance(decode_meter_reading(json.dumps(BASE).encode()), msgspec.Struct)
