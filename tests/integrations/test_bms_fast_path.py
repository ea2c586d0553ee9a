"""The BMS simulator's kept-alive connections and the gateway's command path without zeep per call
(decisions 1020, 1021): real simulator processes, real SOAP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
import zeep
from lxml import etree

from dr_coordinator.adapters.bms_soap import CommandCodec, SoapBmsGateway, command_codecs
from dr_coordinator.config import DrSettings
from dr_coordinator.ports import BmsRejectedError
from schemas.dr import BmsAction
from sim.bms.process import SimulatorProcess
from tests.integrations.test_bms_soap import command
from tests.waiting import wait_until_sync

SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"RestoreZone"'}


def restore_envelope(zone_id: str, key: str) -> bytes:
    return (
        '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/"><soap-env:Body>'
        f'<ns0:RestoreZone xmlns:ns0="urn:energy-platform:bms:v1"><ns0:zone_id>{zone_id}</ns0:zone_id>'
        f"<ns0:idempotency_key>{key}</ns0:idempotency_key></ns0:RestoreZone></soap-env:Body></soap-env:Envelope>"
    ).encode()


@pytest.fixture(scope="module")
def strict_sim(stack, tmp_path_factory, bms_redis_prefix) -> Iterator[SimulatorProcess]:
    """A simulator that closes a connection after 3 requests or 0.5 s idle."""
    from energy.stack.process import free_port

    args = ("--redis-prefix", bms_redis_prefix, "--max-requests-per-connection", "3", "--idle-timeout-s", "0.5")
    with SimulatorProcess.start("bms", free_port(), *args, log_dir=tmp_path_factory.mktemp("bms-ka")) as sim:
        yield sim


def connections(sim: SimulatorProcess) -> dict[str, int]:
    with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as admin:
        return dict(admin.get(sim.url("/_admin/connections")).json())


def wait_until_no_connection_open(sim: SimulatorProcess, timeout_s: float = 20.0) -> None:
    wait_until_sync(
        lambda: connections(sim),
        timeout_s=timeout_s,
        what="idle connections closed by the BMS",
        interval_s=0.05,
        accept=lambda c: c["open"] <= 1,  # the admin request's own connection is the one left
    )


def test_connections_are_kept_alive_and_closed_after_max_requests(strict_sim, uid):
    opened_before = connections(strict_sim)["opened"]
    closes = []
    with httpx.Client(timeout=10) as client:
        for i in range(7):
            resp = client.post(
                strict_sim.url("/bms/fac-003"),
                content=restore_envelope("hvac-1", f"ka-{uid}-{i}"),
                headers=SOAP_HEADERS,
            )
            assert resp.status_code == 200, resp.text
            closes.append(resp.headers.get("connection"))
    # 7 requests, 3 per connection: the 3rd and 6th answers announce the close, 3 connections in all
    assert closes == [None, None, "close", None, None, "close", None]
    # +3 for the SOAP calls, +1 for the admin request reading the figure
    assert connections(strict_sim)["opened"] - opened_before == 4


def test_a_body_without_content_length_is_refused_and_the_connection_closed(strict_sim):
    with socket.create_connection(("127.0.0.1", strict_sim.port), timeout=10) as sock:
        sock.sendall(
            b"POST /bms/fac-003 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: text/xml\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):  # the server closes: recv returns b"" at the end
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert b"Connection: close" in answer


async def test_the_gateway_copes_with_connections_the_bms_closes(strict_sim, uid):
    """Every 3rd answer closes its connection and idle ones are closed after 0.5 s: each call
    still succeeds (the gateway never sends on a connection the BMS announced it closes)."""
    gateway = SoapBmsGateway(DrSettings())
    url = strict_sim.url("/bms/fac-004")
    try:
        for i in range(7):
            cmd = command("fac-004", "hvac-2", BmsAction.SET_SETPOINT, 23.0 + i / 10, f"{uid}:{i}")
            ack = await gateway.execute(url, cmd)
            assert ack.idempotency_key == cmd.idempotency_key and ack.duplicate is False
            if i == 4:
                wait_until_no_connection_open(strict_sim)  # the BMS closed our kept connection
    finally:
        await gateway.close()


@pytest.fixture(scope="module")
def zeep_binding(bms_sim: SimulatorProcess) -> tuple[zeep.Client, object]:
    client = zeep.Client(bms_sim.url("/bms/fac-005?wsdl"))
    service = next(iter(client.wsdl.services.values()))
    return client, next(iter(service.ports.values())).binding


@pytest.mark.parametrize(
    ("operation", "values"),
    [
        ("SetSetpoint", {"zone_id": "hvac-1", "setpoint_c": 24.5, "idempotency_key": "k<&>'\"1"}),
        ("SetLightingLevel", {"zone_id": "light-1", "pct": 60.0, "idempotency_key": "k2"}),
        ("RestoreZone", {"zone_id": "hvac-1", "idempotency_key": "k3 & more"}),
    ],
)
def test_the_command_envelope_is_the_one_zeep_builds_from_the_wsdl(zeep_binding, operation, values):
    client, binding = zeep_binding
    codec = CommandCodec.build(client, binding, operation)
    expected, expected_headers = binding._create(operation, (), dict(values), client=client, options={"address": ""})
    ours = etree.fromstring(codec.envelope(values))
    assert etree.tostring(ours, method="c14n") == etree.tostring(expected, method="c14n")
    assert codec.headers == {str(k): str(v) for k, v in expected_headers.items()}
    assert codec.headers["SOAPAction"] == f'"{operation}"'


def test_every_command_operation_of_the_simulator_has_a_fast_path(zeep_binding):
    client, binding = zeep_binding
    assert set(command_codecs(client, binding)) == {"SetSetpoint", "SetLightingLevel", "RestoreZone"}


def test_the_answer_reads_as_zeep_reads_it_faults_included(bms_sim, zeep_binding, uid):
    client, binding = zeep_binding
    codec = CommandCodec.build(client, binding, "RestoreZone")
    operation = binding.get("RestoreZone")
    url = bms_sim.url("/bms/fac-005")
    for zone_id in ("hvac-3", "hvac-99"):  # an answer, then a Client fault (no such zone)
        body = codec.envelope({"zone_id": zone_id, "idempotency_key": f"parse-{uid}-{zone_id}"})
        raw = httpx.post(url, content=body, headers=codec.headers, timeout=10)
        try:
            theirs = binding.process_reply(client, operation, raw)
        except zeep.exceptions.Fault as fault:
            with pytest.raises(zeep.exceptions.Fault) as ours:
                codec.reply(raw.content)
            assert (ours.value.code, ours.value.message) == (fault.code, fault.message)
            assert zone_id == "hvac-99" and raw.status_code == 500
            continue
        reply = codec.reply(raw.content)
        assert zone_id == "hvac-3"
        assert reply.idempotency_key == theirs.idempotency_key == f"parse-{uid}-hvac-3"
        assert reply.executed_at == theirs.executed_at and reply.executed_at is not None
        assert reply.bms_reference == theirs.bms_reference and reply.bms_reference.startswith("fac-005/")
        assert reply.duplicate is theirs.duplicate is False


@pytest.mark.parametrize(
    "content",
    [
        b"not xml",
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><x/></e:Body></e:Envelope>',
    ],
)
def test_an_answer_of_another_shape_is_an_error_not_an_ack(zeep_binding, content):
    client, binding = zeep_binding
    codec = CommandCodec.build(client, binding, "RestoreZone")
    with pytest.raises(zeep.exceptions.Error):
        codec.reply(content)


async def test_a_client_fault_on_the_fast_path_is_a_rejection(bms_sim, uid):
    gateway = SoapBmsGateway(DrSettings())
    try:
        cmd = command("fac-005", "hvac-99", BmsAction.SET_SETPOINT, 24.0, uid)
        with pytest.raises(BmsRejectedError, match="UnknownZone"):
            await gateway.execute(bms_sim.url("/bms/fac-005"), cmd)
    finally:
        await gateway.close()
