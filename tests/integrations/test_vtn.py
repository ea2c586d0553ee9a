"""The utility's OpenADR 3 VTN simulator and the VtnClient: registration, subscriptions,
webhook notifications (and their faults), polling, reports. Real processes, real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dr_coordinator.adapters.vtn_client import VtnClient, VtnRejectedError, VtnUnavailableError
from energy.resilience import RetryPolicy, breaker_is_open
from sim.bms.process import SimulatorProcess
from tests.waiting import wait_until

BASE = "/openadr3/3.1.0"


def vtn_url(sim: SimulatorProcess) -> str:
    return sim.url(BASE)


@pytest.fixture
def token(settings) -> str:
    return settings.seed.utility_bearer_token.get_secret_value()


@pytest.fixture
def bl(utility_sim, token):
    """The utility's business logic (the operator publishing events), an authenticated HTTP client."""
    with httpx.Client(base_url=vtn_url(utility_sim), headers={"Authorization": f"Bearer {token}"}, timeout=5) as c:
        yield c


@pytest.fixture
async def ven(utility_sim, token):
    client = VtnClient(vtn_url(utility_sim), token, timeout_s=5.0)
    yield client
    await client.close()


def new_program(bl: httpx.Client, uid: str) -> str:
    resp = bl.post("/programs", json={"programName": f"program-{uid}"})
    assert resp.status_code == 201
    return resp.json()["id"]


