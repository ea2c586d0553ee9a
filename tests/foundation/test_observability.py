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
        await asyncio.sleep(5)  # a hung dependency: the check's timeout is what is tested

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


# --- OpenTelemetry spans -----------------------------------------------------------------------

import pytest  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402


def test_use_trace_records_a_span_that_continues_a_remote_parent(finished_spans) -> None:
    remote = tracing.new_trace()
    with tracing.use_trace(remote, "saga.handle", attributes={"dr_event_id": "e-1"}) as outer:
        with tracing.use_trace(name="bms.call") as inner:
            assert tracing.current() == inner
        assert tracing.current() == outer
    assert tracing.current() is None
    spans = {s.name: s for s in finished_spans.get_finished_spans()}
    assert set(spans) == {"saga.handle", "bms.call"}
    saga, bms = spans["saga.handle"], spans["bms.call"]
    assert format(saga.context.trace_id, "032x") == remote.trace_id == outer.trace_id == inner.trace_id
    assert saga.parent is not None and format(saga.parent.span_id, "016x") == remote.span_id
    assert bms.parent is not None and bms.parent.span_id == saga.context.span_id
    assert saga.attributes is not None and saga.attributes["dr_event_id"] == "e-1"


def test_a_trace_crosses_kafka_headers_as_w3c_traceparent(finished_spans) -> None:
    with tracing.use_trace(name="producer") as produced:
        headers = dict(tracing.kafka_headers(extra={"event_type": "x"}))
    assert headers["traceparent"] == produced.traceparent.encode()
    assert headers["traceparent"].decode() == tracing.inject(produced)["traceparent"]  # what the W3C propagator writes
    consumed_from = tracing.from_kafka_headers(list(headers.items()))
    with tracing.use_trace(consumed_from, "consumer"):
        pass
    spans = {s.name: s for s in finished_spans.get_finished_spans()}
    assert spans["consumer"].parent is not None
    assert spans["consumer"].parent.span_id == spans["producer"].context.span_id
    assert spans["consumer"].context.trace_id == spans["producer"].context.trace_id


def test_traces_file_gets_one_json_line_per_span(tmp_path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    target = tmp_path / "spans.jsonl"
    exporter = tracing.JsonLinesExporter(target)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("one"), tracer.start_as_current_span("two"):
        pass
    provider.shutdown()
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["two", "one"]
    assert lines[0]["parent_id"] == lines[1]["context"]["span_id"]


def test_unsupported_exporter_name_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-over-carrier-pigeon")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        tracing._exporters(None)


async def test_api_request_span_continues_the_callers_trace(settings, stack, finished_spans) -> None:
    import httpx

    from api.app import create_app

    caller = tracing.new_trace()
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as c:
        resp = await c.get("/healthz", headers={"traceparent": caller.traceparent})
    echoed = tracing.parse_traceparent(resp.headers["traceparent"])
    assert echoed is not None and echoed.trace_id == caller.trace_id and echoed.span_id != caller.span_id
    server = [s for s in finished_spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == 1 and server[0].parent is not None
    assert format(server[0].parent.span_id, "016x") == caller.span_id
    assert format(server[0].context.span_id, "016x") == echoed.span_id
