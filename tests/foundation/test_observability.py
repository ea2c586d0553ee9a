"""Trace context and JSON logs: one trace id follows a message through headers and log lines."""

from __future__ import annotations

import json

import structlog

from energy.observability import tracing
from energy.observability.health import Health
from energy.observability.logging import configure_logging


def test_traceparent_round_trip_and_rejection_of_garbage() -> None:
    ctx = tracing.new_trace()
    parsed = tracing.parse_traceparent(ctx.traceparent)
    assert parsed == ctx
    for bad in ("", "00-xyz-abc-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "ff-" + "a" * 32 + "-" + "b" * 16):
        assert tracing.parse_traceparent(bad) is None


def test_kafka_headers_carry_the_current_trace() -> None:
    with tracing.use_trace(tracing.new_trace()) as ctx:
        headers = tracing.kafka_headers(extra={"event_type": "meter.reading"})
    got = tracing.from_kafka_headers(headers)
    assert got is not None and got.trace_id == ctx.trace_id
    assert ("event_type", b"meter.reading") in headers


def test_json_logs_carry_service_and_trace_ids(capsys) -> None:
    configure_logging("test-service", json_logs=True)
    incoming = tracing.new_trace()
    with tracing.use_trace(incoming) as ctx:
        structlog.get_logger().info("reading_published", facility_id="fac-001")
    structlog.contextvars.clear_contextvars()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "reading_published"
    assert line["service"] == "test-service"
    assert line["trace_id"] == incoming.trace_id == ctx.trace_id
    assert line["span_id"] != incoming.span_id  # a child span of the incoming one
    assert line["level"] == "info" and line["facility_id"] == "fac-001"


async def test_readiness_reports_each_failing_check_with_its_reason() -> None:
    import asyncio

    health = Health("svc")

    async def ok() -> None:
        return None

    async def slow() -> None:
        await asyncio.sleep(5)

    async def broken() -> None:
        raise ConnectionRefusedError("refused")

    health.add_check("postgres", ok, timeout_s=0.5)
    health.add_check("influxdb", slow, timeout_s=0.05)
    health.add_check("kafka", broken, timeout_s=0.5)
    ready, body = await health.ready()
    assert not ready
    assert body["checks"]["postgres"]["ok"] is True
    assert "timeout" in body["checks"]["influxdb"]["error"]
    assert "ConnectionRefusedError" in body["checks"]["kafka"]["error"]
    health2 = Health("svc2")
    health2.add_check("postgres", ok)
    assert (await health2.ready())[0] is True
    health2.set_not_ready("kafka_backpressure", "broker slow: buffer full")
    ready2, body2 = await health2.ready()
    assert not ready2 and body2["conditions"] == {"kafka_backpressure": "broker slow: buffer full"}


def test_logging_survives_the_stream_it_was_configured_under_being_closed() -> None:
    import io
    import sys

    original = sys.stdout
    temporary = io.StringIO()
    sys.stdout = temporary
    try:
        configure_logging("closing-stream", json_logs=True)
    finally:
        sys.stdout = original
    temporary.close()
    structlog.get_logger().info("still_logging")  # raised "I/O operation on closed file" before the fix
