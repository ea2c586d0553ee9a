"""W3C trace context (``traceparent``) carried through HTTP headers, Kafka headers and SOAP calls.

The current trace lives in a contextvar, is bound into every structlog line as ``trace_id``
and ``span_id``, and is injected into outgoing messages. OpenTelemetry's propagator would do the
same; this keeps the wire format without requiring an SDK exporter in every process.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import structlog

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def child(self) -> TraceContext:
        return TraceContext(self.trace_id, secrets.token_hex(8), self.sampled)


_current: ContextVar[TraceContext | None] = ContextVar("trace_context", default=None)


def new_trace() -> TraceContext:
    return TraceContext(secrets.token_hex(16), secrets.token_hex(8))


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
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
def use_trace(ctx: TraceContext | None = None) -> Iterator[TraceContext]:
    """Make ``ctx`` (or a new child span of it) current, and bind it into log lines."""
    ctx = (ctx or new_trace()).child() if ctx else new_trace()
    token = _current.set(ctx)
    with structlog.contextvars.bound_contextvars(trace_id=ctx.trace_id, span_id=ctx.span_id):
        try:
            yield ctx
        finally:
            _current.reset(token)


def kafka_headers(ctx: TraceContext | None = None, extra: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
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
