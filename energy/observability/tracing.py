"""Tracing with OpenTelemetry: spans, W3C trace context across HTTP, Kafka headers and SOAP.

:func:`use_trace` starts a span (a child of the given context, or a new trace) and makes it
current for OpenTelemetry and for structlog (every log line carries ``trace_id`` and ``span_id``).
:class:`TraceContext` is the value the platform stores and passes on: the ids of one span, as they
travel in a ``traceparent`` (Kafka headers, the DR saga's rows, SOAP headers). Injection and
extraction use OpenTelemetry's W3C propagator.

Export follows the standard variables: ``OTEL_TRACES_EXPORTER=otlp`` sends spans with the OTLP/HTTP
exporter (``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends, read by the exporter itself), ``console``
writes them to stderr, ``none`` (the default) exports nothing; ``OTEL_SERVICE_NAME`` overrides the
service name. Locally, ``ENERGY_LOG__TRACES_FILE`` also appends one JSON line per finished span to
a file (``energy run`` gives each process its own), which is how tests follow one DR event.
Spans are always recorded with real ids, exported or not, so log lines can be joined by trace id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def span_context(self) -> SpanContext:
        flags = TraceFlags(TraceFlags.SAMPLED if self.sampled else TraceFlags.DEFAULT)
        return SpanContext(int(self.trace_id, 16), int(self.span_id, 16), is_remote=True, trace_flags=flags)

    @classmethod
    def of(cls, span_context: SpanContext) -> TraceContext:
        return cls(
            format(span_context.trace_id, "032x"),
            format(span_context.span_id, "016x"),
            span_context.trace_flags.sampled,
        )


_current: ContextVar[TraceContext | None] = ContextVar("trace_context", default=None)


class JsonLinesExporter(SpanExporter):
    """One JSON object per finished span, appended to a file (the local trace record)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed on shutdown
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(json.loads(span.to_json(indent=None)), separators=(",", ":")) + "\n" for span in spans]
        with self._lock:
            self._out.writelines(lines)
            self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._out.close()


def _exporters(traces_file: Path | None) -> list[tuple[SpanExporter, bool]]:
    """(exporter, batched) pairs from the standard OTEL_* variables and the local trace file."""
    found: list[tuple[SpanExporter, bool]] = []
    for name in (n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            found.append((OTLPSpanExporter(), True))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append((ConsoleSpanExporter(out=sys.stderr), True))
        elif name not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console or none)")
    if traces_file is not None:
        found.append((JsonLinesExporter(traces_file), False))  # written as each span ends: tests read it
    return found