def event_body(program_id: str, name: str, facility_ids=("fac-001",), kw: float = 100.0) -> dict:
    start = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    return {
        "programID": program_id,
        "eventName": name,
        "priority": 1,
        "targets": [{"type": "RESOURCE_NAME", "values": list(facility_ids)}],
        "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }


async def test_ven_registration_returns_its_id_and_a_taken_name_finds_it(ven, uid):
    first = await ven.register_ven(f"ven-{uid}")
    again = await ven.register_ven(f"ven-{uid}")
    assert first == again and first.startswith("ven-")


async def test_event_changes_notify_the_subscriber_with_its_bearer_token(ven, bl, receiver, uid):
    program_id = new_program(bl, uid)
    sub_id = await ven.subscribe(receiver.url, f"hook-token-{uid}", program_id)
    assert sub_id.startswith("subscription-")
    created = bl.post("/events", json=event_body(program_id, f"shed-{uid}")).json()
    bl.put(f"/events/{created['id']}", json=event_body(program_id, f"shed-{uid}", kw=80.0)).raise_for_status()
    bl.delete(f"/events/{created['id']}").raise_for_status()
    other_program = new_program(bl, f"{uid}-other")
    bl.post("/events", json=event_body(other_program, "not-for-this-subscriber")).raise_for_status()
    # A marker in the subscribed program, after it: notifications leave in order (one delivery worker), so
    # once the marker is here, a notification of the other program's event would have come before it.
    marker = bl.post("/events", json=event_body(program_id, f"marker-{uid}")).json()

    got = await receiver.wait_for(4)
    assert len(got) == 4, "only this program's changes, the marker last"
    bodies = [json.loads(r["body"]) for r in got]
    assert [b["operation"] for b in bodies] == ["POST", "PUT", "DELETE", "POST"]
    assert bodies[3]["object"]["id"] == marker["id"]
    bodies = bodies[:3]
    assert all(b["objectType"] == "EVENT" and b["object"]["id"] == created["id"] for b in bodies)
    assert bodies[0]["object"]["programID"] == program_id
    assert bodies[0]["object"]["intervals"][0]["payloads"][0] == {"type": "IMPORT_CAPACITY_LIMIT", "values": [100.0]}
    assert bodies[1]["object"]["intervals"][0]["payloads"][0]["values"] == [80.0]
    assert all(r["headers"]["authorization"] == f"Bearer hook-token-{uid}" for r in got)


async def test_crud_operation_style_names_operations_as_openadr_3_1(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    await ven.subscribe(receiver.url, "t", program_id)
    utility_admin.post("/_admin/faults", json={"operation_style": "crud"}).raise_for_status()
    bl.post("/events", json=event_body(program_id, "crud")).raise_for_status()
    got = await receiver.wait_for(1)
    assert json.loads(got[0]["body"])["operation"] == "CREATE"


async def test_duplicate_fault_delivers_each_notification_twice(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    await ven.subscribe(receiver.url, "t", program_id)
    utility_admin.post("/_admin/faults", json={"duplicate_rate": 1.0}).raise_for_status()
    created = bl.post("/events", json=event_body(program_id, "dup")).json()
    got = await receiver.wait_for(2)
    assert len(got) == 2 and got[0]["body"] == got[1]["body"]
    assert json.loads(got[0]["body"])["object"]["id"] == created["id"]


async def test_reorder_fault_delivers_newer_notifications_first(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    await ven.subscribe(receiver.url, "t", program_id)
    utility_admin.post("/_admin/faults", json={"reorder": True, "reorder_window_ms": 500}).raise_for_status()
    created = bl.post("/events", json=event_body(program_id, "r")).json()
    bl.put(f"/events/{created['id']}", json=event_body(program_id, "r", kw=50.0)).raise_for_status()
    bl.delete(f"/events/{created['id']}").raise_for_status()
    got = await receiver.wait_for(3)
    assert [json.loads(r["body"])["operation"] for r in got] == ["DELETE", "PUT", "POST"]


async def test_string_encoded_fault_sends_the_notification_as_a_json_string(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    await ven.subscribe(receiver.url, "t", program_id)
    utility_admin.post("/_admin/faults", json={"string_encoded": True}).raise_for_status()
    bl.post("/events", json=event_body(program_id, "s")).raise_for_status()
    got = await receiver.wait_for(1)
    outer = json.loads(got[0]["body"])
    assert isinstance(outer, str)
    assert json.loads(outer)["objectType"] == "EVENT"


async def test_snake_case_and_naive_timestamp_faults_rewrite_the_payload(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    await ven.subscribe(receiver.url, "t", program_id)
    utility_admin.post("/_admin/faults", json={"snake_case": True, "naive_timestamps": True}).raise_for_status()
    bl.post("/events", json=event_body(program_id, "snake")).raise_for_status()
    got = await receiver.wait_for(1)
    body = json.loads(got[0]["body"])
    assert body["object_type"] == "EVENT"
    obj = body["object"]
    assert obj["program_id"] == program_id and "programID" not in obj
    start = obj["interval_period"]["start"]
    assert datetime.fromisoformat(start).tzinfo is None


async def test_lost_notifications_are_recovered_by_polling_events(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    sub_id = await ven.subscribe(receiver.url, "t", program_id)
    utility_admin.post("/_admin/faults", json={"drop_rate": 1.0}).raise_for_status()
    created = [bl.post("/events", json=event_body(program_id, f"e{i}")).json()["id"] for i in range(3)]
    deliveries = utility_admin.get("/_admin/deliveries", params={"subscription_id": sub_id}).json()
    # The VTN's delivery log is the positive signal: all three notifications were dropped.
    assert [d["outcome"] for d in deliveries] == ["dropped"] * 3
    assert receiver.requests == []
    polled = await ven.poll_events(program_id)
    assert [e["id"] for e in polled] == created


async def test_poll_events_reads_every_page(ven, bl, uid):
    program_id = new_program(bl, uid)
    created = [bl.post("/events", json=event_body(program_id, f"p{i}")).json()["id"] for i in range(57)]
    polled = await ven.poll_events(program_id)
    assert [e["id"] for e in polled] == created


async def test_failed_callbacks_are_retried_and_refusals_are_not(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    sub_id = await ven.subscribe(receiver.url, "t", program_id)
    receiver.statuses = [503, 500]
    bl.post("/events", json=event_body(program_id, "retry")).raise_for_status()
    await receiver.wait_for(3)
    receiver.statuses = [401]
    bl.post("/events", json=event_body(program_id, "refused")).raise_for_status()
    await receiver.wait_for(4)
    # No fixed wait for "no fifth request": the notifier's own final outcome ("rejected" is a decision not to
    # retry, recorded after the refusal) is the witness that nothing more will be sent.
    deliveries = await wait_until(
        lambda: utility_admin.get("/_admin/deliveries", params={"subscription_id": sub_id}).json(),
        accept=lambda found: [d["outcome"] for d in found] == ["delivered", "rejected"],
        timeout_s=10,
        what="both deliveries final",
        interval_s=0.05,
    )
    assert [(d["outcome"], d["attempts"]) for d in deliveries] == [("delivered", 3), ("rejected", 1)]
    assert len(receiver.requests) == 4


async def test_wrong_token_fault_sends_a_token_the_receiver_never_issued(ven, bl, receiver, utility_admin, uid):
    program_id = new_program(bl, uid)
    await ven.subscribe(receiver.url, "issued-token", program_id)
    utility_admin.post("/_admin/faults", json={"wrong_token": True}).raise_for_status()
    bl.post("/events", json=event_body(program_id, "w")).raise_for_status()
    got = await receiver.wait_for(1)
    assert got[0]["headers"]["authorization"] != "Bearer issued-token"


async def test_echo_check_verifies_the_callback_before_subscribing(ven, receiver, utility_admin):
    utility_admin.post("/_admin/settings", json={"verify_callbacks": True}).raise_for_status()
    assert (await ven.subscribe(receiver.url, "t")).startswith("subscription-")
    receiver.wrong_echo = "not-the-challenge"
    with pytest.raises(VtnRejectedError) as info:
        await ven.subscribe(receiver.url, "t")
    assert info.value.status == 400 and "verification failed" in info.value.detail


async def test_report_is_posted_and_listed(ven, bl, uid):
    program_id = new_program(bl, uid)
    event_id = bl.post("/events", json=event_body(program_id, "rep")).json()["id"]
    report = {
        "programID": program_id,
        "eventID": event_id,
        "clientName": f"ven-{uid}",
        "reportName": "achieved reduction",
        "resources": [
            {"resourceName": "fac-001", "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [42.5]}]}]}
        ],
    }
    report_id = await ven.post_report(report)
    listed = bl.get("/reports", params={"eventID": event_id}).json()
    assert [r["id"] for r in listed] == [report_id]
    assert listed[0]["resources"][0]["intervals"][0]["payloads"][0]["values"] == [42.5]
    assert listed[0]["clientName"] == f"ven-{uid}" and listed[0]["objectType"] == "REPORT"


async def test_vtn_refuses_bad_tokens_and_bad_bodies_with_reasons(utility_sim, ven, bl, uid):
    stranger = VtnClient(vtn_url(utility_sim), "not-a-token")
    try:
        with pytest.raises(VtnRejectedError) as info:
            await stranger.poll_events()
        assert info.value.status == 403
    finally:
        await stranger.close()
    assert httpx.get(vtn_url(utility_sim) + "/events", timeout=5).status_code == 401
    program_id = new_program(bl, uid)
    bad = event_body(program_id, "bad")
    bad["intervalPeriod"]["start"] = "2026-01-01T10:00:00"  # no timezone
    resp = bl.post("/events", json=bad)
    assert resp.status_code == 400 and "timezone" in resp.json()["detail"]
    resp = bl.post("/events", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and "not JSON" in resp.json()["detail"]
    assert bl.post("/events", json=event_body("no-such-program", "x")).status_code == 404
    with pytest.raises(VtnRejectedError) as info:
        await ven.post_report({"clientName": "x"})  # no resources
    assert info.value.status == 400 and "resources" in info.value.detail
    assert not breaker_is_open(ven.breaker)  # refusals are not outages


async def test_writes_are_not_retried_after_a_server_error_but_reads_are(receiver):
    # The receiver stands in for a VTN that answers 500: a POST may have been processed, so no retry.
    client = VtnClient(f"http://127.0.0.1:{receiver.port}{BASE}", "t", retry=RetryPolicy(3, 0.01, 0.05))
    try:
        receiver.statuses = [500, 500, 500]
        with pytest.raises(VtnUnavailableError, match="HTTP 500"):
            await client.post_report({"clientName": "x", "resources": []})
        assert len(receiver.requests) == 1
        receiver.statuses = [503, 503, 503]
        with pytest.raises(VtnUnavailableError):
            await client.poll_events()
        assert len(receiver.requests) == 4  # 1 POST + 3 GET attempts
    finally:
        await client.close()


@pytest.mark.chaos
async def test_unreachable_vtn_is_unavailable_and_opens_the_breaker(port):
    client = VtnClient(
        f"http://127.0.0.1:{port}{BASE}", "t", retry=RetryPolicy(2, 0.01, 0.05), breaker_fail_max=3, breaker_reset_s=30
    )
    try:
        with pytest.raises(VtnUnavailableError):
            await client.poll_events()  # 2 attempts, both refused
        with pytest.raises(VtnUnavailableError):
            await client.register_ven("v")  # refused connection: retried, then the breaker opens
        assert breaker_is_open(client.breaker)
        with pytest.raises(VtnUnavailableError, match="circuit open"):
            await client.post_report({"clientName": "x", "resources": []})
    finally:
        await client.close()


async def test_vtn_calls_carry_the_current_trace_context(receiver):
    from energy.observability.tracing import new_trace, use_trace

    client = VtnClient(f"http://127.0.0.1:{receiver.port}{BASE}", "t")
    try:
        with use_trace(new_trace()) as ctx:
            assert await client.post_report({"clientName": "x", "resources": []}) == "report-1"
    finally:
        await client.close()
    assert receiver.requests[0]["headers"]["traceparent"].split("-")[1] == ctx.trace_id
