"""VEN runtime polling cost: CPU of one poll round over 5 utilities' VTNs (strict 3.1 simulators,
each listing its events), extrapolated to polling every 60 s. Goal: < 1 % of a core.

Runs against the local stack's PostgreSQL, five VTN simulator processes and the real API (the
webhook intake) in-process, all on 127.0.0.1. Measured in steady state: every event already known,
so a round is: list subscriptions, list events (all pages), compare, hand nothing over.

    python -m bench.ven_polling [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import parser, write_results

UTILITIES = 5
POLL_EVERY_S = 60.0


async def run(quick: bool) -> dict[str, Any]:
    from dr_coordinator.adapters import onboarding
    from dr_coordinator.entrypoints.ven_runtime import VenRuntime
    from energy.adapters.postgres import create_pool
    from energy.settings import get_settings
    from energy.stack.process import free_port
    from schemas.utilities import EnrollmentIn, UtilityIn
    from sim.bms.process import SimulatorProcess
    from tests.dr.conftest import dr_settings
    from tests.dr.test_saga_e2e import api_server_on

    events_per_vtn = 20 if quick else 60
    rounds = 5 if quick else 20
    base = get_settings()
    token = base.seed.utility_bearer_token.get_secret_value()
    api_port = free_port()
    s = dr_settings(base, ven_poll_interval_s=POLL_EVERY_S, webhook_base_url=f"http://127.0.0.1:{api_port}")
    s = s.model_copy(update={"endpoints": s.endpoints.model_copy(update={"api_port": api_port})})
    pool = await create_pool(s.postgres, min_size=1, max_size=8)
    run_id = uuid.uuid4().hex[:6]
    ids = [f"bench-ven-{run_id}-{i}" for i in range(UTILITIES)]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ven-"))
    sims = [
        SimulatorProcess.start(
            "utility", free_port(), "--openadr-version", "3.1", "--callback-url", "none", log_dir=log_dir
        )
        for _ in ids
    ]
    try:
        start = datetime.now(UTC) + timedelta(days=3)
        for i, (uid, sim) in enumerate(zip(ids, sims, strict=True)):
            vtn = sim.url("/openadr3/3.1.0")
            async with httpx.AsyncClient(base_url=vtn, headers={"Authorization": f"Bearer {token}"}) as bl:
                program = (await bl.post("/programs", json={"programName": "bench"})).json()["id"]
                for n in range(events_per_vtn):
                    at = (start + timedelta(minutes=20 * n + i)).isoformat()
                    body = {
                        "programID": program,
                        "targets": ["fac-001"],
                        "intervalPeriod": {"start": at, "duration": "PT10M"},
                        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
                    }
                    (await bl.post("/events", json=body)).raise_for_status()
            async with pool.acquire() as conn:
                await onboarding.add_utility(
                    conn,
                    UtilityIn(
                        utility_id=uid,
                        name=uid,
                        vtn_base_url=vtn,
                        ven_name=f"ven-{uid}",
                        ven_token=s.dr.vtn_token,
                        webhook_token=f"bench-hook-token-{run_id}-{i}",
                    ),
                    "bench",
                )
                await onboarding.enroll(conn, uid, EnrollmentIn(program_id=program, facility_ids=["fac-001"]), "bench")
        runtime = VenRuntime(pool, s, ids)
        async with api_server_on(s, api_port), httpx.AsyncClient(timeout=10) as http:
            t0 = time.perf_counter()
            await runtime.round(http)  # setup + first poll: every event handed over
            first_s = time.perf_counter() - t0
            handed = sum(v.handed_over for v in runtime.vens.values())
            cpu: list[float] = []
            wall: list[float] = []
            for _ in range(rounds):
                for uid in ids:
                    runtime._next_poll[uid] = 0.0  # poll every utility this round
                c0, w0 = time.process_time(), time.perf_counter()
                await runtime.round(http)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
            await runtime.clients.close()
        per_round_cpu = statistics.median(cpu)
        return {
            "utilities": UTILITIES,
            "events_per_vtn": events_per_vtn,
            "first_round_s": round(first_s, 3),
            "events_handed_over_first_round": handed,
            "steady_round_cpu_ms_median": round(per_round_cpu * 1000, 2),
            "steady_round_wall_ms_median": round(statistics.median(wall) * 1000, 2),
            "core_share_polling_every_60s_pct": round(100 * per_round_cpu / POLL_EVERY_S, 4),
        }
    finally:
        for sim in sims:
            sim.stop()
        await pool.execute("UPDATE dr_events SET state = 'cancelled' WHERE utility_id = ANY($1::text[])", ids)
        async with pool.acquire() as conn:
            for uid in ids:
                await onboarding.remove_utility(conn, uid, "bench")
        await pool.close()


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    result = asyncio.run(run(args.quick))
    write_results(
        "ven_polling",
        result,
        units={
            "utilities": "VTNs",
            "events_per_vtn": "events",
            "first_round_s": "s",
            "events_handed_over_first_round": "events",
            "steady_round_cpu_ms_median": "ms CPU",
            "steady_round_wall_ms_median": "ms",
            "core_share_polling_every_60s_pct": "% of a core",
        },
        quick=args.quick,
        goals={"core_share_polling_every_60s_pct": "< 1"},
        notes="CPU of this process (VEN runtime and the in-process API) per round, every event already known.",
    )


if __name__ == "__main__":
    main()
