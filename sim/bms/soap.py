"""The SOAP interface of the simulated BMS (spyne): the WSDL and its operations.

One spyne ``Application`` per facility, so each facility's WSDL names its own address
(``/bms/<facility_id>``); every application shares the same service class and reaches the
controllers and the facility through the WSGI environ set by :mod:`sim.bms.server`.
Validation errors are ``Client.<code>`` faults, injected and unexpected errors ``Server.*`` faults.
"""

from __future__ import annotations

import math
from typing import Any

import spyne.const
from spyne import (
    Application,
    Boolean,
    ComplexModel,
    DateTime,
    Double,
    Fault,
    Integer,
    Iterable,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from sim.bms.model import BmsControllers, CommandRecord, CommandRejected, CommandResult, ZoneReading

# spyne runs a full gc.collect() after a request at most once a second (MIN_GC_INTERVAL). With a
# thousand buildings' applications in one process, each full collection stalled every request
# thread (a fifth of the simulator's time in the DR benchmark's profile); Python's own
# generational collector is enough for a long-running server.
spyne.const.MIN_GC_INTERVAL = math.inf

TNS = "urn:energy-platform:bms:v1"
ENV_CONTROLLERS = "bms.controllers"
ENV_FACILITY = "bms.facility_id"
ENV_INJECT_FAULT = "bms.inject_server_fault"

ZoneId = Unicode(min_len=1, max_len=64, min_occurs=1, nillable=False)
IdempotencyKey = Unicode(min_len=1, max_len=200, min_occurs=1, nillable=False)
RequiredDouble = Double(min_occurs=1, nillable=False)


class ZoneInfo(ComplexModel):
    __namespace__ = TNS
    zone_id = Unicode
    kind = Unicode
    name = Unicode
    rated_kw = Double
    normal_setpoint_c = Double
    max_setpoint_c = Double
    min_lighting_pct = Double
    shed_priority = Integer
    setpoint_c = Double
    lighting_pct = Double
    overridden = Boolean


class CommandAck(ComplexModel):
    __namespace__ = TNS
    idempotency_key = Unicode
    operation = Unicode
    zone_id = Unicode
    executed_at = DateTime
    bms_reference = Unicode
    duplicate = Boolean


class CommandStatus(ComplexModel):
    __namespace__ = TNS
    idempotency_key = Unicode
    status = Unicode  # executed | not_found
    operation = Unicode
    zone_id = Unicode
    executed_at = DateTime
    bms_reference = Unicode


class PingReply(ComplexModel):
    __namespace__ = TNS
    facility_id = Unicode
    status = Unicode
    server_time = DateTime


def _context(ctx: Any) -> tuple[BmsControllers, str, dict[str, Any]]:
    env: dict[str, Any] = ctx.transport.req_env
    if env.get(ENV_INJECT_FAULT):
        raise Fault(faultcode="Server.Unavailable", faultstring="injected fault: BMS controller busy")
    return env[ENV_CONTROLLERS], env[ENV_FACILITY], env


def _zone_info(reading: ZoneReading) -> ZoneInfo:
    z = reading.zone
    return ZoneInfo(
        zone_id=z.zone_id,
        kind=z.kind,
        name=z.name,
        rated_kw=z.rated_kw,
        normal_setpoint_c=z.normal_setpoint_c,
        max_setpoint_c=z.max_setpoint_c,
        min_lighting_pct=z.min_lighting_pct,
        shed_priority=z.shed_priority,
        setpoint_c=reading.setpoint_c,
        lighting_pct=reading.lighting_pct,
        overridden=reading.overridden,
    )


def _ack(result: CommandResult) -> CommandAck:
    r = result.record
    return CommandAck(
        idempotency_key=r.idempotency_key,
        operation=r.operation,
        zone_id=r.zone_id,
        executed_at=r.executed_at,
        bms_reference=r.bms_reference,
        duplicate=result.duplicate,
    )


def _client_fault(exc: CommandRejected) -> Fault:
    return Fault(faultcode=f"Client.{exc.code}", faultstring=exc.message)


def _execute(ctx: Any, operation: str, zone_id: str, value: float | None, key: str) -> CommandAck:
    controllers, facility_id, env = _context(ctx)
    if not zone_id or not key:
        raise Fault(faultcode="Client.MissingArgument", faultstring="zone_id and idempotency_key are required")
    try:
        result = controllers.execute(facility_id, operation, zone_id, value, key, env.get("HTTP_TRACEPARENT"))
    except CommandRejected as exc:
        raise _client_fault(exc) from exc
    return _ack(result)


class BmsService(ServiceBase):  # type: ignore[misc]
    @rpc(_returns=PingReply)  # type: ignore[misc]
    def Ping(ctx: Any) -> PingReply:
        controllers, facility_id, _ = _context(ctx)
        return PingReply(facility_id=facility_id, status="ok", server_time=controllers.clock())

    @rpc(_returns=Iterable(ZoneInfo))  # type: ignore[misc]
    def ListZones(ctx: Any) -> list[ZoneInfo]:
        controllers, facility_id, _ = _context(ctx)
        return [_zone_info(r) for r in controllers.zone_readings(facility_id)]

    @rpc(ZoneId, _returns=ZoneInfo)  # type: ignore[misc]
    def GetZoneState(ctx: Any, zone_id: str) -> ZoneInfo:
        controllers, facility_id, _ = _context(ctx)
        try:
            return _zone_info(controllers.zone_reading(facility_id, zone_id))
        except CommandRejected as exc:
            raise _client_fault(exc) from exc

    @rpc(ZoneId, RequiredDouble, IdempotencyKey, _returns=CommandAck)  # type: ignore[misc]
    def SetSetpoint(ctx: Any, zone_id: str, setpoint_c: float, idempotency_key: str) -> CommandAck:
        return _execute(ctx, "SetSetpoint", zone_id, setpoint_c, idempotency_key)

    @rpc(ZoneId, RequiredDouble, IdempotencyKey, _returns=CommandAck)  # type: ignore[misc]
    def SetLightingLevel(ctx: Any, zone_id: str, pct: float, idempotency_key: str) -> CommandAck:
        return _execute(ctx, "SetLightingLevel", zone_id, pct, idempotency_key)

    @rpc(ZoneId, IdempotencyKey, _returns=CommandAck)  # type: ignore[misc]
    def RestoreZone(ctx: Any, zone_id: str, idempotency_key: str) -> CommandAck:
        return _execute(ctx, "RestoreZone", zone_id, None, idempotency_key)

    @rpc(IdempotencyKey, _returns=CommandStatus)  # type: ignore[misc]
    def GetCommandStatus(ctx: Any, idempotency_key: str) -> CommandStatus:
        controllers, facility_id, _ = _context(ctx)
        record: CommandRecord | None = controllers.status(facility_id, idempotency_key)
        if record is None:
            return CommandStatus(idempotency_key=idempotency_key, status="not_found")
        return CommandStatus(
            idempotency_key=idempotency_key,
            status="executed",
            operation=record.operation,
            zone_id=record.zone_id,
            executed_at=record.executed_at,
            bms_reference=record.bms_reference,
        )


def build_wsgi_app() -> WsgiApplication:
    app = Application(
        [BmsService],
        tns=TNS,
        name="BmsService",
        in_protocol=Soap11(validator="soft"),
        out_protocol=Soap11(),
    )
    return WsgiApplication(app)
