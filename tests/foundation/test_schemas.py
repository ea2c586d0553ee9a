"""Event schemas: strict, versioned envelopes that round-trip, and JSON Schemas kept in sync."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.dlq import DeadLetter, DeadLetterEvent
from schemas.dr import (
    BmsAction,
    BmsCommand,
    BmsCommandAcknowledged,
    BmsCommandAcknowledgedEvent,
    BmsCommandFailed,
    BmsCommandFailedEvent,
    BmsCommandIssuedEvent,
    DrEventReceived,
    DrEventReceivedEvent,
    DrEventStateChanged,
    DrEventStateChangedEvent,
)
from schemas.envelope import Envelope
from schemas.forecasts import ForecastPublished, ForecastPublishedEvent, ForecastQuality
from schemas.readings import LateWindow, LateWindowEvent, MeterReading, MeterReadingEvent, RawReading, reading_id
from schemas.registry import EVENT_MODELS, JSONSCHEMA_DIR, UnknownEventError, decode_event, json_schemas
from schemas.topics import READINGS, TOPICS

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _reading() -> MeterReading:
    return MeterReading(
        reading_id=reading_id("fac-001-m01", NOW),
        meter_id="fac-001-m01",
        facility_id="fac-001",
        ts=NOW,
        active_power_kw=12.5,
        reactive_power_kvar=1.5,
        voltage_v=231.0,
        current_a=18.0,
        energy_kwh=1234.5,
        seq=7,
        received_at=NOW,
    )


def _command() -> BmsCommand:
    return BmsCommand(
        command_id=uuid.uuid4(),
        idempotency_key="ev|fac-001|hvac-1|set_setpoint",
        dr_event_id=uuid.uuid4(),
        facility_id="fac-001",
        zone_id="hvac-1",
        action=BmsAction.SET_SETPOINT,
        value=25.0,
    )


def sample_events() -> list[Envelope]:  # type: ignore[type-arg]
    ev = uuid.uuid4()
    return [
        MeterReadingEvent.wrap(_reading(), source="ingestion", occurred_at=NOW),
        DrEventReceivedEvent.wrap(
            DrEventReceived(
                dr_event_id=ev,
                utility_id="util-sim",
                utility_event_id="e-1",
                facility_ids=("fac-001",),
                start=NOW,
                end=NOW + timedelta(hours=1),
                target_kw=100.0,
            ),
            source="api",
            occurred_at=NOW,
            correlation_id="corr-1",
        ),
        DrEventStateChangedEvent.wrap(
            DrEventStateChanged(dr_event_id=ev, from_state="received", to_state="scheduled", version=1),
            source="dr-coordinator",
            occurred_at=NOW,
        ),
        BmsCommandIssuedEvent.wrap(_command(), source="dr-coordinator", occurred_at=NOW),
        BmsCommandAcknowledgedEvent.wrap(
            BmsCommandAcknowledged(command=_command(), executed_at=NOW), source="dr-coordinator", occurred_at=NOW
        ),
        BmsCommandFailedEvent.wrap(
            BmsCommandFailed(command=_command(), reason="fault", transient=False, attempts=1),
            source="dr-coordinator",
            occurred_at=NOW,
        ),
        ForecastPublishedEvent.wrap(
            ForecastPublished(
                facility_id="fac-001",
                run_at=NOW,
                horizon_start=NOW,
                horizon_end=NOW + timedelta(days=1),
                steps=96,
                model_version="lstm-1",
                quality=ForecastQuality.FULL,
                weather_available=True,
                sensor_coverage=0.98,
            ),
            source="forecast",
            occurred_at=NOW,
        ),
        LateWindowEvent.wrap(
            LateWindow(
                facility_id="fac-001",
                window_start=NOW,
                window_end=NOW + timedelta(minutes=15),
                late_readings=3,
                max_lateness_s=7200.0,
            ),
            source="aggregation",
            occurred_at=NOW,
        ),
        DeadLetterEvent.wrap(
            DeadLetter(
                stage="ingestion", reason="malformed_json", detail="x", raw_b64="e30=", source="meters/x", failed_at=NOW
            ),
            source="ingestion",
            occurred_at=NOW,
        ),
    ]


def test_every_registered_event_has_a_sample() -> None:
    assert {(e.event_type, e.schema_version) for e in sample_events()} == set(EVENT_MODELS)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.event_type)
def test_event_round_trips_through_bytes(event: Envelope) -> None:  # type: ignore[type-arg]
    decoded = decode_event(event.to_bytes())
    assert decoded == event
    assert type(decoded) is type(event)


def test_reading_id_is_deterministic_across_timezones() -> None:
    ts_other_zone = NOW.astimezone(timezone(timedelta(hours=10)))
    assert reading_id("m1", NOW) == reading_id("m1", ts_other_zone)
    assert reading_id("m1", NOW) != reading_id("m2", NOW)
    assert reading_id("m1", NOW) != reading_id("m1", NOW + timedelta(seconds=15))


@pytest.mark.parametrize(
    ("meter_id", "ts", "name"),
    [
        ("m1", datetime(2026, 12, 3, 15, 0, tzinfo=UTC), "m1|2026-12-03T15:00:00+00:00"),
        (
            "site-7:main.2",
            datetime(2026, 12, 3, 16, 0, 15, 250000, tzinfo=timezone(timedelta(hours=1))),
            "site-7:main.2|2026-12-03T15:00:15.250000+00:00",
        ),
    ],
)
def test_reading_id_is_uuid5_of_meter_and_utc_time(meter_id: str, ts: datetime, name: str) -> None:
    """The ids already published must not change: the name is written out by hand, hashed by the standard library."""
    namespace = uuid.UUID("6f1e3c52-8d8e-4a64-9a3c-1f9b1f3e2a10")
    assert reading_id(meter_id, ts) == uuid.uuid5(namespace, name)


def test_strict_types_reject_strings_for_numbers() -> None:
    raw = {
        "meter_id": "m1",
        "ts": NOW.isoformat(),
        "active_power_kw": "12.5",
        "reactive_power_kvar": 0.0,
        "voltage_v": 230.0,
        "current_a": 1.0,
        "energy_kwh": 1.0,
        "seq": 1,
    }
    with pytest.raises(ValidationError) as err:
        RawReading.model_validate_json(json.dumps(raw))
    assert "active_power_kw" in str(err.value)


def test_naive_timestamps_and_unknown_fields_are_rejected() -> None:
    base = {
        "meter_id": "m1",
        "ts": "2026-11-25T12:00:00",
        "active_power_kw": 1.0,
        "reactive_power_kvar": 0.0,
        "voltage_v": 230.0,
        "current_a": 1.0,
        "energy_kwh": 1.0,
        "seq": 1,
    }
    with pytest.raises(ValidationError):
        RawReading.model_validate_json(json.dumps(base))
    with pytest.raises(ValidationError):
        RawReading.model_validate_json(json.dumps({**base, "ts": NOW.isoformat(), "extra": 1}))


def test_unknown_event_type_or_version_is_refused_with_reason() -> None:
    event = sample_events()[0]
    doc = json.loads(event.to_bytes())
    doc["schema_version"] = 99
    with pytest.raises(UnknownEventError, match="major version 99 is not readable"):
        decode_event(json.dumps(doc).encode())
    doc["event_type"] = "no.such.event"
    with pytest.raises(UnknownEventError, match="unknown event type/version"):
        decode_event(json.dumps(doc).encode())
    with pytest.raises(UnknownEventError):
        decode_event(b"[1, 2]")


@given(st.binary(max_size=300))
def test_decode_never_fails_with_anything_but_value_error(raw: bytes) -> None:
    # pydantic's ValidationError and json's JSONDecodeError are ValueErrors: a DLQ reason, never a crash.
    with contextlib.suppress(ValueError):
        decode_event(raw)


def test_checked_in_json_schemas_are_in_sync() -> None:
    expected = json_schemas()
    on_disk = {p.name for p in JSONSCHEMA_DIR.glob("*.json")}
    assert on_disk == set(expected), "run `energy schemas export`"
    for name, schema in expected.items():
        assert json.loads((JSONSCHEMA_DIR / name).read_text()) == schema, (
            f"{name} is stale: run `energy schemas export`"
        )


def test_topic_registry_keys_readings_by_facility() -> None:
    assert TOPICS[READINGS].key == "facility_id"
    for topic in TOPICS.values():
        assert topic.partitions >= 1
        for event_type in topic.events:
            assert any(et == event_type for et, _ in EVENT_MODELS), f"{topic.name} carries unregistered {event_type}"
