"""BMS over SOAP: :class:`SoapBmsGateway` implements :class:`dr_coordinator.ports.BmsGateway` with zeep.

- zeep ``AsyncClient`` over one shared ``httpx.AsyncClient`` (connect timeout
  ``bms_connect_timeout_s``, every call bounded by ``bms_total_timeout_s``);
- the WSDL of each endpoint is loaded once (in a thread: zeep loads WSDLs synchronously) and
  cached; calls go to the endpoint URL itself, whatever address the WSDL names;
- one circuit breaker per endpoint (``bms:<facility_id>``, from ``/bms/<facility_id>``, else
  ``bms:<host:port>``) and one bulkhead per endpoint (``bms_concurrency_per_facility``);
- the W3C ``traceparent`` travels as an HTTP header of each SOAP call;
- foreign errors are translated here: a SOAP ``Client`` fault, or an HTTP 4xx other than
  408/429, is :class:`BmsRejectedError` (never retried, does not trip the breaker); transport
  errors, timeouts, 5xx, ``Server`` faults, unparsable answers and an open breaker are
  :class:`BmsUnavailableError`.

This adapter does NOT retry: the saga's command worker retries ``BmsUnavailableError`` with
backoff, reusing the command's idempotency key, so a retry after a lost answer is answered
``duplicate=True`` by the BMS instead of being executed twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
import zeep
import zeep.exceptions
from aiobreaker import CircuitBreaker
from lxml import etree
from opentelemetry.trace import SpanKind
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsdl import Document

from dr_coordinator.config import DrSettings
from dr_coordinator.ports import BmsAck, BmsRejectedError, BmsUnavailableError, ZoneState
from energy.observability import tracing
from energy.resilience import Bulkhead, BulkheadFullError, CircuitOpenError, guarded_call, make_breaker
from schemas.dr import BmsAction, BmsCommand

log = structlog.get_logger("dr_coordinator.bms_soap")

_TRACE_PARENT: ContextVar[str | None] = ContextVar("bms_soap_traceparent", default=None)
_OPERATIONS = {
    BmsAction.SET_SETPOINT: "SetSetpoint",
    BmsAction.SET_LIGHTING: "SetLightingLevel",
    BmsAction.RESTORE: "RestoreZone",
}
_TRANSIENT_HTTP = {408, 429}


class _TracingTransport(AsyncTransport):  # type: ignore[misc]
    """Adds the current call's ``traceparent`` (a contextvar, so safe across concurrent tasks)."""

    async def post(self, address: str, message: Any, headers: dict[str, str]) -> Any:
        trace_parent = _TRACE_PARENT.get()
        if trace_parent:
            headers = {**headers, "traceparent": trace_parent}
        return await super().post(address, message, headers)


def endpoint_name(endpoint_url: str) -> str:
    """``http://h:p/bms/fac-001`` -> ``fac-001``; any other URL -> ``h:p``."""
    parts = urlsplit(endpoint_url)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) >= 2 and segments[-2] == "bms":
        return segments[-1]
    return parts.netloc


_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def wsdl_identity(content: bytes) -> str | None:
    """A digest of a WSDL document without its endpoint addresses (``<*:address location=...>``),
    so the WSDLs of two buildings with the same BMS interface compare equal; None when the
    document imports or includes others (they resolve against its own URL, so it is not shared)."""
    try:
        root = etree.fromstring(content, _SAFE_XML)
    except etree.XMLSyntaxError:
        return None  # zeep parses it and reports the error as it always did
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        name = etree.QName(element).localname
        if element.get("schemaLocation") is not None or (name in ("import", "include") and element.get("location")):
            return None
        if name == "address" and "location" in element.attrib:
            del element.attrib["location"]
    return hashlib.sha256(etree.tostring(root, method="c14n")).hexdigest()


def _fault_is_client(code: str | None) -> bool:
    # "soap11env:Client.UnknownZone" / "Client" / SOAP 1.2 "Sender"
    local = (code or "").rsplit(":", 1)[-1]
    return local.split(".", 1)[0] in ("Client", "Sender")


