"""DR saga benchmark: webhook latency, and time from webhook to every BMS command confirmed for an
event over 100 facilities with 200 ms BMS latency and one BMS down.

Runs against a private PostgreSQL (100 seeded facilities), the BMS simulator as a separate process,
the real API over HTTP and the coordinator, all on 127.0.0.1.

    python -m bench.dr [--quick]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import parser, write_results

FACILITIES = 100
DOWN = "fac-050"
TOKEN = "bench-token"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _private_root(data_dir: Path) -> Path:
    """A folder under the stack folder, which the postgres user can traverse."""
    root = Path(tempfile.mkdtemp(prefix="bench-dr-", dir=data_dir))
    root.chmod(0o755)
    return root


async def run(quick: bool) -> dict[str, Any]:
    from energy.adapters.influx import InfluxClient
    from energy.adapters.postgres import create_pool
    from energy.db.migrate import migrate
    from energy.seed import seed_fleet
    from energy.settings import get_settings
    from energy.stack.process import free_port
    from energy.stack.servers import PostgresServer
    from sim.bms.process import SimulatorProcess
    from tests.dr.conftest import admin, api_server, coordinator, dr_settings, make_utility

    base_settings = get_settings()
    root = _private_root(base_settings.stack.data_dir)
    pg = PostgresServer(root=root, port=free_port())
    pg.start()
    try:
        s = dr_settings(
            base_settings,
            dispatch_lead_s=600.0,  # dispatch at once: measure the pipeline, not the lead time
            bms_command_max_attempts=5,
            bms_breaker_fail_max=3,
            poll_interval_s=0.05,
            worker_batch=120,  # global bound on BMS calls in flight (one simulator process serves all 100)
        )
        s = s.model_copy(
            update={
                "postgres": s.postgres.model_copy(update={"port": pg.port, "pool_max": 20}),
                "seed": s.seed.model_copy(update={"facilities": FACILITIES}),
            }
        )
        await migrate(s.postgres.dsn())
        await seed_fleet(s, facilities=FACILITIES)
        pool = await create_pool(s.postgres, min_size=2, max_size=20)
        influx = InfluxClient(s.influx, breaker_name="influx-bench-dr")
        fleet = [f"fac-{i:03d}" for i in range(1, FACILITIES + 1)]
        uid = uuid.uuid4().hex[:8]
        utility = await make_utility(pool, uid, TOKEN, method="forecast")
        await pool.executemany(
            "INSERT INTO facility_enrollments (utility_id, facility_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(utility.utility_id, f) for f in fleet],
        )
        env = {"ENERGY_SEED__FACILITIES": str(FACILITIES)}
        with SimulatorProcess.start("bms", free_port(), "--latency-ms", "200", log_dir=root, env=env) as bms:
            admin(bms, "faults", {"facility_id": DOWN, "down": True})
            s = s.model_copy(
                update={
                    "dr": s.dr.model_copy(
                        update={"bms_base_url": bms.url("/bms"), "only_utility_ids": utility.utility_id}
                    )
                }
            )
            async with api_server(s) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
                # 1. webhook latency: distinct events (one facility each, disjoint windows), then duplicates
                n = 100 if quick else 500
                url = f"/api/utility/{utility.utility_id}/events"
                far = datetime.now(UTC) + timedelta(days=2)
                lat: list[float] = []
                for i in range(n):
                    body = {
                        "event_id": f"lat-{i}",
                        "facilities": [fleet[i % FACILITIES]],
                        "start": (far + timedelta(minutes=10 * i)).isoformat(),
                        "duration_s": 300,
                        "target_kw": 10.0,
                    }
                    t0 = time.perf_counter()
                    resp = await client.post(url, json=body, headers=utility.auth)
                    lat.append((time.perf_counter() - t0) * 1000)
                    assert resp.status_code == 202, resp.text
                dup: list[float] = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    resp = await client.post(url, json={**body}, headers=utility.auth)
                    dup.append((time.perf_counter() - t0) * 1000)
                    assert resp.status_code == 200
                await pool.execute("UPDATE dr_events SET state = 'cancelled' WHERE utility_id = $1", utility.utility_id)

                # 2. one event over 100 facilities: webhook -> every healthy facility's commands confirmed
                async with coordinator(s, pool, influx) as coord:
                    # a long-running coordinator has its BMS clients open; wait for that before measuring
                    await asyncio.wait_for(coord.warmed.wait(), 120)
                    start = datetime.now(UTC) + timedelta(seconds=30)
                    t0 = time.perf_counter()
                    resp = await client.post(
                        url,
                        json={
                            "event_id": "big",
                            "facilities": fleet,
                            "start": start.isoformat(),
                            "duration_s": 60,
                            "target_kw": 8000.0,
                        },
                        headers=utility.auth,
                    )
                    assert resp.status_code == 202, resp.text
                    eid = uuid.UUID(resp.json()["dr_event_id"])
                    healthy_s = None
                    while time.perf_counter() - t0 < 120:
                        row = await pool.fetchrow(
                            """SELECT count(*) FILTER (WHERE status <> 'acknowledged') AS open, count(*) AS total
                               FROM bms_commands WHERE dr_event_id = $1 AND facility_id <> $2""",
                            eid,
                            DOWN,
                        )
                        if row["total"] > 0 and row["open"] == 0:
                            healthy_s = time.perf_counter() - t0
                            break
                        await asyncio.sleep(0.05)
                    commands = int(row["total"])
                    # the down facility resolves (failed, compensated) and the event is cancelled -> all restored
                    while time.perf_counter() - t0 < 120:
                        st = await pool.fetchval(
                            "SELECT state FROM dr_event_facilities WHERE dr_event_id = $1 AND facility_id = $2",
                            eid,
                            DOWN,
                        )
                        if st in ("failed", "restoring"):
                            break
                        await asyncio.sleep(0.1)
                    down_resolved_s = time.perf_counter() - t0
                    await client.delete(f"{url}/big", headers=utility.auth)
                    while time.perf_counter() - t0 < 180:
                        state = await pool.fetchval("SELECT state FROM dr_events WHERE dr_event_id = $1", eid)
                        if state in ("cancelled", "partially_failed", "failed", "completed"):
                            break
                        await asyncio.sleep(0.1)
                    restore_done_s = time.perf_counter() - t0
                keys = [
                    r["idempotency_key"]
                    for r in await pool.fetch("SELECT idempotency_key FROM bms_commands WHERE dr_event_id = $1", eid)
                ]
                executions = admin(bms, "executions")
                duplicates = sum(max(0, executions.get(k, 0) - 1) for k in keys)
        await influx.close()
        await pool.close()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "webhook_requests": n,
        "webhook_p50_ms": round(statistics.median(lat), 2),
        "webhook_p99_ms": round(pct(lat, 0.99), 2),
        "webhook_duplicate_p99_ms": round(pct(dup, 0.99), 2),
        "dispatch_facilities": FACILITIES,
        "dispatch_bms_commands": commands,
        "dispatch_all_healthy_s": round(healthy_s, 2) if healthy_s is not None else -1.0,
        "down_facility_resolved_s": round(down_resolved_s, 2),
        "cancel_to_all_restored_s": round(restore_done_s - down_resolved_s, 2),
        "final_state": state,
        "duplicate_bms_executions": duplicates,
    }


def main() -> None:
    args = parser(__doc__ or "DR benchmark").parse_args()
    figures = asyncio.run(run(args.quick))
    write_results(
        "dr",
        figures,
        units={
            "webhook_p50_ms": "ms",
            "webhook_p99_ms": "ms",
            "webhook_duplicate_p99_ms": "ms",
            "dispatch_all_healthy_s": "s",
            "down_facility_resolved_s": "s",
            "cancel_to_all_restored_s": "s",
            "dispatch_bms_commands": "commands",
            "duplicate_bms_executions": "executions",
        },
        quick=args.quick,
        goals={"webhook_p99_ms": "< 100", "dispatch_all_healthy_s": "< 10", "duplicate_bms_executions": "0"},
        notes=(
            "Private PostgreSQL with 100 seeded facilities; BMS simulator (separate process) with 200 ms latency on "
            f"every call and {DOWN} down; API and coordinator in one process on a shared 2-core machine. "
            "Webhook latency: sequential POSTs of distinct accepted events over HTTP. Dispatch is measured "
            "from the webhook POST with the coordinator already warm (BMS clients opened at start) and "
            "dispatch_lead_s large enough that dispatch starts at once."
        ),
    )


if __name__ == "__main__":
    main()