def configure(service: str, traces_file: Path | None = None) -> TracerProvider:
    """Install this process's tracer provider (once; later calls return the first)."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        name = os.environ.get("OTEL_SERVICE_NAME") or service
        provider = TracerProvider(resource=Resource.create({"service.name": name, "service.namespace": "energy"}))
        for exporter, batched in _exporters(traces_file):
            provider.add_span_processor(BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def shutdown() -> None:
    """Flush and close the exporters (call on process exit)."""
    if _provider is not None:
        _provider.shutdown()


_tracers: dict[int, trace.Tracer] = {}


def _tracer() -> trace.Tracer:
    # One tracer per provider, fetched once: ``get_tracer`` re-registers a warnings filter and builds two
    # scope objects on every call, which the API's per-request server span paid each time (decision 1060).
    provider = _provider or configure("energy")  # a library or test that never configured: record, export nothing
    tracer = _tracers.get(id(provider))
    if tracer is None:
        tracer = _tracers[id(provider)] = provider.get_tracer("energy")
    return tracer


_IDS = RandomIdGenerator()


def new_trace() -> TraceContext:
    """Ids for the root of a new trace, to hand on before any span runs (e.g. a reading's headers).
    One generator for the process: ingestion calls this once per MQTT message."""
    return TraceContext(f"{_IDS.generate_trace_id():032x}", f"{_IDS.generate_span_id():016x}")


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """A W3C ``traceparent`` (version 00) as a :class:`TraceContext`; None when malformed.

    Parsed directly rather than through the propagator: it runs once per Kafka record on the
    aggregation path, where the propagator costs ~3x as much for the same answer."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return TraceContext(match.group(1), match.group(2), match.group(3) == "01")


def current() -> TraceContext | None:
    return _current.get()


def current_or_new() -> TraceContext:
    return _current.get() or new_trace()


@contextlib.contextmanager
def use_trace(
    parent: TraceContext | None = None,
    name: str = "energy.work",
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[TraceContext]:
    """Run a span named ``name``: a child of ``parent`` (a context that came from a message,
    a header or a stored row), else of the current span, else the root of a new trace."""
    if parent is not None:
        otel_parent = trace.set_span_in_context(NonRecordingSpan(parent.span_context()))
    elif (ambient := _current.get()) is not None:
        otel_parent = trace.set_span_in_context(NonRecordingSpan(ambient.span_context()))
    else:  # a span some library runs around us (FastAPI's server span), else a new trace
        otel_parent = otel_context.get_current()
    with _tracer().start_as_current_span(
        name, context=otel_parent, kind=kind, attributes=dict(attributes or {})
    ) as span:
        ctx = TraceContext.of(span.get_span_context())
        token = _current.set(ctx)
        try:
            with structlog.contextvars.bound_contextvars(trace_id=ctx.trace_id, span_id=ctx.span_id):
                yield ctx
        finally:
            _current.reset(token)


@contextlib.contextmanager
def server_span(incoming: TraceContext | None, name: str) -> Iterator[TraceContext]:
    """The span of one inbound HTTP request. FastAPI's native telemetry, where it is on, already runs a
    server span (continuing the caller's ``traceparent``) around the whole app: adopt it. Where it is off,
    start our own SERVER span from ``incoming``, as :func:`use_trace` would, without its generic layers: this
    runs once per API request (decision 1060)."""
    active = trace.get_current_span().get_span_context()
    if not active.is_valid:
        parent = incoming or _current.get()
        span = _tracer().start_span(
            name,
            context=trace.set_span_in_context(NonRecordingSpan(parent.span_context())) if parent else None,
            kind=SpanKind.SERVER,
        )
        ctx = TraceContext.of(span.get_span_context())
        otel_token = otel_context.attach(trace.set_span_in_context(span))
        token = _current.set(ctx)
        log_tokens = structlog.contextvars.bind_contextvars(trace_id=ctx.trace_id, span_id=ctx.span_id)
        try:
            yield ctx
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            structlog.contextvars.reset_contextvars(**log_tokens)
            _current.reset(token)
            otel_context.detach(otel_token)
            span.end()
        return
    ctx = TraceContext.of(active)
    token = _current.set(ctx)
    try:
        with structlog.contextvars.bound_contextvars(trace_id=ctx.trace_id, span_id=ctx.span_id):
            yield ctx
    finally:
        _current.reset(token)


def inject(ctx: TraceContext | None = None) -> dict[str, str]:
    """W3C headers (``traceparent``) for an outgoing HTTP or SOAP call."""
    carrier: dict[str, str] = {}
    ctx = ctx or current_or_new()
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(ctx.span_context())))
    return carrier


def kafka_headers(ctx: TraceContext | None = None, extra: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    # The W3C header written directly (what the propagator writes for a context without tracestate):
    # this runs once per record on ingestion's hot path, where the propagator costs ~8x as much.
    ctx = ctx or current_or_new()
    headers = [("traceparent", ctx.traceparent.encode())]
    for key, value in (extra or {}).items():
        headers.append((key, value.encode()))
    return headers


def from_kafka_headers(headers: Sequence[tuple[str, bytes]] | None) -> TraceContext | None:
    for key, value in headers or ():
        if key == "traceparent":
            return parse_traceparent(value)
    return None
