"""The utility VTN simulator as strict as the reference VTN, as OpenADR 3.0.1 and as 3.1: each rule of
``docs/decisions/0410-strict-vtn-simulator.md`` is shown by sending what the version forbids (rejected)
next to what it allows (accepted). Real processes, real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sim.bms.process import SimulatorProcess

OAUTH_ID, OAUTH_SECRET = "ven-client-7", "s3cret-7"


def _start(version: str, tmp_path_factory) -> SimulatorProcess:
    from energy.stack.process import free_port

    return SimulatorProcess.start(
        "utility",
        free_port(),
        "--openadr-version",
        version,
        "--sequential-ids",
        "--callback-url",
        "none",
        "--oauth-client",
        f"{OAUTH_ID}:{OAUTH_SECRET}",
        log_dir=tmp_path_factory.mktemp(f"utility-{version}"),
    )


@pytest.fixture(scope="module")
def sim31(stack, tmp_path_factory) -> Iterator[SimulatorProcess]:
    with _start("3.1", tmp_path_factory) as sim:
        yield sim


@pytest.fixture(scope="module")
def sim301(stack, tmp_path_factory) -> Iterator[SimulatorProcess]:
    with _start("3.0.1", tmp_path_factory) as sim:
        yield sim


@pytest.fixture
def token(settings) -> str:
    """The utility's business logic (BL)."""
    return settings.seed.utility_bearer_token.get_secret_value()


@pytest.fixture
def ven_token(settings) -> str:
    """The platform's VEN (clientID ``platform-ven``): only a VEN writes reports (rule 21)."""
    return settings.dr.vtn_token.get_secret_value()


