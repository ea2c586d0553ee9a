"""DR integrations benchmark: BMS SOAP commands/s through SoapBmsGateway, and OpenADR 3 VTN
notifications/s delivered to a webhook receiver.

Both simulators run as separate processes (as in production, the third parties are remote).

1. BMS: N distinct commands (SetSetpoint/SetLightingLevel/RestoreZone spread over the 20
   facilities) issued at once through one gateway (bulkhead ``bms_concurrency_per_facility``
   per facility); commands/s = N / wall time, with per-call latency p50/p95. Then the same N
   commands again (the retry storm after a lost answer): all must come back ``duplicate``,
   and the simulator must report exactly one execution per key.
2. VTN: M events created by the utility; each is POSTed to a local receiver; notifications/s =
   M / (time from first create to the last notification received), with latency p50/p95.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import httpx

from bench.common import parser, write_results
from dr_coordinator.adapters.bms_soap import SoapBmsGateway
from energy.fleet import build_fleet
from energy.settings import get_settings
from energy.stack.process import free_port
from schemas.dr import BmsAction, BmsCommand
from sim.bms.process import SimulatorProcess


def _commands(n: int) -> list[tuple[str, BmsCommand]]:
    fleet = build_fleet()
    event_id = uuid.uuid4()
    out = []
    for i in range(n):
        facility = fleet[i % len(fleet)]
        zone = facility.zones[(i // len(fleet)) % len(facility.zones)]
        if zone.kind == "hvac":
            action, value = BmsAction.SET_SETPOINT, zone.max_setpoint_c
        else:
            action, value = BmsAction.SET_LIGHTING, zone.min_lighting_pct
        if (i // (len(fleet) * len(facility.zones))) % 2 == 1:
            action, value = BmsAction.RESTORE, None
        cmd = BmsCommand(
            command_id=uuid.uuid4(),
            idempotency_key=f"bench:{event_id}:{i}",
            dr_event_id=event_id,
            facility_id=facility.facility_id,
            zone_id=zone.zone_id,
            action=action,
            value=value,
        )
        out.append((facility.facility_id, cmd))
    return out


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(get_settings().redis.url(), socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_bms(n: int) -> dict[str, Any]:
    settings = get_settings()
    prefix = f"bench:{uuid.uuid4().hex[:8]}:bms:"  # never move the shared simulated buildings
    with SimulatorProcess.start("bms", free_port(), "--redis-prefix", prefix) as sim:
        gateway = SoapBmsGateway(settings.dr)
        commands = _commands(n)
        try:
            for facility_id in {f for f, _ in commands}:  # WSDLs loaded before timing
                await gateway.ping(sim.url(f"/bms/{facility_id}"))

            async def one(facility_id: str, cmd: BmsCommand) -> tuple[float, bool]:
                t0 = time.perf_counter()
                ack = await gateway.execute(sim.url(f"/bms/{facility_id}"), cmd)
                return time.perf_counter() - t0, ack.duplicate

            t0 = time.perf_counter()
            first = await asyncio.gather(*(one(f, c) for f, c in commands))
            wall = time.perf_counter() - t0
            t1 = time.perf_counter()
            again = await asyncio.gather(*(one(f, c) for f, c in commands))
            wall_again = time.perf_counter() - t1
        finally:
            await gateway.close()
        async with httpx.AsyncClient(timeout=10) as admin:
            executions = (await admin.get(sim.url("/_admin/executions"))).json()
    _delete_keys(prefix)
    latencies = [lat for lat, _ in first]
    return {
        "bms_commands": n,
        "bms_commands_per_s": round(n / wall, 1),
        "bms_latency_p50_ms": round(_pct(latencies, 0.5) * 1000, 1),
        "bms_latency_p95_ms": round(_pct(latencies, 0.95) * 1000, 1),
        "bms_duplicates_per_s": round(n / wall_again, 1),
        "bms_first_calls_flagged_duplicate": sum(d for _, d in first),
        "bms_repeat_calls_flagged_duplicate": sum(d for _, d in again),
        "bms_keys_executed_more_than_once": sum(1 for c in executions.values() if c > 1),
        "bms_keys_executed": len(executions),
    }


async def bench_vtn(m: int) -> dict[str, Any]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    settings = get_settings()
    token = settings.seed.utility_bearer_token.get_secret_value()
    received: dict[str, float] = {}
    all_received = asyncio.Event()

    async def hook(request: Request) -> Response:
        import json

        body = json.loads(await request.body())
        received[body["object"]["eventName"]] = time.perf_counter()
        if len(received) >= m:
            all_received.set()
        return Response(status_code=202)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.02)
    try:
        with SimulatorProcess.start("utility", free_port(), "--callback-url", f"http://127.0.0.1:{port}/hook") as sim:
            base = sim.url("/openadr3/3.1.0")
            sent: dict[str, float] = {}
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as bl:
                t0 = time.perf_counter()
                for i in range(m):
                    name = f"bench-{i}"
                    sent[name] = time.perf_counter()
                    resp = await bl.post(
                        "/events",
                        json={
                            "programID": "default",
                            "eventName": name,
                            "intervalPeriod": {"start": "2030-01-01T10:00:00Z", "duration": "PT1H"},
                            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
                        },
                    )
                    resp.raise_for_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_received.wait(), 60)
                wall = max(received.values(), default=t0) - t0
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    latencies = [received[k] - sent[k] for k in received]
    return {
        "vtn_events": m,
        "vtn_notifications_received": len(received),
        "vtn_notifications_per_s": round(len(received) / wall, 1) if wall > 0 else 0.0,
        "vtn_notify_latency_p50_ms": round(_pct(latencies, 0.5) * 1000, 1) if latencies else -1.0,
        "vtn_notify_latency_p95_ms": round(_pct(latencies, 0.95) * 1000, 1) if latencies else -1.0,
    }


async def main(quick: bool) -> None:
    from energy.observability.logging import configure_logging

    configure_logging("bench-dr-integrations", "WARNING")
    figures = {**await bench_bms(100 if quick else 600), **await bench_vtn(50 if quick else 300)}
    units = {k: ("calls/s" if k.endswith("per_s") else "ms" if k.endswith("_ms") else "count") for k in figures}
    goals = {
        "bms_keys_executed_more_than_once": "0",
        "bms_first_calls_flagged_duplicate": "0",
        "bms_repeat_calls_flagged_duplicate": "= bms_commands",
        "vtn_notifications_received": "= vtn_events",
    }
    write_results(
        "dr_integrations",
        figures,
        units,
        quick,
        goals,
        notes="Simulators as separate processes on one 2-core machine shared with other work; "
        "BMS calls go through the gateway's per-facility bulkhead (bms_concurrency_per_facility).",
    )


if __name__ == "__main__":
    args = parser(__doc__ or "").parse_args()
    asyncio.run(main(args.quick))