def _http_status_error(status: int | None, what: str) -> Exception:
    if status is not None and 400 <= status < 500 and status not in _TRANSIENT_HTTP:
        return BmsRejectedError(f"{what}: HTTP {status}")
    return BmsUnavailableError(f"{what}: HTTP {status}")


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, BmsRejectedError | BmsUnavailableError):
        return exc
    if isinstance(exc, zeep.exceptions.Fault):
        message = f"{what}: SOAP fault {exc.code}: {exc.message}"
        return BmsRejectedError(message) if _fault_is_client(exc.code) else BmsUnavailableError(message)
    if isinstance(exc, zeep.exceptions.TransportError):
        return _http_status_error(exc.status_code, what)
    if isinstance(exc, zeep.exceptions.ValidationError):
        return BmsRejectedError(f"{what}: invalid request: {exc}")
    if isinstance(exc, httpx.HTTPStatusError):
        return _http_status_error(exc.response.status_code, what)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return BmsUnavailableError(f"{what}: timeout ({type(exc).__name__})")
    if isinstance(exc, httpx.HTTPError | OSError | zeep.exceptions.Error):
        return BmsUnavailableError(f"{what}: {type(exc).__name__}: {exc}")
    return exc


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SoapBmsGateway:
    """The BMS gateway of the DR coordinator (one instance per process; close it on stop)."""

    def __init__(self, dr_settings: DrSettings) -> None:
        self._settings = dr_settings
        timeout = httpx.Timeout(dr_settings.bms_total_timeout_s, connect=dr_settings.bms_connect_timeout_s)
        # Keep every connection the worker may use open: with fewer kept alive than in flight, each
        # call beyond them paid a new TCP connection (and the BMS a new thread) at 1,000 facilities.
        in_flight = max(dr_settings.worker_batch, 1)
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits)
        self._wsdl_http = httpx.Client(timeout=timeout)
        self._transport = _TracingTransport(client=self._http, wsdl_client=self._wsdl_http)
        self._services: dict[str, Any] = {}
        # Parsed WSDLs by wsdl_identity: parsing one costs tens of ms of CPU, and a fleet's BMSs of one
        # vendor serve the same document (only the address differs, which we never use).
        self._documents: dict[str, Document] = {}
        self._documents_lock = threading.Lock()
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._bulkheads: dict[str, Bulkhead] = {}

    def breaker(self, endpoint_url: str) -> CircuitBreaker:
        key = endpoint_url.rstrip("/")
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = make_breaker(
                f"bms:{endpoint_name(key)}",
                fail_max=self._settings.bms_breaker_fail_max,
                reset_s=self._settings.bms_breaker_reset_s,
                exclude=[BmsRejectedError],
            )
        return breaker

    def _bulkhead(self, key: str) -> Bulkhead:
        bulkhead = self._bulkheads.get(key)
        if bulkhead is None:
            bulkhead = self._bulkheads[key] = Bulkhead(
                f"bms:{endpoint_name(key)}", self._settings.bms_concurrency_per_facility
            )
        return bulkhead

    async def _service(self, key: str) -> Any:
        service = self._services.get(key)
        if service is not None:
            return service
        lock = self._load_locks.setdefault(key, asyncio.Lock())
        async with lock:
            service = self._services.get(key)
            if service is None:
                service = await asyncio.to_thread(self._load_service, key)
                self._services[key] = service
        return service

    def _load_service(self, key: str) -> Any:
        url = f"{key}?wsdl"
        response = self._wsdl_http.get(url)
        response.raise_for_status()
        identity = wsdl_identity(response.content)
        with self._documents_lock:
            document = self._documents.get(identity) if identity else None
            if document is None:
                document = Document(io.BytesIO(response.content), self._transport, base=url)  # type: ignore[arg-type]
                if identity:
                    self._documents[identity] = document
        client = zeep.AsyncClient(document, transport=self._transport)
        service_def = next(iter(client.wsdl.services.values()))
        port = next(iter(service_def.ports.values()))
        # Call the endpoint we were given: the WSDL's own address may name another host or proxy.
        # (zeep's AsyncClient.create_service returns a synchronous proxy, so build the async one.)
        return AsyncServiceProxy(client, port.binding, address=key)

    async def _call(self, endpoint_url: str, operation: str, trace_parent: str | None = None, **kwargs: Any) -> Any:
        """One SOAP operation as a client span, a child of ``trace_parent`` (or of the current span); the
        BMS gets this span's traceparent in the SOAP header."""
        parent = tracing.parse_traceparent(trace_parent) if trace_parent else None
        attributes = {"bms.endpoint": endpoint_name(endpoint_url.rstrip("/")), "bms.operation": operation}
        with tracing.use_trace(parent, f"bms.soap.{operation}", SpanKind.CLIENT, attributes) as span:
            return await self._call_once(endpoint_url, operation, span.traceparent, **kwargs)

    async def _call_once(self, endpoint_url: str, operation: str, trace_parent: str | None, **kwargs: Any) -> Any:
        key = endpoint_url.rstrip("/")
        name = endpoint_name(key)
        what = f"BMS {name} {operation}"
        if trace_parent is None and (ctx := tracing.current()) is not None:
            trace_parent = ctx.traceparent

        async def attempt() -> Any:
            token = _TRACE_PARENT.set(trace_parent)
            try:
                service = await self._service(key)
                return await getattr(service, operation)(**kwargs)
            except Exception as exc:
                raise _translate(exc, what) from exc
            finally:
                _TRACE_PARENT.reset(token)

        async def guarded() -> Any:
            return await guarded_call(
                f"bms:{name}",
                attempt,
                timeout_s=self._settings.bms_total_timeout_s,
                breaker=self.breaker(key),
            )

        try:
            return await self._bulkhead(key).run(guarded)
        except CircuitOpenError as exc:
            raise BmsUnavailableError(f"{what}: circuit open, retry in {exc.retry_after_s:.1f}s") from exc
        except TimeoutError as exc:
            raise BmsUnavailableError(f"{what}: no answer within {self._settings.bms_total_timeout_s}s") from exc
        except BulkheadFullError as exc:
            raise BmsUnavailableError(f"{what}: {exc}") from exc

    async def execute(self, endpoint_url: str, command: BmsCommand, trace_parent: str | None = None) -> BmsAck:
        operation = _OPERATIONS[command.action]
        kwargs: dict[str, Any] = {"zone_id": command.zone_id, "idempotency_key": command.idempotency_key}
        if command.action is BmsAction.SET_SETPOINT:
            kwargs["setpoint_c"] = command.value
        elif command.action is BmsAction.SET_LIGHTING:
            kwargs["pct"] = command.value
        if command.action is not BmsAction.RESTORE and command.value is None:
            raise BmsRejectedError(f"{operation} needs a value (command {command.idempotency_key})")
        try:
            reply = await self._call(endpoint_url, operation, trace_parent, **kwargs)
        except (BmsRejectedError, BmsUnavailableError) as exc:
            log.warning(
                "bms_command_failed",
                facility_id=command.facility_id,
                zone_id=command.zone_id,
                action=command.action.value,
                idempotency_key=command.idempotency_key,
                transient=isinstance(exc, BmsUnavailableError),
                error=str(exc),
            )
            raise
        ack = BmsAck(
            idempotency_key=str(reply.idempotency_key),
            executed_at=_aware(reply.executed_at),
            bms_reference=str(reply.bms_reference),
            duplicate=bool(reply.duplicate),
        )
        log.info(
            "bms_command_executed",
            facility_id=command.facility_id,
            zone_id=command.zone_id,
            action=command.action.value,
            idempotency_key=command.idempotency_key,
            bms_reference=ack.bms_reference,
            duplicate=ack.duplicate,
        )
        return ack

    async def command_status(self, endpoint_url: str, idempotency_key: str) -> str | None:
        reply = await self._call(endpoint_url, "GetCommandStatus", idempotency_key=idempotency_key)
        status = str(reply.status or "")
        if status == "not_found":
            return None
        return "executed" if status == "executed" else "unknown"

    async def zone_states(self, endpoint_url: str) -> list[ZoneState]:
        zones = await self._call(endpoint_url, "ListZones") or []
        return [
            ZoneState(
                zone_id=str(z.zone_id),
                kind=str(z.kind),
                setpoint_c=None if z.setpoint_c is None else float(z.setpoint_c),
                lighting_pct=None if z.lighting_pct is None else float(z.lighting_pct),
                overridden=bool(z.overridden),
            )
            for z in zones
        ]

    async def ping(self, endpoint_url: str) -> bool:
        """True when the BMS answers ``ok``; never raises for an unavailable or refusing BMS."""
        try:
            reply = await self._call(endpoint_url, "Ping")
        except (BmsRejectedError, BmsUnavailableError):
            return False
        return str(reply.status) == "ok"

    async def close(self) -> None:
        await self._http.aclose()
        self._wsdl_http.close()
