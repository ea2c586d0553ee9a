"""API-1 under failure: Redis stopped, then InfluxDB stopped, while clients keep polling the
current load. Answers keep coming: from InfluxDB while Redis is down, then the last known
value with its staleness while InfluxDB is down too, and live values again once it is back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from energy.adapters.influx import InfluxClient
from energy.stack.servers import InfluxServer, RedisServer
from tests.api.conftest import now_ns, reading_lines, running_app, wait_until_serving, with_overrides
from tests.waiting import wait_until

pytestmark = pytest.mark.chaos


@dataclass
class Poll:
    phase: str
    status: int
    cache: str
    staleness_s: float
    warning: str
    current_kw: float | None
    stale: bool
    at: float


async def write_load(influx: InfluxClient, world, kw_per_meter: float) -> None:
    fid = world.a.facility_ids[0]
    await influx.write_lines([reading_lines(fid, m, now_ns(), kw_per_meter) for m in world.a.meter_ids[fid]])


async def test_polling_clients_keep_getting_answers_through_redis_then_influxdb_outage(
    settings, world, private_server, stack
):
    redis_srv = private_server(RedisServer)
    influx_srv = private_server(InfluxServer)
    influx_srv.provision()
    chaos = with_overrides(
        settings,
        redis={"port": redis_srv.port},
        influx={"url": f"http://127.0.0.1:{influx_srv.port}"},
        api={"current_cache_ttl_s": 0.3, "current_stale_max_s": 0.6, "rate_limit_per_s": 1000.0},
    )
    writer = InfluxClient(chaos.influx, breaker_name="influxdb-chaos-writer")
    fid = world.a.facility_ids[0]
    polls: list[Poll] = []
    phase = "all_up"
    stop = asyncio.Event()
    try:
        await write_load(writer, world, 10.0)  # 2 meters -> 20 kW
        async with running_app(chaos) as (_, client):

            async def poller() -> None:
                while not stop.is_set():
                    resp = await client.get(f"/api/facilities/{fid}/current", headers=world.a.headers["analyst"])
                    body = resp.json() if resp.status_code == 200 else {}
                    polls.append(
                        Poll(
                            phase,
                            resp.status_code,
                            resp.headers.get("X-Cache", ""),
                            float(resp.headers.get("X-Data-Staleness-Seconds", "nan")),
                            resp.headers.get("Warning", ""),
                            body.get("current_kw"),
                            bool(body.get("stale")),
                            time.monotonic(),
                        )
                    )
                    await asyncio.sleep(0.05)  # the clients' polling pace

            def in_phase(name: str) -> list[Poll]:
                return [p for p in polls if p.phase == name]

            # Each phase lasts until the answers it is about were seen (no fixed durations: at load 10+
            # a fixed second may hold fewer polls than the checks below read).
            tasks = [asyncio.create_task(poller()) for _ in range(5)]
            await wait_until(
                lambda: len(in_phase("all_up")) >= 10 and {"hit", "memory"} & {p.cache for p in in_phase("all_up")},
                timeout_s=30,
                what="10 polls with all up, served from a cache",
            )

            phase = "redis_down"
            redis_srv.stop()
            await wait_until(lambda: len(in_phase("redis_down")) >= 5, timeout_s=30, what="5 polls with Redis down")
            await write_load(writer, world, 15.0)  # a change only InfluxDB knows about -> 30 kW
            await wait_until(  # the poll that loaded it from InfluxDB ("miss") included, not only those after it
                lambda: (
                    len(in_phase("redis_down")) >= 10
                    and 30.0 in {p.current_kw for p in in_phase("redis_down")}
                    and "miss" in {p.cache for p in in_phase("redis_down")}
                ),
                timeout_s=30,
                what="30 kW read from InfluxDB with Redis down",
            )

            phase = "redis_and_influx_down"
            influx_srv.stop()
            influx_stopped_at = time.monotonic()
            await wait_until(
                lambda: [
                    p.staleness_s
                    for p in in_phase("redis_and_influx_down")
                    if p.at > influx_stopped_at + 1.0 and p.staleness_s >= 1.5
                ],
                timeout_s=30,
                what="the last known value served 1.5 s stale with both down",
            )

            phase = "influx_back"
            influx_srv.start()
            await write_load(writer, world, 20.0)  # 40 kW
            await wait_until(  # the InfluxDB breaker stays open for up to 10 s
                lambda: any(p.current_kw == 40.0 and not p.stale for p in in_phase("influx_back")),
                timeout_s=30,
                what="live values again after InfluxDB restarts",
                interval_s=0.2,
            )
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await writer.close()

    by_phase: dict[str, list[Poll]] = {}
    for p in polls:
        by_phase.setdefault(p.phase, []).append(p)
    # Answers kept coming in every phase, and none of them was an error.
    assert all(len(by_phase.get(ph, [])) >= 10 for ph in ("all_up", "redis_down", "redis_and_influx_down"))
    assert [p for p in polls if p.status != 200] == []

    up = by_phase["all_up"]
    assert {p.current_kw for p in up} == {20.0} and not any(p.stale for p in up)
    assert {"hit", "memory"} & {p.cache for p in up}

    redis_down = by_phase["redis_down"]
    assert not any(p.stale or p.warning for p in redis_down)
    assert "hit" not in {p.cache for p in redis_down[5:]}  # Redis is not answering: no Redis hits
    assert "miss" in {p.cache for p in redis_down}  # values loaded from InfluxDB
    assert 30.0 in {p.current_kw for p in redis_down}  # InfluxDB was read directly

    both_down = by_phase["redis_and_influx_down"]
    settled = [p for p in both_down if p.at > influx_stopped_at + 1.0]
    odd = [p for p in settled if not (p.stale and p.cache == "fallback" and p.warning.startswith("110"))]
    assert settled and not odd, odd[:5]
    assert {p.current_kw for p in settled} == {30.0}  # the last known value
    staleness = [p.staleness_s for p in settled]
    assert staleness[-1] > staleness[0] and staleness[-1] >= 1.5

    back = by_phase["influx_back"]
    assert any(p.current_kw == 40.0 and not p.stale for p in back), "live values again after InfluxDB restarts"


async def test_export_cut_by_an_influxdb_outage_never_looks_complete(settings, world, private_server, port, stack):
    """InfluxDB stops while a CSV export streams: the client must see a broken transfer (no
    terminating chunk), never a shorter file that looks complete; before the stream, a clean 503."""
    import httpx

    from api.app import create_app
    from energy.observability.http import serve_app
    from tests.api.conftest import rollup_line

    influx_srv = private_server(InfluxServer)
    influx_srv.provision()
    chaos = with_overrides(
        settings, influx={"url": f"http://127.0.0.1:{influx_srv.port}"}, api={"export_page_rows": 100}
    )
    writer = InfluxClient(chaos.influx, breaker_name="influxdb-chaos-export")
    fid = world.a.facility_ids[0]
    base_ns = (now_ns() // (60 * 10**9) - 2000) * 60 * 10**9
    await writer.write_lines(
        [rollup_line(fid, "1m", base_ns + i * 60 * 10**9, 1.0 + i) for i in range(2000)], retention_policy="rollups_2y"
    )
    await writer.close()
    app = create_app(chaos)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop))
    from datetime import UTC, datetime, timedelta

    start = datetime.fromtimestamp(base_ns / 1e9, UTC)
    params = {
        "facility_id": fid,
        "granularity": "1m",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=2000)).isoformat(),
    }
    lines = 0
    broken: Exception | None = None
    try:
        await wait_until_serving(app, port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            try:
                async with c.stream(
                    "GET", "/api/exports/readings.csv", params=params, headers=world.a.headers["analyst"]
                ) as resp:
                    assert resp.status_code == 200
                    async for chunk in resp.aiter_bytes():
                        lines += chunk.count(b"\n")
                        if lines > 150 and influx_srv.running():
                            influx_srv.stop()
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                broken = exc
            after = await c.get("/api/exports/readings.csv", params=params, headers=world.a.headers["analyst"])
    finally:
        stop.set()
        await server
    assert broken is not None, f"the transfer ended normally after {lines} lines of 2001"
    assert lines < 2001
    assert after.status_code == 503 and after.json()["error"]["code"] == "dependency_unavailable"
