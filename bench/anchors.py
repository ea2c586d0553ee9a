"""Physical anchors: the same work done by the bare client library, with none of our code around it.

A benchmark runs its anchor in the same run, on the same machine and servers, and reports its own
figure as a ratio to the anchor's; the ratio is what transfers between machines (docs/benchmarks.md).
Each anchor runs as its own process, like the service it anchors, and prints one JSON line:
``{"items": N, "seconds": wall, "cpu_s": user+system of this process while it worked}``.

    python -m bench.anchors kafka-producer --topic T --n N        # pre-built meter.reading records
    python -m bench.anchors mqtt-subscriber --prefix P --client-id C --n N [--prepare]
    python -m bench.anchors kafka-consumer-decode --topic T --n N  # read from the start, decode each
    python -m bench.anchors influx-writer --database D --n N       # N raw reading points, batches of 5,000
    python -m bench.anchors bms-soap --url U --facilities F --n N --concurrency C [--per-facility P]  # SetSetpoint
    python -m bench.anchors api-server --port P                    # a trivial FastAPI route, served like the API

The forecast anchor is a function (:func:`forecast_forward`), called in the benchmark's own process with
the model the service has loaded: the raw forward pass of its networks over as many windows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

QUIET = logging.getLogger("bench.anchors.mqtt")
QUIET.setLevel(logging.ERROR)


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def prebuilt_readings(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) records exactly as ingestion produces them: meter.reading envelopes of the
    seeded fleet's meters, keyed by facility."""
    from energy.fleet import build_fleet
    from schemas.readings import MeterReading, MeterReadingEvent

    meters = [(f.facility_id, m.meter_id) for f in build_fleet() for m in f.meters]
    start = datetime(2026, 1, 5, tzinfo=UTC)
    out = []
    for i in range(n):
        facility_id, meter_id = meters[i % len(meters)]
        ts = start + timedelta(seconds=15 * (i // len(meters)))
        reading = MeterReading(
            reading_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{meter_id}/{i}"),
            meter_id=meter_id,
            facility_id=facility_id,
            ts=ts,
            active_power_kw=12.5,
            reactive_power_kvar=5.3,
            voltage_v=230.0,
            current_a=59.0,
            energy_kwh=1000.0 + i * 0.05,
            seq=i,
            received_at=ts,
        )
        event = MeterReadingEvent.wrap(reading, source="mqtt", occurred_at=ts, event_id=reading.reading_id)
        out.append((facility_id.encode(), event.to_bytes()))
    return out


async def kafka_producer(topic: str, n: int) -> dict[str, Any]:
    """Send ``n`` pre-built records with the platform's producer settings; done when all are acked."""
    from energy.adapters.kafka import make_producer
    from energy.settings import get_settings

    records = prebuilt_readings(n)
    producer = make_producer(get_settings().kafka)
    await producer.start()
    try:
        cpu0, t0 = _cpu(), time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        seconds, cpu_s = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        await producer.stop()
    return {"items": n, "seconds": seconds, "cpu_s": cpu_s}


async def mqtt_subscriber(prefix: str, client_id: str, n: int, prepare: bool) -> dict[str, Any]:
    """QoS 1 persistent session on ``prefix/#`` as ingestion subscribes. ``--prepare`` only creates the
    session (so a backlog can queue in the broker); otherwise drain ``n`` messages, ack each, decode
    its JSON (the least a consumer does), and time from the first to the last."""
    import aiomqtt

    from energy.settings import get_settings

    mqtt = get_settings().mqtt
    client = aiomqtt.Client(mqtt.host, mqtt.port, identifier=client_id, clean_session=False, logger=QUIET)
    async with client:
        await client.subscribe(f"{prefix}/#", qos=1)
        if prepare:
            return {"items": 0, "seconds": 0.0, "cpu_s": 0.0}
        got = 0
        first = last = 0.0
        cpu0 = _cpu()
        async for message in client.messages:
            json.loads(bytes(message.payload))  # type: ignore[arg-type]
            now = time.perf_counter()
            first = first or now
            last = now
            got += 1
            if got >= n:
                break
        cpu_s = _cpu() - cpu0
    return {"items": got, "seconds": max(last - first, 1e-9), "cpu_s": cpu_s}


async def kafka_consumer_decode(topic: str, n: int) -> dict[str, Any]:
    """Read ``n`` records of ``topic`` from the start (no group) and decode each as the worker does
    (its hot-path decoder, :func:`aggregation.decode.decode_reading_fast`)."""
    from aiokafka import AIOKafkaConsumer

    from aggregation.decode import decode_reading_fast
    from energy.settings import get_settings

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=get_settings().kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    got = 0
    try:
        cpu0, t0 = _cpu(), time.perf_counter()
        while got < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batches.values():
                for record in records:
                    decode_reading_fast(record.value)
                    got += 1
        seconds, cpu_s = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        await consumer.stop()
    return {"items": got, "seconds": seconds, "cpu_s": cpu_s}


async def influx_writer(database: str, n: int) -> dict[str, Any]:
    """Write ``n`` raw reading points (the worker's raw measurement and fields) in batches of 5,000."""
    from energy.adapters.influx import InfluxClient, point
    from energy.settings import get_settings

    settings = get_settings()
    influx = InfluxClient(settings.influx.model_copy(update={"database": database}), breaker_name="anchor-influx")
    start_ns = (time.time_ns() // 10**9 - 86_400) * 10**9  # yesterday: inside the raw retention
    lines = [
        point(
            "readings",
            {"facility_id": f"anchor-fac-{i % 20:03d}", "meter_id": f"anchor-fac-{i % 20:03d}-m{i % 200 // 20:02d}"},
            {
                "active_power_kw": 12.5,
                "reactive_power_kvar": 5.3,
                "voltage_v": 230.0,
                "current_a": 59.0,
                "energy_kwh": 1000.0 + i * 0.05,
                "seq": i // 200,
                "anomalies": "",
                "reading_id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))),
            },
            start_ns + (i // 200) * 15 * 10**9,
        )
        for i in range(n)
    ]
    try:
        cpu0, t0 = _cpu(), time.perf_counter()
        for i in range(0, n, 5_000):
            await influx.write_lines(lines[i : i + 5_000])
        seconds, cpu_s = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        await influx.close()
    return {"items": n, "seconds": seconds, "cpu_s": cpu_s}


_SET_SETPOINT = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:tns="urn:energy-platform:bms:v1">'
    "<soapenv:Body><tns:SetSetpoint><tns:zone_id>{zone}</tns:zone_id><tns:setpoint_c>{value}</tns:setpoint_c>"
    "<tns:idempotency_key>{key}</tns:idempotency_key></tns:SetSetpoint></soapenv:Body></soapenv:Envelope>"
)


async def bms_soap(
    url: str, facilities: list[str], n: int, concurrency: int, run: str, zones: int = 1, per_facility: int = 4
) -> dict[str, Any]:
    """The BMS simulator's own capacity: ``n`` SetSetpoint calls (pre-built SOAP envelopes, distinct
    idempotency keys, HVAC zones 1..``zones`` of each facility in turn) with at most ``concurrency``
    calls in flight, as the DR worker bounds its own. Connections as the coordinator's gateway keeps
    them: one pool of kept-alive connections per facility's endpoint (at most ``per_facility``, its
    ``bms_concurrency_per_facility``). Every answer must be a 200."""
    import ssl

    import httpx

    bodies = [
        (
            f"{url.rstrip('/')}/{facilities[i % len(facilities)]}",
            _SET_SETPOINT.format(
                zone=f"hvac-{i // len(facilities) % zones + 1}", value=23.5, key=f"{run}-{i}"
            ).encode(),
        )
        for i in range(n)
    ]
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "SetSetpoint"}
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=per_facility, max_keepalive_connections=per_facility, keepalive_expiry=4.0)
    clients = {
        target: httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(verify=tls, limits=limits), timeout=30, trust_env=False
        )
        for target in {target for target, _ in bodies}
    }
    failed = 0
    first_failure = ""
    queue = iter(bodies)

    async def lane() -> None:
        nonlocal failed, first_failure
        for target, body in queue:
            try:
                resp = await clients[target].post(target, content=body, headers=headers)
            except httpx.HTTPError as exc:
                failed += 1
                first_failure = first_failure or f"{target}: {type(exc).__name__}: {exc}"
                continue
            if resp.status_code != 200:
                failed += 1
                first_failure = first_failure or f"{target}: {resp.status_code} {resp.text[:300]}"

    try:
        cpu0, t0 = _cpu(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        seconds, cpu_s = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        for client in clients.values():
            await client.aclose()
    return {"items": n - failed, "failed": failed, "first_failure": first_failure, "seconds": seconds, "cpu_s": cpu_s}


ANCHOR_ROUTE = "/anchor"


def trivial_app() -> Any:
    """One route that returns a small constant JSON object (about the size of a current-load answer) with
    no I/O, no middleware and no auth: what FastAPI and uvicorn cost per request on their own."""
    from fastapi import FastAPI

    app = FastAPI()
    body = {"facility_id": "anchor", "as_of": "2026-01-05T00:00:00Z", "total_kw": 12.5, "meters_reporting": 10}

    @app.get(ANCHOR_ROUTE)
    async def anchor() -> dict[str, Any]:
        return body

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def api_server(port: int) -> None:
    """Serve :func:`trivial_app` exactly as ``energy api run`` serves the API: one process, the same
    uvicorn options (api.app.UVICORN_OPTIONS)."""
    import uvicorn

    from api.app import UVICORN_OPTIONS

    uvicorn.run(trivial_app(), host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def forecast_forward(model: Any, windows: int, batch: int = 2048) -> dict[str, Any]:
    """The raw forward pass of ``model``'s networks (a ``forecast.model.train.ForecastModel``) over
    ``windows`` windows of its own shapes, in the inference batch size, torch only: no features, no
    calibration, no I/O. Inputs are built (random) before the clock starts; an LSTM's cost does not
    depend on the values. Single-threaded, as the service runs inference."""
    import torch

    spec = model.spec
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(7)
    chunks = []
    for start in range(0, windows, batch):
        b = min(batch, windows - start)
        chunks.append(
            (
                torch.randn(b, spec.lookback, spec.enc_features, generator=generator),
                torch.randn(b, spec.horizon, spec.dec_features, generator=generator),
                torch.rand(b, spec.horizon, generator=generator),
            )
        )
    for net in model.nets:
        net.eval()
    cpu0, t0 = _cpu(), time.perf_counter()
    with torch.inference_mode():
        for enc, dec, reference in chunks:
            for net in model.nets:
                net(enc, dec, reference)
    seconds, cpu_s = time.perf_counter() - t0, _cpu() - cpu0
    return {"items": windows, "seconds": seconds, "cpu_s": cpu_s, "members": len(model.nets)}


def run_anchor(args: list[str], timeout_s: float = 900) -> dict[str, Any]:
    """Run one anchor in its own process (as the benchmark runs the service it anchors); its figures."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bench.anchors", *args], capture_output=True, text=True, timeout=timeout_s, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "anchors")
    sub = p.add_subparsers(dest="anchor", required=True)
    k = sub.add_parser("kafka-producer")
    k.add_argument("--topic", required=True)
    k.add_argument("--n", type=int, required=True)
    m = sub.add_parser("mqtt-subscriber")
    m.add_argument("--prefix", required=True)
    m.add_argument("--client-id", required=True)
    m.add_argument("--n", type=int, default=0)
    m.add_argument("--prepare", action="store_true")
    c = sub.add_parser("kafka-consumer-decode")
    c.add_argument("--topic", required=True)
    c.add_argument("--n", type=int, required=True)
    w = sub.add_parser("influx-writer")
    w.add_argument("--database", required=True)
    w.add_argument("--n", type=int, required=True)
    b = sub.add_parser("bms-soap")
    b.add_argument("--url", required=True, help="the simulator's /bms base URL")
    b.add_argument("--facilities", required=True, help="comma-separated facility ids to call")
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--concurrency", type=int, required=True)
    b.add_argument("--run", default="anchor", help="prefix of the idempotency keys")
    b.add_argument("--zones", type=int, default=1, help="HVAC zones hvac-1.. every facility has")
    b.add_argument("--per-facility", type=int, default=4, help="kept-alive connections per facility endpoint")
    a = sub.add_parser("api-server")
    a.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    if args.anchor == "api-server":
        api_server(args.port)
        return
    if args.anchor == "bms-soap":
        facilities = [f for f in args.facilities.split(",") if f]
        result = asyncio.run(
            bms_soap(args.url, facilities, args.n, args.concurrency, args.run, args.zones, args.per_facility)
        )
    elif args.anchor == "kafka-producer":
        result = asyncio.run(kafka_producer(args.topic, args.n))
    elif args.anchor == "mqtt-subscriber":
        result = asyncio.run(mqtt_subscriber(args.prefix, args.client_id, args.n, args.prepare))
    elif args.anchor == "kafka-consumer-decode":
        result = asyncio.run(kafka_consumer_decode(args.topic, args.n))
    else:
        result = asyncio.run(influx_writer(args.database, args.n))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