def client(sim: SimulatorProcess, base: str, token: str) -> httpx.AsyncClient:
    # async: the webhook receiver runs on the test's event loop, and strict VTNs notify while the request waits
    return httpx.AsyncClient(base_url=sim.url(base), headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture
async def v31(sim31, token) -> AsyncIterator[httpx.AsyncClient]:
    async with client(sim31, "/openadr3/3.1.0", token) as c:
        yield c
        (await c.post(sim31.url("/_admin/restart"))).raise_for_status()
        (await c.post(sim31.url("/_admin/settings"), json={"verify_callbacks": True})).raise_for_status()


@pytest.fixture
async def v301(sim301, token) -> AsyncIterator[httpx.AsyncClient]:
    async with client(sim301, "/openadr3/3.0.1", token) as c:
        yield c
        (await c.post(sim301.url("/_admin/restart"))).raise_for_status()


def _start_time() -> str:
    return (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def event31(program_id: str, targets=None, **extra) -> dict:
    body = {
        "programID": program_id,
        "intervalPeriod": {"start": _start_time(), "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
        **extra,
    }
    if targets is not None:
        body["targets"] = targets
    return body


async def program(c: httpx.AsyncClient, name: str = "p") -> str:
    resp = await c.post("/programs", json={"programName": name})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def rejected(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    assert all(w in detail for w in words), detail


# --- 3.1 ------------------------------------------------------------------------------------------


async def test_31_ven_registration_needs_the_ven_request_object_type(v31):
    rejected(await v31.post("/vens", json={"objectType": "VEN", "venName": "v1"}), "VEN_VEN_REQUEST", "BL_VEN_REQUEST")
    rejected(await v31.post("/vens", json={"venName": "v1"}), "objectType")
    rejected(await v31.post("/vens", json={"objectType": "BL_VEN_REQUEST", "venName": "v1"}), "clientID")
    ok = await v31.post("/vens", json={"objectType": "VEN_VEN_REQUEST", "venName": "v1"})
    assert ok.status_code == 201 and ok.json()["objectType"] == "VEN"


async def test_31_subscriptions_name_crud_operations(v31, receiver):
    pid = await program(v31)
    op = {"objects": ["EVENT"], "callbackUrl": receiver.url, "bearerToken": "t"}
    rejected(
        await v31.post(
            "/subscriptions", json={"clientName": "c", "objectOperations": [{**op, "operations": ["POST"]}]}
        ),
        "operations",
    )
    bad_object = {**op, "objects": ["EVENTS"], "operations": ["CREATE"]}
    rejected(await v31.post("/subscriptions", json={"clientName": "c", "objectOperations": [bad_object]}), "objects")
    ok = await v31.post(
        "/subscriptions",
        json={"clientName": "c", "programID": pid, "objectOperations": [{**op, "operations": ["CREATE"]}]},
    )
    assert ok.status_code == 201, ok.text


async def test_31_targets_are_plain_strings(v31):
    pid = await program(v31)
    rejected(await v31.post("/events", json=event31(pid, [{"type": "RESOURCE_NAME", "values": ["fac-1"]}])), "targets")
    rejected(await v31.post("/events", json=event31(pid, [""])), "targets")
    ok = await v31.post("/events", json=event31(pid, ["fac-1", "fac-2"]))
    assert ok.status_code == 201 and ok.json()["targets"] == ["fac-1", "fac-2"]


async def test_31_payload_descriptors_carry_their_object_type(v31, sim31, ven_token):
    pid = await program(v31)
    rejected(await v31.post("/events", json=event31(pid, payloadDescriptors=[{"payloadType": "SIMPLE"}])), "objectType")
    ok = await v31.post(
        "/events",
        json=event31(pid, payloadDescriptors=[{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "SIMPLE"}]),
    )
    assert ok.status_code == 201, ok.text
    eid = ok.json()["id"]
    resources = [{"resourceName": "fac-1", "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [1]}]}]}]
    report = {"eventID": eid, "clientName": "v1", "resources": resources}
    async with client(sim31, "/openadr3/3.1.0", ven_token) as ven:  # reports are written by VENs
        rejected(
            await ven.post("/reports", json={**report, "payloadDescriptors": [{"payloadType": "USAGE"}]}), "objectType"
        )
        rejected(await ven.post("/reports", json={k: v for k, v in report.items() if k != "eventID"}), "eventID")
        good = {**report, "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "USAGE"}]}
        created = await ven.post("/reports", json=good)
        assert created.status_code == 201, created.text
        updated = await ven.put(f"/reports/{created.json()['id']}", json={**good, "reportName": "final"})
        assert updated.status_code == 200 and updated.json()["reportName"] == "final"
        assert len((await ven.get("/reports", params={"eventID": eid})).json()) == 1


async def test_31_bad_durations_and_zoneless_starts_are_rejected(v31):
    pid = await program(v31)
    bad = event31(pid)
    bad["intervalPeriod"]["duration"] = "1 hour"
    rejected(await v31.post("/events", json=bad), "duration")
    naive = event31(pid)
    naive["intervalPeriod"]["start"] = "2030-01-01T10:00:00"
    rejected(await v31.post("/events", json=naive), "timezone")


async def test_31_subscribe_echo_checks_the_callback(v31, receiver):
    receiver.wrong_echo = "not-the-challenge"
    body = {
        "clientName": "c",
        "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": receiver.url}],
    }
    rejected(await v31.post("/subscriptions", json=body), "callback verification failed")
    receiver.wrong_echo = None
    assert (await v31.post("/subscriptions", json=body)).status_code == 201


async def test_31_event_is_stored_but_post_answers_500_when_a_callback_is_down(v31, sim31, receiver):
    from energy.stack.process import free_port

    pid = await program(v31)
    body = {
        "clientName": "c",
        "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": receiver.url}],
    }
    assert (await v31.post("/subscriptions", json=body)).status_code == 201
    ok = await v31.post("/events", json=event31(pid, ["fac-1"]))
    assert ok.status_code == 201  # callback up: delivered before the answer
    assert json.loads(receiver.requests[0]["body"])["operation"] == "CREATE"
    (await v31.post(sim31.url("/_admin/settings"), json={"verify_callbacks": False})).raise_for_status()
    dead = {
        **body,
        "objectOperations": [{**body["objectOperations"][0], "callbackUrl": f"http://127.0.0.1:{free_port()}/x"}],
    }
    assert (await v31.post("/subscriptions", json=dead)).status_code == 201
    down = await v31.post("/events", json=event31(pid, ["fac-2"], eventName="while-down"))
    assert down.status_code == 500, down.text
    listed = (await v31.get("/events", params={"programID": pid})).json()
    assert [e.get("eventName") for e in listed] == [None, "while-down"]


async def test_31_callbacks_are_expected_to_answer_200(v31, sim31, receiver):
    pid = await program(v31)
    body = {
        "clientName": "c",
        "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": receiver.url}],
    }
    assert (await v31.post("/subscriptions", json=body)).status_code == 201
    receiver.statuses = [204, 200]
    (await v31.post("/events", json=event31(pid))).raise_for_status()
    (await v31.post("/events", json=event31(pid))).raise_for_status()
    outcomes = [d["outcome"] for d in (await v31.get(sim31.url("/_admin/deliveries"))).json()]
    assert outcomes == ["not_200", "delivered"]


async def test_ids_are_sequential_and_restart_with_the_vtn(v31, sim31):
    pid = await program(v31)
    first = [(await v31.post("/events", json=event31(pid))).json()["id"] for _ in range(2)]
    assert pid == "0"  # the program seeded at start keeps its own id ("default")
    assert first == ["0", "1"]
    (await v31.post(sim31.url("/_admin/restart"))).raise_for_status()
    pid = await program(v31)
    assert (await v31.post("/events", json=event31(pid))).json()["id"] == "0"


def test_oauth2_client_credentials_token_endpoint(sim31):
    base = sim31.url("/openadr3/3.1.0")
    server = httpx.get(f"{base}/auth/server", timeout=5).json()
    assert server["tokenURL"] == f"{base}/auth/token"
    form = {"grant_type": "client_credentials", "client_id": OAUTH_ID, "client_secret": OAUTH_SECRET}
    assert httpx.post(f"{base}/auth/token", json=form, timeout=5).json()["error"] == "invalid_request"
    wrong = httpx.post(f"{base}/auth/token", data={**form, "client_secret": "nope"}, timeout=5)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = httpx.post(f"{base}/auth/token", data={**form, "grant_type": "password"}, timeout=5)
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    ok = httpx.post(f"{base}/auth/token", data=form, timeout=5)
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 3600
    bearer = {"Authorization": f"Bearer {ok.json()['access_token']}"}
    assert httpx.get(f"{base}/programs", headers=bearer, timeout=5).status_code == 200
    assert httpx.get(f"{base}/programs", headers={"Authorization": "Bearer guessed"}, timeout=5).status_code == 403


# --- 3.0.1 ----------------------------------------------------------------------------------------


def event301(program_id: str, targets=None) -> dict:
    body = event31(program_id)
    if targets is not None:
        body["targets"] = targets
    return body


async def test_301_targets_are_values_maps(v301):
    pid = await program(v301)
    rejected(await v301.post("/events", json=event301(pid, ["fac-1"])), "targets")
    ok = await v301.post("/events", json=event301(pid, [{"type": "RESOURCE_NAME", "values": ["fac-1"]}]))
    assert ok.status_code == 201, ok.text


async def test_301_events_need_intervals(v301):
    pid = await program(v301)
    rejected(await v301.post("/events", json={"programID": pid}), "intervals")


async def test_301_ven_is_a_ven_object(v301):
    rejected(await v301.post("/vens", json={"objectType": "VEN_VEN_REQUEST", "venName": "v"}), "objectType")
    ok = await v301.post("/vens", json={"objectType": "VEN", "venName": "v"})
    assert ok.status_code == 201 and ok.json()["id"] == "0"


async def test_301_subscriptions_name_http_verbs_and_a_program(v301, receiver):
    pid = await program(v301)
    op = {"objects": ["EVENT"], "callbackUrl": receiver.url}

    def sub(operation: str, program_id: str | None = pid) -> dict:
        body = {"clientName": "c", "objectOperations": [op | {"operations": [operation]}]}
        return body if program_id is None else body | {"programID": program_id}

    rejected(await v301.post("/subscriptions", json=sub("CREATE")), "operations")
    rejected(await v301.post("/subscriptions", json=sub("POST", None)), "programID")
    ok = await v301.post("/subscriptions", json=sub("POST"))
    assert ok.status_code == 201, ok.text
    (await v301.post("/events", json=event301(pid))).raise_for_status()
    assert json.loads(receiver.requests[0]["body"])["operation"] == "POST"


async def test_301_reports_name_their_program(v301, sim301, ven_token):
    pid = await program(v301)
    eid = (await v301.post("/events", json=event301(pid))).json()["id"]
    resources = [{"resourceName": "fac-1", "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [1]}]}]}]
    report = {"eventID": eid, "clientName": "v", "resources": resources}
    async with client(sim301, "/openadr3/3.0.1", ven_token) as ven:  # reports are written by VENs
        rejected(await ven.post("/reports", json=report), "programID")
        assert (await ven.post("/reports", json={**report, "programID": pid})).status_code == 201


# --- who may write what: business logic (BL) vs VEN (decision 0410 rules 20-24) -------------------


def forbidden(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 403, resp.text
    detail = resp.json()["detail"]
    assert all(w in detail for w in words), detail


def _sim_and_base(version: str, sim31: SimulatorProcess, sim301: SimulatorProcess) -> tuple[SimulatorProcess, str]:
    return (sim31, "/openadr3/3.1.0") if version == "3.1" else (sim301, "/openadr3/3.0.1")


def _event(version: str, pid: str, **extra) -> dict:
    return event31(pid, **extra)  # untargeted: the same body is valid in both versions


@pytest.mark.parametrize("version", ["3.1", "3.0.1"])
async def test_only_business_logic_writes_programs(version, sim31, sim301, token, ven_token):
    sim, base = _sim_and_base(version, sim31, sim301)
    async with client(sim, base, token) as bl, client(sim, base, ven_token) as ven:
        try:
            forbidden(await ven.post("/programs", json={"programName": "ven-made"}), "write_programs", "VEN")
            pid = await program(bl, "bl-made")  # business logic may
            forbidden(await ven.delete(f"/programs/{pid}"), "write_programs")
            assert [p["programName"] for p in (await bl.get("/programs")).json()] == ["default", "bl-made"]
        finally:
            (await bl.post(sim.url("/_admin/restart"))).raise_for_status()


@pytest.mark.parametrize("version", ["3.1", "3.0.1"])
async def test_only_business_logic_writes_events(version, sim31, sim301, token, ven_token):
    sim, base = _sim_and_base(version, sim31, sim301)
    async with client(sim, base, token) as bl, client(sim, base, ven_token) as ven:
        try:
            pid = await program(bl)
            forbidden(await ven.post("/events", json=_event(version, pid)), "write_events", "VEN")
            created = await bl.post("/events", json=_event(version, pid, eventName="bl-event"))
            assert created.status_code == 201, created.text
            eid = created.json()["id"]
            forbidden(await ven.put(f"/events/{eid}", json=_event(version, pid, eventName="ven-edit")), "write_events")
            forbidden(await ven.delete(f"/events/{eid}"), "write_events")
            assert [e["eventName"] for e in (await bl.get("/events")).json()] == ["bl-event"]  # untouched
        finally:
            (await bl.post(sim.url("/_admin/restart"))).raise_for_status()


@pytest.mark.parametrize("version", ["3.1", "3.0.1"])
async def test_only_vens_write_reports(version, sim31, sim301, token, ven_token):
    sim, base = _sim_and_base(version, sim31, sim301)
    async with client(sim, base, token) as bl, client(sim, base, ven_token) as ven:
        try:
            pid = await program(bl)
            eid = (await bl.post("/events", json=_event(version, pid))).json()["id"]
            payload = [{"type": "USAGE", "values": [1]}]
            report = {
                "programID": pid,
                "eventID": eid,
                "clientName": "v",
                "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "USAGE"}],
                "resources": [{"resourceName": "fac-1", "intervals": [{"id": 0, "payloads": payload}]}],
            }
            forbidden(await bl.post("/reports", json=report), "write_reports", "BL")
            created = await ven.post("/reports", json=report)
            assert created.status_code == 201, created.text
            rid = created.json()["id"]
            forbidden(await bl.put(f"/reports/{rid}", json={**report, "reportName": "bl-edit"}), "write_reports")
            assert [r.get("reportName") for r in (await bl.get("/reports")).json()] == [None]  # BL still reads it
        finally:
            (await bl.post(sim.url("/_admin/restart"))).raise_for_status()


async def test_31_a_ven_sends_the_ven_representations_not_business_logics(v31, sim31, ven_token):
    async with client(sim31, "/openadr3/3.1.0", ven_token) as ven:
        as_bl = {"objectType": "BL_VEN_REQUEST", "clientID": "someone-else", "venName": "impostor"}
        forbidden(await ven.post("/vens", json=as_bl), "BL_VEN_REQUEST", "VEN_VEN_REQUEST")
        mine = await ven.post("/vens", json={"objectType": "VEN_VEN_REQUEST", "venName": "mine"})
        assert mine.status_code == 201 and mine.json()["clientID"] == "platform-ven"
        vid = mine.json()["id"]
        forbidden(await ven.put(f"/vens/{vid}", json={**as_bl, "venName": "mine"}), "BL_VEN_REQUEST")
        bl_resource = {
            "objectType": "BL_RESOURCE_REQUEST",
            "clientID": "platform-ven",
            "resourceName": "r",
            "venID": vid,
        }
        forbidden(await ven.post("/resources", json=bl_resource), "BL_RESOURCE_REQUEST")
        ven_resource = {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "r", "venID": vid}
        assert (await ven.post("/resources", json=ven_resource)).status_code == 201
    # business logic writes its representation (and may name any clientID)
    other = await v31.post("/vens", json={"objectType": "BL_VEN_REQUEST", "clientID": "c-9", "venName": "bl-made"})
    assert other.status_code == 201, other.text


@pytest.mark.parametrize("version", ["3.1", "3.0.1"])
async def test_vens_and_business_logic_both_write_subscriptions_and_vens(version, sim31, sim301, token, ven_token):
    sim, base = _sim_and_base(version, sim31, sim301)
    ops = [
        {
            "objects": ["EVENT"],
            "operations": ["CREATE"] if version == "3.1" else ["POST"],
            "callbackUrl": "http://127.0.0.1:9/hook",
        }
    ]
    ven_object = {"objectType": "VEN_VEN_REQUEST" if version == "3.1" else "VEN"}
    async with client(sim, base, token) as bl, client(sim, base, ven_token) as ven:
        try:
            (await bl.post(sim.url("/_admin/settings"), json={"verify_callbacks": False})).raise_for_status()
            pid = await program(bl)
            for who, c in (("bl", bl), ("ven", ven)):
                sub = await c.post(
                    "/subscriptions", json={"clientName": who, "programID": pid, "objectOperations": ops}
                )
                assert sub.status_code == 201, (who, sub.text)
                assert (await c.delete(f"/subscriptions/{sub.json()['id']}")).status_code == 200
            bl_ven = {"objectType": "BL_VEN_REQUEST", "clientID": "c-1"} if version == "3.1" else ven_object
            assert (await bl.post("/vens", json={**bl_ven, "venName": "by-bl"})).status_code == 201
            assert (await ven.post("/vens", json={**ven_object, "venName": "by-ven"})).status_code == 201
        finally:
            (await bl.post(sim.url("/_admin/restart"))).raise_for_status()
            (await bl.post(sim.url("/_admin/settings"), json={"verify_callbacks": True})).raise_for_status()


# --- 3.1 report interval layouts (decision 0410 rule 25) ------------------------------------------


async def test_31_reports_lay_out_intervals_as_the_event_asks(v31, sim31, ven_token):
    """An event of two 30-minute intervals (ids 0 and 1) asking USAGE in each layout; reports that
    break the layout are refused (400), reports that follow it are stored."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    at = lambda minutes: (start + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")  # noqa: E731
    pid = await program(v31)

    def interval(interval_id: int, begin: int | None = None, minutes: int | None = None) -> dict:
        out: dict = {"id": interval_id, "payloads": [{"type": "USAGE", "values": [1.0]}]}
        if begin is not None:
            out["intervalPeriod"] = {"start": at(begin), "duration": f"PT{minutes}M"}
        return out

    async def report_for(layout: str, *intervals: dict) -> httpx.Response:
        event = {
            "programID": pid,
            "intervalPeriod": {"start": at(0), "duration": "PT30M"},
            "intervals": [{"id": k, "payloads": [{"type": "SIMPLE", "values": [1]}]} for k in (0, 1)],
            "reportDescriptors": [{"payloadType": "USAGE", "reportIntervals": layout}],
        }
        eid = (await v31.post("/events", json=event)).json()["id"]
        body = {
            "eventID": eid,
            "clientName": "v",
            "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "USAGE"}],
            "resources": [{"resourceName": "fac-1", "intervals": list(intervals)}],
        }
        return await ven.post("/reports", json=body)

    async with client(sim31, "/openadr3/3.1.0", ven_token) as ven:
        # INTERVALS: the event's own intervals, by id, each once, with their periods if any
        rejected(await report_for("INTERVALS", interval(7)), "INTERVALS", "none of the event's intervals")
        rejected(await report_for("INTERVALS", interval(0, 5, 30)), "differs from the event interval")
        rejected(await report_for("INTERVALS", interval(0), interval(0)), "once per resource")
        assert (await report_for("INTERVALS", interval(0, 0, 30), interval(1))).status_code == 201
        # SUB_INTERVALS: pieces of the event's intervals, each with its own period inside its interval
        rejected(await report_for("SUB_INTERVALS", interval(0)), "its own intervalPeriod")
        rejected(await report_for("SUB_INTERVALS", interval(0, 20, 15)), "within event interval 0")
        rejected(await report_for("SUB_INTERVALS", interval(2, 60, 15)), "none of the event's intervals")
        ok = await report_for("SUB_INTERVALS", interval(0, 0, 15), interval(0, 15, 15), interval(1, 30, 15))
        assert ok.status_code == 201, ok.text
        # OPEN_INTERVALS: the VEN's own intervals, each saying when it is, numbered once each
        rejected(await report_for("OPEN_INTERVALS", interval(0)), "carry an intervalPeriod")
        rejected(await report_for("OPEN_INTERVALS", interval(0, 0, 5), interval(0, 5, 5)), "numbered once")
        ok = await report_for("OPEN_INTERVALS", interval(0, 0, 5), interval(1, 5, 55))
        assert ok.status_code == 201, ok.text


# --- the platform's VEN client against the strict simulator ---------------------------------------


@pytest.mark.parametrize("version", ["3.1", "3.0.1"])
async def test_ven_client_speaks_each_version(version, sim31, sim301, token, ven_token, receiver):
    from dr_coordinator.adapters.vtn_client import VtnClient

    sim, base = (sim31, "/openadr3/3.1.0") if version == "3.1" else (sim301, "/openadr3/3.0.1")
    async with client(sim, base, token) as bl:
        pid = await program(bl, f"p-{version}")
        ven = VtnClient(sim.url(base), ven_token, version=version, client_name="ven-x")  # type: ignore[arg-type]
        try:
            assert await ven.register_ven("ven-x") == "0"
            assert await ven.register_ven("ven-x") == "0"  # taken name: found, not created twice
            await ven.subscribe(receiver.url, "hook-token", pid)
            # 3.1: a VEN hears of and reads a targeted event only through targets granted to it (rules
            # 17-19, tested below), so this event is untargeted; 3.0.1 has no object privacy
            targets = None if version == "3.1" else [{"type": "RESOURCE_NAME", "values": ["fac-1"]}]
            created = (await bl.post("/events", json=event31(pid, targets))).json()
            got = await receiver.wait_for(1)
            assert json.loads(got[0]["body"])["operation"] == ("CREATE" if version == "3.1" else "POST")
            assert [e["id"] for e in await ven.poll_events(pid)] == [created["id"]]
            descriptor = {"payloadType": "USAGE", "objectType": "REPORT_PAYLOAD_DESCRIPTOR"}
            resources = [
                {"resourceName": "fac-1", "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [1]}]}]}
            ]
            report = {
                "programID": pid,
                "eventID": created["id"],
                "clientName": "ven-x",
                "payloadDescriptors": [descriptor],
                "resources": resources,
            }
            rid = await ven.post_report(report)
            assert await ven.put_report(rid, {**report, "reportName": "final"}) == rid
            found = await ven.find_reports(created["id"])
            assert [r["reportName"] for r in found] == ["final"]
        finally:
            await ven.close()
            await bl.post(sim.url("/_admin/restart"))


async def test_ven_client_uses_oauth2_and_refreshes_a_token_the_vtn_forgot(sim31):
    from dr_coordinator.adapters.vtn_client import OAuthClient, VtnClient, VtnRejectedError

    base = sim31.url("/openadr3/3.1.0")
    ven = VtnClient(base, None, oauth=OAuthClient(OAUTH_ID, OAUTH_SECRET))
    bad = VtnClient(base, None, oauth=OAuthClient(OAUTH_ID, "wrong"))
    try:
        assert await ven.programs() != []  # the seeded program, read with a token from /auth/token
        async with httpx.AsyncClient(timeout=5) as admin:
            (await admin.post(sim31.url("/_admin/restart"))).raise_for_status()  # issued tokens forgotten
        assert [p["id"] for p in await ven.programs()] == ["default"]  # 401 -> new token -> retried once
        with pytest.raises(VtnRejectedError) as refused:
            await bad.programs()
        assert refused.value.status == 401
    finally:
        await ven.close()
        await bad.close()


# --- 3.1 object privacy: a VEN sees only what is targeted to it (decision 0410 rules 17-19) ---------


async def test_31_a_ven_reads_only_the_events_targeted_to_it_and_only_by_naming_them(v31, sim31, settings, receiver):
    """The platform's VEN token is the VEN ``platform-ven`` (the seed token is the utility's business
    logic). Business logic grants it targets on its ven object (site-a) and on a resource (res-a)."""
    pid = await program(v31)
    ven = await v31.post(
        "/vens",
        json={"objectType": "BL_VEN_REQUEST", "clientID": "platform-ven", "venName": "pv", "targets": ["site-a"]},
    )
    assert ven.status_code == 201, ven.text
    resource = {
        "objectType": "BL_RESOURCE_REQUEST",
        "clientID": "platform-ven",
        "resourceName": "r1",
        "venID": ven.json()["id"],
        "targets": ["res-a"],
    }
    assert (await v31.post("/resources", json=resource)).status_code == 201
    ids = {}
    for name, targets in [("open", None), ("ours", ["site-a", "site-b"]), ("theirs", ["site-b"]), ("res", ["res-a"])]:
        ids[name] = (await v31.post("/events", json=event31(pid, targets, eventName=name))).json()["id"]
    async with client(sim31, "/openadr3/3.1.0", settings.dr.vtn_token.get_secret_value()) as ven_client:

        async def names(**params) -> list[tuple[str, list | None]]:
            got = (await ven_client.get("/events", params=params)).json()
            return [(e["eventName"], e.get("targets")) for e in got]

        # naming no targets: only the untargeted event (a VEN must name targets to read targeted objects)
        assert await names() == [("open", None)]
        # naming targets: those granted and carried, and only those targets shown (target hiding)
        asked = {"targets": ["site-a", "site-b", "res-a"]}
        assert await names(**asked) == [("ours", ["site-a"]), ("res", ["res-a"])]
        assert await names(targets=["site-b"]) == []  # named but never granted
        assert (await ven_client.get(f"/events/{ids['theirs']}", params=asked)).status_code == 404
        assert (await ven_client.get(f"/events/{ids['ours']}")).status_code == 404  # targets not named
        shown = (await ven_client.get(f"/events/{ids['ours']}", params={"targets": ["site-a"]})).json()
        assert shown["targets"] == ["site-a"]
        # business logic reads everything, targets whole
        assert [(e["eventName"], e.get("targets")) for e in (await v31.get("/events")).json()] == [
            ("open", None),
            ("ours", ["site-a", "site-b"]),
            ("theirs", ["site-b"]),
            ("res", ["res-a"]),
        ]
        # only business logic grants targets; a VEN reads its own ven objects only
        sneaky = {"objectType": "VEN_VEN_REQUEST", "venName": "pv2", "targets": ["site-b"]}
        assert (await ven_client.post("/vens", json=sneaky)).status_code == 403
        other = {"objectType": "BL_VEN_REQUEST", "clientID": "x", "venName": "o"}
        assert (await v31.post("/vens", json=other)).status_code == 201
        assert [v["venName"] for v in (await ven_client.get("/vens")).json()] == ["pv"]

        # notifications: a VEN's subscription hears about targeted events through the targets it names
        ops = [{"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": receiver.url}]
        for targets in (["site-a", "site-b"], None):
            sub = {"clientName": "pv", "objectOperations": ops, **({"targets": targets} if targets else {})}
            assert (await ven_client.post("/subscriptions", json=sub)).status_code == 201
        for name, targets in [("n-ours", ["site-a"]), ("n-theirs", ["site-b"]), ("n-open", None)]:
            (await v31.post("/events", json=event31(pid, targets, eventName=name))).raise_for_status()
    # strict modes deliver before answering: what arrived is all that will
    got = [json.loads(r["body"])["object"] for r in receiver.requests]
    assert [(o["eventName"], o.get("targets")) for o in got] == [("n-ours", ["site-a"]), ("n-open", None)]


async def test_301_has_no_object_privacy_and_filters_values_map_targets(v301, sim301, settings):
    """3.0.1 gives every read ``read_all``: the platform's VEN token lists targeted events without naming
    targets; a ``targets`` query filters on the valuesMap values."""
    pid = await program(v301)
    body = event31(pid, [{"type": "RESOURCE_NAME", "values": ["fac-1"]}])
    (await v301.post("/events", json=body)).raise_for_status()
    (await v301.post("/events", json=event31(pid))).raise_for_status()
    async with client(sim301, "/openadr3/3.0.1", settings.dr.vtn_token.get_secret_value()) as ven:
        assert len((await ven.get("/events")).json()) == 2
        filtered = (await ven.get("/events", params={"targets": ["fac-1"]})).json()
        assert [e["targets"] for e in filtered] == [[{"type": "RESOURCE_NAME", "values": ["fac-1"]}]]
        assert (await ven.get("/events", params={"targets": ["fac-2"]})).json() == []
