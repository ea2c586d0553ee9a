"""BMS over SOAP: :class:`SoapBmsGateway` implements :class:`dr_coordinator.ports.BmsGateway` with zeep.

- zeep ``AsyncClient`` over one ``httpx.AsyncClient`` per endpoint, whose connections are kept
  alive (at most ``bms_concurrency_per_facility``; connect timeout ``bms_connect_timeout_s``, every
  call bounded by ``bms_total_timeout_s``);
- the WSDL of each endpoint is loaded once (in a thread: zeep loads WSDLs synchronously) and
  cached; calls go to the endpoint URL itself, whatever address the WSDL names;
- one circuit breaker per endpoint (``bms:<facility_id>``, from ``/bms/<facility_id>``, else
  ``bms:<host:port>``) and one bulkhead per endpoint (``bms_concurrency_per_facility``);
- the W3C ``traceparent`` travels as an HTTP header of each SOAP call;
- foreign errors are translated here: a SOAP ``Client`` fault, or an HTTP 4xx other than
  408/429, is :class:`BmsRejectedError` (never retried, does not trip the breaker); transport
  errors, timeouts, 5xx, ``Server`` faults, unparsable answers and an open breaker are
  :class:`BmsUnavailableError`.

Commands (SetSetpoint, SetLightingLevel, RestoreZone: the dispatch's hot path) skip zeep's per-call
serialisation and parsing: zeep builds each operation's envelope and HTTP headers once per WSDL
document, from the WSDL (:class:`CommandCodec`); a call fills the three leaf values of a copy and
reads the answer's fields with lxml, converting them with the WSDL's own XSD types. A WSDL whose
operation does not have the expected shape is called through zeep as before (decision 1021).

This adapter does NOT retry: the saga's command worker retries ``BmsUnavailableError`` with
backoff, reusing the command's idempotency key, so a retry after a lost answer is answered
``duplicate=True`` by the BMS instead of being executed twice.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import ssl
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpcore
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
# The leaves a command's request carries, per operation, with placeholder values for the template.
_COMMAND_FIELDS: dict[str, dict[str, Any]] = {
    "SetSetpoint": {"zone_id": "z", "setpoint_c": 20.0, "idempotency_key": "k"},
    "SetLightingLevel": {"zone_id": "z", "pct": 50.0, "idempotency_key": "k"},
    "RestoreZone": {"zone_id": "z", "idempotency_key": "k"},
}
# Close a kept-alive connection ourselves before a typical server's keep-alive timeout (5 s) does, so
# a call rarely goes out on a connection the BMS is closing (decision 1020).
KEEPALIVE_EXPIRY_S = 4.0
_ACK_FIELDS = ("idempotency_key", "executed_at", "bms_reference", "duplicate")


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
    if isinstance(exc, httpcore.TimeoutException):
        return BmsUnavailableError(f"{what}: timeout ({type(exc).__name__})")
    if isinstance(exc, _HTTPCORE_ERRORS):
        return BmsUnavailableError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.HTTPError | OSError | zeep.exceptions.Error):
        return BmsUnavailableError(f"{what}: {type(exc).__name__}: {exc}")
    return exc


class UnexpectedWsdlError(Exception):
    """A WSDL operation does not have the shape the fast command path was written for."""


@dataclass(frozen=True)
class CommandReply:
    idempotency_key: str
    executed_at: datetime | None
    bms_reference: str
    duplicate: bool


@dataclass(frozen=True)
class CommandCodec:
    """One command operation of one WSDL document: the request envelope and HTTP headers zeep builds
    for it (built once, with placeholder values), and the answer's element names and XSD types.

    ``envelope`` copies the template and sets its leaves (the values rendered by the WSDL's XSD
    types, as zeep would); ``reply`` reads a SOAP 1.1 answer: a ``Fault`` raises ``zeep``'s
    :class:`zeep.exceptions.Fault` (translated like any other), a well-formed answer of another shape
    :class:`zeep.exceptions.Error`."""

    operation: str
    template: Any  # lxml element: the whole envelope
    leaves: dict[str, tuple[Any, Any]]  # field -> (path of the leaf in the template, XSD type)
    headers: dict[str, str]
    envelope_ns: str
    response_tag: str
    result_tag: str
    answer_fields: dict[str, tuple[str, Any]]  # field -> (tag, XSD type)

    @classmethod
    def build(cls, client: Any, binding: Any, operation: str) -> CommandCodec:
        fields = _COMMAND_FIELDS[operation]
        op = binding._operations.get(operation)
        if op is None or op.input.body is None or op.output.body is None:
            raise UnexpectedWsdlError(f"{operation}: not in the WSDL's binding")
        envelope, headers = binding._create(operation, (), dict(fields), client=client, options={"address": ""})
        body = envelope.find(f"{{{etree.QName(envelope).namespace}}}Body")
        if body is None or len(body) != 1:
            raise UnexpectedWsdlError(f"{operation}: no single body element")
        request = body[0]
        input_types = {name: element.type for name, element in op.input.body.type.elements}
        leaves: dict[str, tuple[Any, Any]] = {}
        for child in request:
            name = etree.QName(child).localname
            if name not in fields or name not in input_types or len(child):
                raise UnexpectedWsdlError(f"{operation}: unexpected request element {child.tag}")
            leaves[name] = (envelope.getroottree().getelementpath(child), input_types[name])
        if set(leaves) != set(fields):
            raise UnexpectedWsdlError(f"{operation}: request elements {sorted(leaves)} != {sorted(fields)}")
        response = op.output.body
        results = list(response.type.elements)
        if len(results) != 1:
            raise UnexpectedWsdlError(f"{operation}: the response does not wrap one result")
        result = results[0][1]
        answer = {name: (etree.QName(e.qname).text, e.type) for name, e in result.type.elements}
        if not set(_ACK_FIELDS) <= set(answer):
            raise UnexpectedWsdlError(f"{operation}: the result lacks {sorted(set(_ACK_FIELDS) - set(answer))}")
        return cls(
            operation=operation,
            template=envelope,
            leaves=leaves,
            headers={str(k): str(v) for k, v in headers.items()},
            envelope_ns=etree.QName(envelope).namespace,
            response_tag=etree.QName(response.qname).text,
            result_tag=etree.QName(result.qname).text,
            answer_fields={name: answer[name] for name in _ACK_FIELDS},
        )

    def envelope(self, values: dict[str, Any]) -> bytes:
        root = copy.deepcopy(self.template)
        tree = root.getroottree()
        for name, (path, xsd_type) in self.leaves.items():
            value = values[name]
            if value is None:
                raise zeep.exceptions.ValidationError(f"{self.operation}: {name} is required")
            leaf = tree.find(path)
            leaf.text = xsd_type.xmlvalue(value)
        return bytes(etree.tostring(root, encoding="utf-8", xml_declaration=True))

    def reply(self, content: bytes) -> CommandReply:
        try:
            root = etree.fromstring(content, _SAFE_XML)
        except etree.XMLSyntaxError as exc:
            raise zeep.exceptions.Error(f"unparsable answer: {exc}") from exc
        body = root.find(f"{{{self.envelope_ns}}}Body")
        if root.tag != f"{{{self.envelope_ns}}}Envelope" or body is None or len(body) == 0:
            raise zeep.exceptions.Error("the answer is not a SOAP envelope with a body")
        answer = body[0]
        if answer.tag == f"{{{self.envelope_ns}}}Fault":
            raise zeep.exceptions.Fault(message=answer.findtext("faultstring") or "", code=answer.findtext("faultcode"))
        result = answer.find(self.result_tag) if answer.tag == self.response_tag else None
        if result is None:
            raise zeep.exceptions.Error(f"{self.operation}: unexpected answer element {answer.tag}")
        values: dict[str, Any] = {}
        for name, (tag, xsd_type) in self.answer_fields.items():
            text = result.findtext(tag)
            values[name] = None if text is None else xsd_type.pythonvalue(text)
        if not values["idempotency_key"]:
            raise zeep.exceptions.Error(f"{self.operation}: the answer has no idempotency_key")
        return CommandReply(
            idempotency_key=str(values["idempotency_key"]),
            executed_at=values["executed_at"],
            bms_reference=str(values["bms_reference"] or ""),
            duplicate=bool(values["duplicate"]),
        )


def command_codecs(client: Any, binding: Any) -> dict[str, CommandCodec]:
    """The fast path of every command operation the binding has in the expected shape."""
    codecs = {}
    for operation in _COMMAND_FIELDS:
        try:
            codecs[operation] = CommandCodec.build(client, binding, operation)
        except (UnexpectedWsdlError, zeep.exceptions.Error, LookupError, TypeError, ValueError) as exc:
            log.warning("bms_fast_path_unavailable", operation=operation, error=str(exc)[:300])
    return codecs


_HTTPCORE_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
    httpcore.ProxyError,
)


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SoapBmsGateway:
    """The BMS gateway of the DR coordinator (one instance per process; close it on stop)."""

    def __init__(self, dr_settings: DrSettings) -> None:
        self._settings = dr_settings
        self._timeout = httpx.Timeout(dr_settings.bms_total_timeout_s, connect=dr_settings.bms_connect_timeout_s)
        # One connection pool per BMS endpoint (``_endpoint_client``); this client only serves the
        # transport the shared WSDL documents were parsed with.
        self._http = httpx.AsyncClient(timeout=self._timeout)
        self._wsdl_http = httpx.Client(timeout=self._timeout)
        self._transport = _TracingTransport(client=self._http, wsdl_client=self._wsdl_http)
        self._tls = ssl.create_default_context()  # built once: each costs ~25 ms of CPU
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._pools: dict[str, httpcore.AsyncConnectionPool] = {}
        self._extensions = {
            "timeout": {
                "connect": dr_settings.bms_connect_timeout_s,
                "read": dr_settings.bms_total_timeout_s,
                "write": dr_settings.bms_total_timeout_s,
                "pool": dr_settings.bms_total_timeout_s,
            }
        }
        self._services: dict[str, Any] = {}
        self._codecs: dict[str, dict[str, CommandCodec]] = {}  # endpoint -> its command operations' codecs
        self._document_codecs: dict[int, dict[str, CommandCodec]] = {}  # by id() of a shared parsed document
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
                service, codecs = await asyncio.to_thread(self._load_service, key)
                self._codecs[key] = codecs
                self._services[key] = service
        return service

    def _load_service(self, key: str) -> tuple[Any, dict[str, CommandCodec]]:
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
        http = self._endpoint_client(key)
        transport = _TracingTransport(client=http, wsdl_client=self._wsdl_http)
        client = zeep.AsyncClient(document, transport=transport)
        service_def = next(iter(client.wsdl.services.values()))
        port = next(iter(service_def.ports.values()))
        with self._documents_lock:
            codecs = self._document_codecs.get(id(document)) if identity else None
            if codecs is None:
                codecs = command_codecs(client, port.binding)
                if identity:
                    self._document_codecs[id(document)] = codecs
        # Call the endpoint we were given: the WSDL's own address may name another host or proxy.
        # (zeep's AsyncClient.create_service returns a synchronous proxy, so build the async one.)
        return AsyncServiceProxy(client, port.binding, address=key), codecs

    def _limits(self) -> dict[str, Any]:
        per_endpoint = max(self._settings.bms_concurrency_per_facility, 1)
        return {
            "max_connections": per_endpoint,
            "max_keepalive_connections": per_endpoint,
            "keepalive_expiry": KEEPALIVE_EXPIRY_S,
        }

    def _endpoint_client(self, key: str) -> httpx.AsyncClient:
        """The endpoint's own httpx client for zeep's calls (Ping, ListZones, GetCommandStatus): its
        own pool of kept-alive connections, at most its bulkhead's calls at once.

        One pool for every BMS made each call scan all of the fleet's idle connections (httpcore's
        pool checks each one for expiry): with 128 kept alive, ~8 ms of CPU per call, more than the
        new TCP connection per call it replaced. A BMS is its own host, so one pool per endpoint
        costs no more connections; idle ones are closed after ``KEEPALIVE_EXPIRY_S``."""
        client = self._clients.get(key)
        if client is None:
            transport = httpx.AsyncHTTPTransport(verify=self._tls, limits=httpx.Limits(**self._limits()))
            client = self._clients[key] = httpx.AsyncClient(transport=transport, timeout=self._timeout, trust_env=False)
        return client

    def _command_pool(self, key: str) -> httpcore.AsyncConnectionPool:
        """The endpoint's connection pool for commands, used through httpcore directly: httpx's
        client layer (request building, cookie jar, redirects, auth) was a third of a command's CPU
        and a SOAP call needs none of it."""
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpcore.AsyncConnectionPool(ssl_context=self._tls, **self._limits())
        return pool

    async def _call(self, endpoint_url: str, operation: str, trace_parent: str | None = None, **kwargs: Any) -> Any:
        """One SOAP operation as a client span, a child of ``trace_parent`` (or of the current span); the
        BMS gets this span's traceparent in the SOAP header."""
        parent = tracing.parse_traceparent(trace_parent) if trace_parent else None
        attributes = {"bms.endpoint": endpoint_name(endpoint_url.rstrip("/")), "bms.operation": operation}
        with tracing.use_trace(parent, f"bms.soap.{operation}", SpanKind.CLIENT, attributes) as span:
            return await self._call_once(endpoint_url, operation, span.traceparent, **kwargs)

    async def _invoke(self, key: str, operation: str, trace_parent: str | None, kwargs: dict[str, Any]) -> Any:
        service = await self._service(key)
        codec = self._codecs.get(key, {}).get(operation)
        if codec is None:
            token = _TRACE_PARENT.set(trace_parent)
            try:
                return await getattr(service, operation)(**kwargs)
            finally:
                _TRACE_PARENT.reset(token)
        headers = list(codec.headers.items())
        if trace_parent:
            headers.append(("traceparent", trace_parent))
        response = await self._command_pool(key).request(
            "POST", key, headers=headers, content=codec.envelope(kwargs), extensions=self._extensions
        )
        status, content = response.status, response.content
        if status != 200 and not content.lstrip().startswith(b"<"):
            raise zeep.exceptions.TransportError(status_code=status)
        try:
            return codec.reply(content)
        except zeep.exceptions.Fault:
            raise  # SOAP 1.1 answers a fault with a 500: the fault says what happened
        except zeep.exceptions.Error:
            if status != 200:  # an error page in XML: the status says what happened
                raise zeep.exceptions.TransportError(status_code=status) from None
            raise

    async def _call_once(self, endpoint_url: str, operation: str, trace_parent: str | None, **kwargs: Any) -> Any:
        key = endpoint_url.rstrip("/")
        name = endpoint_name(key)
        what = f"BMS {name} {operation}"
        if trace_parent is None and (ctx := tracing.current()) is not None:
            trace_parent = ctx.traceparent

        async def attempt() -> Any:
            try:
                return await self._invoke(key, operation, trace_parent, kwargs)
            except Exception as exc:
                raise _translate(exc, what) from exc

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
        for client in self._clients.values():
            await client.aclose()
        for pool in self._pools.values():
            await pool.aclose()
        await self._http.aclose()
        self._wsdl_http.close()
