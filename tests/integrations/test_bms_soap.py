"""The BMS SOAP simulator and SoapBmsGateway (DR-4, DR-6, OPS-1): real processes, real SOAP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import zeep
from redis.asyncio import Redis

from dr_coordinator.adapters.bms_soap import SoapBmsGateway
from dr_coordinator.config import DrSettings
from dr_coordinator.ports import BmsRejectedError, BmsUnavailableError
from energy.fleet import build_fleet
from energy.resilience import breaker_is_open
from schemas.dr import BmsAction, BmsCommand
from sim.bms.process import SimulatorProcess
from sim.building_model import hvac_factor, zone_state_key

OPERATIONS = {"Ping", "ListZones", "GetZoneState", "SetSetpoint", "SetLightingLevel", "RestoreZone", "GetCommandStatus"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def command(facility_id: str, zone_id: str, action: BmsAction, value: float | None, uid: str) -> BmsCommand:
    event_id = uuid.uuid4()
    return BmsCommand(
        command_id=uuid.uuid4(),
        idempotency_key=f"{event_id}:{facility_id}:{zone_id}:{action.value}:{uid}",
        dr_event_id=event_id,
        facility_id=facility_id,
        zone_id=zone_id,
        action=action,
        value=value,
    )


@pytest.fixture
async def gateway():
    gw = SoapBmsGateway(DrSettings())
    yield gw
    await gw.close()


def endpoint(sim: SimulatorProcess, facility_id: str) -> str:
    return sim.url(f"/bms/{facility_id}")


def test_wsdl_is_served_per_facility_and_parsed_by_zeep(bms_sim):
    for facility_id in ("fac-001", "fac-020"):
        resp = httpx.get(endpoint(bms_sim, facility_id) + "?wsdl", timeout=5)
        assert resp.status_code == 200
        assert f"/bms/{facility_id}" in resp.text  # soap:address names the facility's own endpoint
        client = zeep.Client(endpoint(bms_sim, facility_id) + "?wsdl")
        service = next(iter(client.wsdl.services.values()))
        port = next(iter(service.ports.values()))
        assert set(port.binding._operations) == OPERATIONS
    assert httpx.get(bms_sim.url("/bms/fac-999?wsdl"), timeout=5).status_code == 404


async def test_every_operation_round_trips_through_the_gateway(bms_sim, bms_admin, gateway, uid, finished_spans):
    url = endpoint(bms_sim, "fac-002")
    facility = next(f for f in build_fleet() if f.facility_id == "fac-002")
    assert await gateway.ping(url) is True

    zones = await gateway.zone_states(url)
    assert [z.zone_id for z in zones] == [z.zone_id for z in facility.zones]
    assert {z.kind for z in zones} == {"hvac", "lighting"}

    setpoint = command("fac-002", "hvac-2", BmsAction.SET_SETPOINT, 23.5, uid)
    ack = await gateway.execute(url, setpoint, trace_parent=TRACEPARENT)
    assert ack.idempotency_key == setpoint.idempotency_key and ack.duplicate is False
    assert ack.executed_at.tzinfo is not None and ack.bms_reference.startswith("fac-002/")
    assert await gateway.command_status(url, setpoint.idempotency_key) == "executed"
    assert await gateway.command_status(url, f"never-sent-{uid}") is None

    lighting = command("fac-002", "light-1", BmsAction.SET_LIGHTING, 60.0, uid)
    assert (await gateway.execute(url, lighting)).duplicate is False
    states = {z.zone_id: z for z in await gateway.zone_states(url)}
    assert states["hvac-2"].setpoint_c == 23.5 and states["hvac-2"].overridden
    assert states["light-1"].lighting_pct == 60.0 and states["light-1"].overridden

    for zone_id in ("hvac-2", "light-1"):
        await gateway.execute(url, command("fac-002", zone_id, BmsAction.RESTORE, None, uid))
    states = {z.zone_id: z for z in await gateway.zone_states(url)}
    assert not states["hvac-2"].overridden and states["hvac-2"].setpoint_c == 22.0
    assert not states["light-1"].overridden and states["light-1"].lighting_pct == 100.0

    log = bms_admin.get("/_admin/commands", params={"facility_id": "fac-002"}).json()
    sent = next(r for r in log if r["idempotency_key"] == setpoint.idempotency_key)
    # W3C trace context crossed the SOAP call as an HTTP header: the client span of the call, a child
    # of the caller's span in the caller's trace
    _, trace_id, parent_span_id, flags = TRACEPARENT.split("-")
    version, sent_trace, sent_span, sent_flags = sent["trace_parent"].split("-")
    assert (version, sent_trace, sent_flags) == ("00", trace_id, flags) and sent_span != parent_span_id
    [client_span] = [
        sp for sp in finished_spans.get_finished_spans() if format(sp.context.span_id, "016x") == sent_span
    ]
    assert client_span.name == "bms.soap.SetSetpoint" and client_span.kind.name == "CLIENT"
    assert format(client_span.parent.span_id, "016x") == parent_span_id


async def test_zone_state_is_written_to_redis_for_the_meter_simulator(stack, port, tmp_path, settings, uid):
    # Its own simulator with the default prefix: the very keys the meter simulator reads.
    gateway = SoapBmsGateway(DrSettings())
    redis = Redis.from_url(settings.redis.url(), socket_timeout=2)
    with SimulatorProcess.start("bms", port, log_dir=tmp_path) as sim:
        url = endpoint(sim, "fac-011")
        try:
            await gateway.execute(url, command("fac-011", "hvac-1", BmsAction.SET_SETPOINT, 25.0, uid))
            state = json.loads(await redis.hget(zone_state_key("fac-011"), "hvac-1"))
            assert state == {"setpoint_c": 25.0, "lighting_pct": None}
            assert hvac_factor(state["setpoint_c"], 22.0) < 1.0  # the meter simulator's load drops
        finally:
            await gateway.execute(url, command("fac-011", "hvac-1", BmsAction.RESTORE, None, uid))
            state = json.loads(await redis.hget(zone_state_key("fac-011"), "hvac-1"))
            await redis.aclose()
            await gateway.close()
    assert hvac_factor(state["setpoint_c"], 22.0) == 1.0


async def test_concurrent_duplicate_commands_execute_once_per_idempotency_key(bms_sim, bms_admin, uid):
    url = endpoint(bms_sim, "fac-004")
    cmd = command("fac-004", "hvac-1", BmsAction.SET_SETPOINT, 23.5, uid)
    gateways = [SoapBmsGateway(DrSettings()) for _ in range(5)]  # five workers racing on the same command
    try:
        acks = await asyncio.gather(*(gw.execute(url, cmd) for gw in gateways for _ in range(10)))
    finally:
        for gw in gateways:
            await gw.close()
    assert len(acks) == 50
    assert sum(not a.duplicate for a in acks) == 1
    assert len({a.bms_reference for a in acks}) == 1
    assert bms_admin.get("/_admin/applied", params={"facility_id": "fac-004"}).json()[cmd.idempotency_key] == 1
    assert bms_admin.get("/_admin/executions", params={"facility_id": "fac-004"}).json()[cmd.idempotency_key] == 50
    assert bms_admin.get("/_admin/requests", params={"facility_id": "fac-004"}).json()[cmd.idempotency_key] == 50


async def test_retry_after_a_lost_answer_is_answered_duplicate_and_not_executed_twice(bms_sim, bms_admin, gateway, uid):
    url = endpoint(bms_sim, "fac-005")
    cmd = command("fac-005", "light-1", BmsAction.SET_LIGHTING, 70.0, uid)
    bms_admin.post("/_admin/faults", json={"facility_id": "fac-005", "ack_loss_rate": 1.0}).raise_for_status()
    with pytest.raises(BmsUnavailableError, match="HTTP 503"):
        await gateway.execute(url, cmd)
    bms_admin.post("/_admin/faults", json={"facility_id": "fac-005"}).raise_for_status()
    retried = await gateway.execute(url, cmd)
    assert retried.duplicate is True
    assert bms_admin.get("/_admin/applied", params={"facility_id": "fac-005"}).json()[cmd.idempotency_key] == 1
    # every call was executed (the lost answers after executing), the later ones as duplicates
    received = bms_admin.get("/_admin/requests", params={"facility_id": "fac-005"}).json()[cmd.idempotency_key]
    executed = bms_admin.get("/_admin/executions", params={"facility_id": "fac-005"}).json()[cmd.idempotency_key]
    assert executed == received >= 2


async def test_validation_fault_is_rejected_without_retry_and_does_not_trip_the_breaker(
    bms_sim, bms_admin, gateway, uid
):
    url = endpoint(bms_sim, "fac-006")
    fail_max = DrSettings().bms_breaker_fail_max
    keys = []
    for i in range(fail_max + 1):
        bad = command("fac-006", "hvac-1", BmsAction.SET_SETPOINT, 40.0, f"{uid}-{i}")  # above the zone's max
        keys.append(bad.idempotency_key)
        with pytest.raises(BmsRejectedError, match="SetpointOutOfRange"):
            await gateway.execute(url, bad)
    with pytest.raises(BmsRejectedError, match="UnknownZone"):
        await gateway.execute(url, command("fac-006", "hvac-99", BmsAction.SET_SETPOINT, 23.0, uid))
    received = bms_admin.get("/_admin/requests", params={"facility_id": "fac-006"}).json()
    assert [received[k] for k in keys] == [1] * len(keys)  # one attempt each: no retry of a refusal
    assert bms_admin.get("/_admin/executions", params={"facility_id": "fac-006"}).json().keys().isdisjoint(keys)
    assert not breaker_is_open(gateway.breaker(url))
    assert (await gateway.execute(url, command("fac-006", "hvac-1", BmsAction.RESTORE, None, uid))).duplicate is False


async def test_unknown_facility_endpoint_is_rejected(bms_sim, gateway):
    with pytest.raises(BmsRejectedError, match="HTTP 404"):
        await gateway.zone_states(endpoint(bms_sim, "fac-999"))


async def test_injected_server_fault_is_unavailable_and_nothing_executes(bms_sim, bms_admin, gateway, uid):
    url = endpoint(bms_sim, "fac-007")
    await gateway.ping(url)  # WSDL loaded before the faults start
    bms_admin.post("/_admin/faults", json={"facility_id": "fac-007", "fault_rate": 1.0}).raise_for_status()
    cmd = command("fac-007", "hvac-1", BmsAction.SET_SETPOINT, 23.0, uid)
    with pytest.raises(BmsUnavailableError, match="Server"):
        await gateway.execute(url, cmd)
    assert cmd.idempotency_key not in bms_admin.get("/_admin/executions").json()


async def test_latency_beyond_the_total_timeout_is_unavailable_bounded_by_the_timeout(bms_sim, bms_admin, gateway, uid):
    url = endpoint(bms_sim, "fac-008")
    await gateway.ping(url)
    total = DrSettings().bms_total_timeout_s
    bms_admin.post("/_admin/faults", json={"facility_id": "fac-008", "latency_ms": (total + 3) * 1000})
    t0 = time.monotonic()
    with pytest.raises(BmsUnavailableError):
        await gateway.execute(url, command("fac-008", "hvac-1", BmsAction.SET_SETPOINT, 23.0, uid))
    elapsed = time.monotonic() - t0
    assert total - 0.5 <= elapsed < total + 1.5


async def test_bms_down_opens_the_breaker_after_fail_max_then_calls_fail_fast(bms_sim, bms_admin, uid):
    settings = DrSettings(bms_breaker_fail_max=3, bms_breaker_reset_s=1.0)
    gateway = SoapBmsGateway(settings)
    url = endpoint(bms_sim, "fac-009")
    try:
        assert await gateway.ping(url)
        bms_admin.post("/_admin/faults", json={"facility_id": "fac-009", "down": True}).raise_for_status()
        hits_before = bms_admin.get("/_admin/hits").json()["fac-009"]
        cmd = command("fac-009", "hvac-1", BmsAction.SET_SETPOINT, 23.0, uid)
        errors = []
        for _ in range(settings.bms_breaker_fail_max):
            with pytest.raises(BmsUnavailableError) as info:
                await gateway.execute(url, cmd)
            errors.append(str(info.value))
        assert all("503" in e or "circuit open" in e for e in errors)
        assert breaker_is_open(gateway.breaker(url))
        hits_when_open = bms_admin.get("/_admin/hits").json()["fac-009"]
        assert hits_when_open - hits_before == settings.bms_breaker_fail_max
        for _ in range(5):
            with pytest.raises(BmsUnavailableError, match="circuit open"):
                await gateway.execute(url, cmd)
        assert bms_admin.get("/_admin/hits").json()["fac-009"] == hits_when_open  # failed fast: no request sent

        bms_admin.post("/_admin/faults", json={"facility_id": "fac-009"}).raise_for_status()
        await asyncio.sleep(settings.bms_breaker_reset_s + 0.2)  # the reset time is the subject: half-open after it
        ack = await gateway.execute(url, cmd)  # half-open trial succeeds and closes the breaker
        assert ack.duplicate is False and not breaker_is_open(gateway.breaker(url))
    finally:
        await gateway.close()


@pytest.mark.chaos
async def test_killed_bms_process_is_unavailable_and_the_command_runs_once_after_restart(
    stack, port, tmp_path, bms_redis_prefix, uid
):
    gateway = SoapBmsGateway(DrSettings(bms_breaker_fail_max=100))
    prefix = ("--redis-prefix", bms_redis_prefix)
    sim = SimulatorProcess.start("bms", port, *prefix, log_dir=tmp_path)
    url = endpoint(sim, "fac-010")
    cmd = command("fac-010", "hvac-3", BmsAction.SET_SETPOINT, 24.0, uid)
    try:
        assert (await gateway.execute(url, cmd)).duplicate is False
        sim.kill()
        t0 = time.monotonic()
        with pytest.raises(BmsUnavailableError):
            await gateway.execute(url, cmd)
        assert time.monotonic() - t0 < DrSettings().bms_total_timeout_s  # refused, not hanging
        assert await gateway.ping(url) is False
        sim = SimulatorProcess.start("bms", port, *prefix, log_dir=tmp_path)
        assert await gateway.ping(url) is True
        restore = command("fac-010", "hvac-3", BmsAction.RESTORE, None, uid)
        assert (await gateway.execute(url, restore)).duplicate is False
        executions = httpx.get(sim.url("/_admin/executions"), timeout=5).json()
        assert executions == {restore.idempotency_key: 1}
    finally:
        sim.stop()
        await gateway.close()


def test_admin_rejects_bad_fault_settings_with_a_reason(bms_admin):
    for body, reason in (
        ({"facility_id": "fac-999"}, "unknown facility_id"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"fault_rate": 2}, "fault_rate"),
        ({"down": "yes"}, "down"),
        ({"surprise": 1}, "unknown fields"),
    ):
        resp = bms_admin.post("/_admin/faults", json=body)
        assert resp.status_code == 400 and reason in resp.json()["error"]


async def test_current_trace_context_is_carried_when_no_traceparent_is_given(bms_sim, bms_admin, gateway, uid):
    from energy.observability.tracing import new_trace, use_trace

    cmd = command("fac-012", "light-2", BmsAction.SET_LIGHTING, 80.0, uid)
    with use_trace(new_trace()) as ctx:
        await gateway.execute(endpoint(bms_sim, "fac-012"), cmd)
    log = bms_admin.get("/_admin/commands", params={"facility_id": "fac-012"}).json()
    sent = next(r for r in log if r["idempotency_key"] == cmd.idempotency_key)
    assert sent["trace_parent"].split("-")[1] == ctx.trace_id


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (b"<not xml", "Client.XMLSyntaxError"),
        (
            b'<?xml version="1.0"?><e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
            b'xmlns:b="urn:energy-platform:bms:v1"><e:Body><b:SetSetpoint><b:zone_id>hvac-1</b:zone_id>'
            b"<b:setpoint_c>abc</b:setpoint_c><b:idempotency_key>k</b:idempotency_key></b:SetSetpoint>"
            b"</e:Body></e:Envelope>",
            "Client.ValidationError",
        ),
        (
            b'<?xml version="1.0"?><e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
            b'xmlns:b="urn:energy-platform:bms:v1"><e:Body><b:SelfDestruct/></e:Body></e:Envelope>',
            "Client.ResourceNotFound",
        ),
    ],
)
def test_malformed_soap_requests_get_client_faults_and_execute_nothing(bms_sim, bms_admin, body, fault):
    before = bms_admin.get("/_admin/executions", params={"facility_id": "fac-013"}).json()
    resp = httpx.post(endpoint(bms_sim, "fac-013"), content=body, headers={"Content-Type": "text/xml"}, timeout=5)
    assert resp.status_code == 500  # SOAP 1.1 carries every fault with HTTP 500
    assert f"<faultcode>soap11env:{fault}</faultcode>" in resp.text
    assert bms_admin.get("/_admin/executions", params={"facility_id": "fac-013"}).json() == before
    assert bms_admin.get("/healthz").status_code == 200


async def test_wsdl_that_fails_to_load_is_not_cached_and_loads_once_the_bms_is_back(bms_sim, bms_admin, uid):
    gateway = SoapBmsGateway(DrSettings(bms_breaker_fail_max=10))
    url = endpoint(bms_sim, "fac-014")
    try:
        bms_admin.post("/_admin/faults", json={"facility_id": "fac-014", "down": True}).raise_for_status()
        with pytest.raises(BmsUnavailableError, match="503"):
            await gateway.zone_states(url)  # the very first call: the WSDL itself cannot be fetched
        bms_admin.post("/_admin/faults", json={"facility_id": "fac-014"}).raise_for_status()
        ack = await gateway.execute(url, command("fac-014", "hvac-1", BmsAction.SET_SETPOINT, 23.0, uid))
        assert ack.duplicate is False
    finally:
        await gateway.close()
