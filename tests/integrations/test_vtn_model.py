"""The VTN simulator's rules and wire faults, without I/O, and their contract with the webhook's parser."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from dr_coordinator.domain.intake import parse_body
from schemas.openadr import OadrEvent, OadrNotification, normalise_keys
from sim.utility.model import (
    ApiProblem,
    EventIn,
    NotifyFaults,
    ObjectOperation,
    ProgramIn,
    SubscriptionIn,
    VtnStore,
    encode_notification,
    notification,
    snake_case,
    strip_timezones,
)

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def event_in(program_id: str) -> EventIn:
    return EventIn.model_validate(
        {
            "programID": program_id,
            "eventName": "heat wave",
            "targets": [{"type": "RESOURCE_NAME", "values": ["fac-001"]}],
            "intervalPeriod": {"start": "2026-07-01T14:00:00Z", "duration": "PT2H"},
            "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [300.0]}]}],
        }
    )


def subscription(program_id: str | None, operations: list[str]) -> SubscriptionIn:
    op = ObjectOperation(objects=["EVENT"], operations=operations, callbackUrl="http://127.0.0.1:1/hook")
    return SubscriptionIn(clientName="ven", programID=program_id, objectOperations=[op])


def test_subscribers_are_filtered_by_program_and_operation_in_either_spelling():
    store = VtnStore(clock=lambda: NOW)
    a = store.create_program(ProgramIn(programName="a")).obj["id"]
    b = store.create_program(ProgramIn(programName="b")).obj["id"]
    all_programs = store.create_subscription(subscription(None, ["POST", "PUT", "DELETE"])).obj["id"]
    only_a_create = store.create_subscription(subscription(a, ["CREATE"])).obj["id"]
    store.create_subscription(subscription(b, ["POST"]))
    created = store.create_event(event_in(a))
    assert {s.subscription_id for s in store.subscribers(created)} == {all_programs, only_a_create}
    updated = store.update_event(created.obj["id"], event_in(a))
    assert [s.subscription_id for s in store.subscribers(updated)] == [all_programs]


def test_event_of_an_unknown_program_is_not_found_and_duplicate_names_conflict():
    store = VtnStore(clock=lambda: NOW)
    with pytest.raises(ApiProblem) as info:
        store.create_event(event_in("nope"))
    assert info.value.status == 404
    store.create_program(ProgramIn(programName="p"))
    with pytest.raises(ApiProblem) as info:
        store.create_program(ProgramIn(programName="p"))
    assert info.value.status == 409


def test_snake_case_and_timezone_stripping():
    assert [snake_case(k) for k in ("programID", "intervalPeriod", "createdDateTime", "id")] == [
        "program_id",
        "interval_period",
        "created_date_time",
        "id",
    ]
    assert strip_timezones({"a": ["2026-07-01T14:00:00Z", "2026-07-01T14:00:00.5+02:00", "PT1H"]}) == {
        "a": ["2026-07-01T14:00:00", "2026-07-01T14:00:00.5", "PT1H"]
    }


def test_notification_faults_are_validated():
    assert NotifyFaults.parse({"duplicate_rate": 1, "reorder": True}).duplicate_rate == 1.0
    for bad in ({"drop_rate": 2}, {"reorder": "yes"}, {"operation_style": "soap"}, {"typo": True}, {"drop_rate": True}):
        with pytest.raises(ValueError):
            NotifyFaults.parse(bad)


@pytest.mark.parametrize(
    ("snake", "string_encoded", "naive", "style"),
    list(itertools.product((False, True), (False, True), (False, True), ("http", "crud"))),
)
def test_every_wire_variant_is_understood_by_the_platform_webhook_parser(snake, string_encoded, naive, style):
    store = VtnStore(clock=lambda: NOW)
    program_id = store.create_program(ProgramIn(programName="p")).obj["id"]
    change = store.create_event(event_in(program_id))
    faults = NotifyFaults(
        snake_case=snake, string_encoded=string_encoded, naive_timestamps=naive, operation_style=style
    )
    wire = encode_notification(notification(change, style), faults)
    assert isinstance(json.loads(wire), str) == string_encoded
    note = OadrNotification.model_validate(normalise_keys(parse_body(wire)))
    assert note.verb == "POST"
    event = OadrEvent.model_validate(note.object)
    assert event.id == change.obj["id"] and event.programID == program_id
    assert event.intervalPeriod is not None and (event.intervalPeriod.start.tzinfo is None) == naive
