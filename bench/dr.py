"""DR saga benchmark at fleet scale: 5 utilities, each its own simulated OpenADR 3.1 VTN onboarded
through the onboarding path, an event from every VTN at once over all the facilities enrolled in its
program (1,000 facilities in all; ``--quick``: 100), BMS latency 200 ms on every call and one BMS
down. Measured: from the VTNs' POST /events (each notifies our webhook while the request waits) to
every healthy facility's BMS commands confirmed; the cancel (DELETE at the VTNs) to every zone
restored; the webhook's own latency; CPU-seconds of the coordinator process per facility.

Anchor (issue 16): the BMS simulator's own capacity, measured in the same run on the same simulator
(same latency): a bare HTTP client sends as many pre-built SetSetpoint calls as the dispatch
confirmed (1,000 to 2,000), with the coordinator's bound on calls in flight and its connection
behaviour (kept alive, a pool per facility); three runs after the dispatch, the median rate is the
figure (decision 1021). The ratio coordinator : anchor is the figure that transfers between machines.

Private PostgreSQL (the fleet seeded into it), the BMS and VTN simulators as separate processes,
the real API over HTTP and the coordinator (VEN runtime included) in this process, all on 127.0.0.1.

    python -m bench.dr [--quick] [--profile FILE]   # --profile: cProfile of this process while dispatching
"""

from __future__ import annotations

import asyncio
import cProfile
import faulthandler
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.anchors import run_anchor
from bench.common import parser, write_results

UTILITIES = 5
DOWN = "fac-050"
BMS_LATENCY_MS = 200
# The worker's global bound on BMS calls in flight (dr.worker_batch; production default 200). One
# simulator process serves every facility here (1,000 real BMSs would not share a CPU): calls in
# flight beyond its capacity times the call timeout only queue into timeouts, which open healthy
# facilities' breakers. 128: with 200 ms per call, 4,000 commands need >= 80 in flight for < 10 s.
IN_FLIGHT = 128
HVAC_ZONES = 4  # every seeded facility has hvac-1..hvac-4 (energy.fleet)
ANCHOR_RUNS = 3  # the anchor's figure is the median of its runs
ANCHOR_MIN_CALLS = 1000  # a --quick dispatch confirms ~400 commands: too few calls to measure a rate


def _progress(message: str) -> None:
    print(f"bench.dr: {message}", file=sys.stderr, flush=True)


def _seconds(value: float) -> float:
    """Rounded; -1.0 for a wait that timed out (NaN)."""
    return round(value, 2) if value == value else -1.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _private_root(data_dir: Path) -> Path:
    """A folder under the stack folder, which the postgres user can traverse."""
    root = Path(tempfile.mkdtemp(prefix="bench-dr-", dir=data_dir))
    root.chmod(0o755)
    return root


def _cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def _tree_cpu(pid: int | None) -> float:
    """CPU of a server and its children (PostgreSQL's backends)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        return _cpu(root) + sum(_cpu(c) for c in root.children(recursive=True))
    except psutil.Error:
        return 0.0


async def _wait(what: str, check: Any, timeout_s: float, every_s: float = 0.05) -> float:
    """perf_counter when ``check()`` is first truthy; NaN (and a line on stderr) after ``timeout_s``."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        try:
            if await check():
                return time.perf_counter()
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:  # a loaded server: ask again
            _progress(f"{what}: check failed ({type(exc).__name__}), asking again")
        await asyncio.sleep(every_s)
    _progress(f"{what}: not within {timeout_s}s")
    return float("nan")


async def run(quick: bool, profile: str | None) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    from dr_coordinator.adapters import onboarding
    from energy.adapters.influx import InfluxClient
    from energy.adapters.postgres import create_pool
    from energy.db.migrate import migrate
    from energy.seed import seed_fleet
    from energy.settings import get_settings
    from energy.stack.process import free_port
    from energy.stack.servers import PostgresServer
    from schemas.utilities import EnrollmentIn, ProgramIn, UtilityIn
    from sim.bms.process import SimulatorProcess
    from tests.dr.conftest import admin, coordinator, dr_settings
    from tests.dr.test_saga_e2e import api_server_on

    facilities = 100 if quick else 1000
    fleet = [f"fac-{i:03d}" for i in range(1, facilities + 1)]
    healthy = [f for f in fleet if f != DOWN]
    per_utility = facilities // UTILITIES
    base_settings = get_settings()
    bl_token = base_settings.seed.utility_bearer_token.get_secret_value()  # the utilities' business logic
    root = _private_root(base_settings.stack.data_dir)
    run_id = uuid.uuid4().hex[:6]
    pg = PostgresServer(root=root, port=free_port())
    pg.start()
    sims: list[SimulatorProcess] = []
    try:
        api_port = free_port()
        s = dr_settings(
            base_settings,
            dispatch_lead_s=600.0,  # dispatch at once: measure the pipeline, not the lead time
            bms_command_max_attempts=5,
            bms_breaker_fail_max=3,
            poll_interval_s=0.05,
            worker_batch=IN_FLIGHT,
            bms_lease_s=60.0,  # longer than a call can wait (the tests' short lease re-sends calls still queued)
            # One simulator process queues every building's calls on a CPU shared with the coordinator:
            # its queueing is not a building failing. With the 5 s default, timeouts under load opened
            # the breakers of healthy buildings (53 of 999 failed for good in a full run).
            bms_total_timeout_s=30.0,
            bms_connect_timeout_s=10.0,  # its accept queue waits for CPU too (ConnectTimeouts at 2 s)
            bms_retry_base_s=0.5,
            bms_retry_max_s=10.0,
            ven_poll_interval_s=60.0,
            webhook_base_url=f"http://127.0.0.1:{api_port}",
        )
        defaults = type(s.dr)().model_dump()
        overrides = {k: v for k, v in s.dr.model_dump().items() if v != defaults[k] and not k.endswith("_url")}
        s = s.model_copy(
            update={
                "postgres": s.postgres.model_copy(update={"port": pg.port, "pool_max": 20}),
                "seed": s.seed.model_copy(update={"facilities": facilities}),
                "endpoints": s.endpoints.model_copy(update={"api_port": api_port}),
            }
        )
        await migrate(s.postgres.dsn())
        await seed_fleet(s, facilities=facilities)
        pool = await create_pool(s.postgres, min_size=2, max_size=20)
        influx = InfluxClient(s.influx, breaker_name="influx-bench-dr")
        env = {"ENERGY_SEED__FACILITIES": str(facilities)}
        bms = SimulatorProcess.start(
            "bms",
            free_port(),
            "--latency-ms",
            str(BMS_LATENCY_MS),
            "--redis-prefix",
            f"bench-dr-{run_id}:",
            log_dir=root,
            env=env,
            wait_s=120,
        )
        sims.append(bms)
        admin(bms, "faults", {"facility_id": DOWN, "down": True, "latency_ms": BMS_LATENCY_MS})
        vtns = [
            SimulatorProcess.start(
                "utility", free_port(), "--openadr-version", "3.1", "--callback-url", "none", log_dir=root
            )
            for _ in range(UTILITIES)
        ]
        sims.extend(vtns)

        # Onboarding: each utility's VTN, VEN credentials, webhook token, program and enrollments.
        ids = [f"bench-dr-{run_id}-{i}" for i in range(UTILITIES)]
        programs: list[str] = []
        hooks: list[str] = []
        for i, (uid, vtn) in enumerate(zip(ids, vtns, strict=True)):
            async with httpx.AsyncClient(base_url=vtn.url("/openadr3/3.1.0"), timeout=10) as bl:
                resp = await bl.post(
                    "/programs", json={"programName": f"peak-{i}"}, headers={"Authorization": f"Bearer {bl_token}"}
                )
                resp.raise_for_status()
                programs.append(resp.json()["id"])
            hooks.append(f"bench-hook-token-{run_id}-{i}")
            async with pool.acquire() as conn:
                await onboarding.add_utility(
                    conn,
                    UtilityIn(
                        utility_id=uid,
                        name=uid,
                        vtn_base_url=vtn.url("/openadr3/3.1.0"),
                        ven_name=f"ven-{uid}",
                        ven_token=s.dr.vtn_token,
                        webhook_token=hooks[-1],
                        baseline_method="forecast",
                    ),
                    "bench",
                )
                await onboarding.add_program(conn, uid, ProgramIn(program_id=programs[-1], notice_s=0), "bench")
                await onboarding.enroll(
                    conn,
                    uid,
                    EnrollmentIn(program_id=programs[-1], facility_ids=fleet[i * per_utility : (i + 1) * per_utility]),
                    "bench",
                )
        s = s.model_copy(
            update={"dr": s.dr.model_copy(update={"bms_base_url": bms.url("/bms"), "only_utility_ids": ",".join(ids)})}
        )
        me = psutil.Process()
        async with api_server_on(s, api_port) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            # 1. webhook latency (platform JSON route of utility 0): distinct events, then duplicates
            n = 100
            url = f"/api/utility/{ids[0]}/events"
            auth = {"Authorization": f"Bearer {hooks[0]}"}
            far = datetime.now(UTC) + timedelta(days=2)
            lat: list[float] = []
            body: dict[str, Any] = {}
            for i in range(n):
                body = {
                    "event_id": f"lat-{i}",
                    "facilities": [fleet[i % per_utility]],
                    "start": (far + timedelta(minutes=10 * i)).isoformat(),
                    "duration_s": 300,
                    "target_kw": 10.0,
                }
                t0 = time.perf_counter()
                resp = await client.post(url, json=body, headers=auth)
                lat.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 202, resp.text
            dup: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                resp = await client.post(url, json={**body}, headers=auth)
                dup.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 200
            await pool.execute("UPDATE dr_events SET state = 'cancelled' WHERE utility_id = $1", ids[0])

            # 2. one event per VTN over its program's facilities: VTN POST -> every healthy BMS confirmed
            async with coordinator(s, pool, influx) as coord:
                # a long-running coordinator has its BMS clients open and its VENs subscribed
                warm0 = time.perf_counter()
                await asyncio.wait_for(coord.warmed.wait(), 900)
                warm_up_s = time.perf_counter() - warm0
                _progress(f"coordinator warm after {warm_up_s:.1f}s")

                # One client per VTN for the whole run: a client's TLS context alone costs ~25 ms of CPU in
                # this (the coordinator's) process, and the readiness check below asks every 0.5 s.
                bls = [
                    httpx.AsyncClient(
                        base_url=v.url("/openadr3/3.1.0"), timeout=60, headers={"Authorization": f"Bearer {bl_token}"}
                    )
                    for v in vtns
                ]

                async def subscribed() -> bool:
                    for bl in bls:
                        subs = await bl.get("/subscriptions")
                        if not subs.json():
                            return False
                    return True

                await _wait("VENs subscribed", subscribed, 120, every_s=0.5)
                start = (datetime.now(UTC) + timedelta(seconds=30)).replace(microsecond=0)
                event = {
                    "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": "PT10M"},
                    "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
                }
                profiler = cProfile.Profile() if profile else None
                pg_cpu0, bms_cpu0, cpu0 = _tree_cpu(pg.pid()), _cpu(psutil.Process(bms.proc.pid)), _cpu(me)
                if profiler:
                    profiler.enable()
                t0 = time.perf_counter()
                posted_at = datetime.now(UTC)
                posted = await asyncio.gather(
                    *(bl.post("/events", json={**event, "programID": p}) for bl, p in zip(bls, programs, strict=True))
                )
                webhooks_s = time.perf_counter() - t0
                # 500: the VTN stored the event but our webhook did not answer within its timeout (a
                # loaded machine); the VEN runtime's polling then picks the event up (counted, not hidden).
                notifications_failed = sum(resp.status_code != 201 for resp in posted)
                vtn_events = []
                for uid, resp in zip(ids, posted, strict=True):
                    if resp.status_code == 201:
                        vtn_events.append((uid, resp.json()["id"]))
                    else:
                        found = re.search(r"event (\S+) stored", resp.text)
                        assert found, resp.text
                        vtn_events.append((uid, found.group(1)))
                eids: list[uuid.UUID] = []
                for uid, vtn_event_id in vtn_events:

                    async def taken(uid: str = uid, vtn_event_id: str = vtn_event_id) -> bool:
                        found = await pool.fetchval(
                            "SELECT dr_event_id FROM dr_events WHERE utility_id = $1 AND vtn_event_id = $2",
                            uid,
                            vtn_event_id,
                        )
                        if found is not None:
                            eids.append(found)
                        return found is not None

                    await _wait(f"{uid} event {vtn_event_id} taken", taken, 150, every_s=0.1)
                if notifications_failed:
                    _progress(f"{notifications_failed} webhook notifications unanswered; events taken by polling")

                async def all_healthy_confirmed() -> bool:
                    done = await pool.fetchval(
                        """SELECT count(*) FROM (
                             SELECT facility_id FROM bms_commands WHERE dr_event_id = ANY($1::uuid[])
                               AND facility_id <> $2 GROUP BY facility_id
                             HAVING bool_and(status = 'acknowledged')) confirmed""",
                        eids,
                        DOWN,
                    )
                    confirmed[0] = int(done)
                    return confirmed[0] == len(healthy)

                confirmed = [0]

                progress = {"count": -1, "at": time.perf_counter()}

                async def all_confirmed_or_stalled() -> bool:
                    if await all_healthy_confirmed():
                        return True
                    if confirmed[0] != progress["count"]:
                        progress.update(count=confirmed[0], at=time.perf_counter())
                    return time.perf_counter() - progress["at"] > 90  # a healthy BMS failed for good

                healthy_at = await _wait("healthy facilities confirmed", all_confirmed_or_stalled, 900)
                if confirmed[0] != len(healthy):
                    healthy_at = float("nan")
                    _progress(f"only {confirmed[0]} of {len(healthy)} healthy facilities confirmed")
                # When the last confirmed command was acknowledged (the dispatch's end even if some failed).
                last_ack_s = float(
                    await pool.fetchval(
                        """SELECT EXTRACT(EPOCH FROM max(acknowledged_at) - $2) FROM bms_commands
                           WHERE dr_event_id = ANY($1::uuid[]) AND status = 'acknowledged' AND action <> 'restore'""",
                        eids,
                        posted_at,
                    )
                )
                if profiler:
                    profiler.disable()
                healthy_s = healthy_at - t0
                _progress(f"all healthy confirmed after {healthy_s:.2f}s (webhooks answered after {webhooks_s:.2f}s)")
                cpu_s = _cpu(me) - cpu0
                pg_cpu_s = _tree_cpu(pg.pid()) - pg_cpu0
                bms_cpu_s = _cpu(psutil.Process(bms.proc.pid)) - bms_cpu0
                commands = int(
                    await pool.fetchval(
                        """SELECT count(*) FROM bms_commands WHERE dr_event_id = ANY($1::uuid[])
                           AND facility_id <> $2 AND status = 'acknowledged'""",
                        eids,
                        DOWN,
                    )
                )

                async def down_resolved() -> bool:
                    st = await pool.fetchval(
                        """SELECT state FROM dr_event_facilities
                           WHERE dr_event_id = ANY($1::uuid[]) AND facility_id = $2""",
                        eids,
                        DOWN,
                    )
                    return st in ("failed", "restoring")

                down_resolved_s = await _wait("down facility resolved", down_resolved, 120, every_s=0.1) - t0
                c0 = time.perf_counter()
                cancels = await asyncio.gather(
                    *(bl.delete(f"/events/{vid}") for bl, (_, vid) in zip(bls, vtn_events, strict=True))
                )
                # A 500 is the VTN saying it stored the deletion but our webhook did not answer in time.
                cancels_unanswered = sum(resp.status_code != 200 for resp in cancels)
                _progress(f"cancels posted in {time.perf_counter() - c0:.2f}s, unanswered {cancels_unanswered}")

                async def all_final() -> bool:
                    states = await pool.fetch(
                        "SELECT state FROM dr_events WHERE dr_event_id = ANY($1::uuid[])",
                        eids,
                    )
                    return all(r["state"] in ("cancelled", "partially_failed", "failed", "completed") for r in states)

                restore_done_s = await _wait("events closed", all_final, 300, every_s=0.1) - c0
                final_states = sorted(
                    {
                        r["state"]
                        for r in await pool.fetch(
                            "SELECT state FROM dr_events WHERE dr_event_id = ANY($1::uuid[])", eids
                        )
                    }
                )
                for bl in bls:
                    await bl.aclose()
            keys = [
                r["idempotency_key"]
                for r in await pool.fetch(
                    "SELECT idempotency_key FROM bms_commands WHERE dr_event_id = ANY($1::uuid[])", eids
                )
            ]
            executions = admin(bms, "executions")
            duplicates = sum(max(0, executions.get(k, 0) - 1) for k in keys)
        # The anchor: the same simulator, same latency, same bound on calls in flight and the same
        # connection behaviour, run ANCHOR_RUNS times (each its own process and idempotency keys) once
        # the coordinator has stopped; the median rate is the figure (one run swung with the load).
        anchors = [
            run_anchor(
                [
                    "bms-soap",
                    "--url",
                    bms.url("/bms"),
                    "--facilities",
                    ",".join(healthy),
                    "--zones",
                    str(HVAC_ZONES),
                    "--n",
                    str(min(max(commands, ANCHOR_MIN_CALLS), 2000)),  # 1,000-2,000 calls measure its rate well
                    "--concurrency",
                    str(IN_FLIGHT),
                    "--per-facility",
                    str(s.dr.bms_concurrency_per_facility),
                    "--run",
                    f"anchor-{run_id}-{i}",
                ]
            )
            for i in range(ANCHOR_RUNS)
        ]
        async with pool.acquire() as conn:
            for uid in ids:
                await onboarding.remove_utility(conn, uid, "bench")
        await influx.close()
        await pool.close()
    finally:
        for sim in sims:
            sim.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    if profile and profiler:
        profiler.dump_stats(profile)
    coordinator_rate = commands / last_ack_s
    anchor_rates = [a["items"] / a["seconds"] for a in anchors]
    anchor_rate = statistics.median(anchor_rates)
    anchor_cpu_ms = statistics.median(1000 * a["cpu_s"] / max(a["items"], 1) for a in anchors)
    return {
        "settings_overrides": "dr." + ", dr.".join(f"{k}={v}" for k, v in sorted(overrides.items())),
        "load_avg_1m_start": round(load_start, 1),
        "load_avg_1m_end": round(os.getloadavg()[0], 1),
        "utilities": UTILITIES,
        "dispatch_facilities": facilities,
        "bms_latency_ms": BMS_LATENCY_MS,
        "webhook_requests": n,
        "webhook_p50_ms": round(statistics.median(lat), 2),
        "webhook_p99_ms": round(pct(lat, 0.99), 2),
        "webhook_duplicate_p99_ms": round(pct(dup, 0.99), 2),
        "coordinator_warm_up_s": round(warm_up_s, 2),
        "vtn_posts_answered_s": round(webhooks_s, 2),
        "vtn_notifications_unanswered": notifications_failed,
        "dispatch_bms_commands": commands,
        "healthy_facilities_confirmed": confirmed[0],
        "healthy_facilities": len(healthy),
        "dispatch_all_healthy_s": _seconds(healthy_s),
        "dispatch_last_confirmed_s": _seconds(last_ack_s),
        "coordinator_commands_per_s": round(coordinator_rate, 1),
        "anchor_bms_calls_per_s": round(anchor_rate, 1),
        "anchor_runs_calls_per_s": ",".join(f"{r:.1f}" for r in anchor_rates),
        "anchor_spread": round((max(anchor_rates) - min(anchor_rates)) / anchor_rate, 3),
        "anchor_client_cpu_ms_per_call": round(anchor_cpu_ms, 3),
        "anchor_failed_calls": sum(int(a["failed"]) for a in anchors),
        "ratio_coordinator_to_bms_capacity": round(coordinator_rate / anchor_rate, 3),
        "coordinator_cpu_s": round(cpu_s, 2),
        "coordinator_cpu_ms_per_facility": round(1000 * cpu_s / len(healthy), 2),
        "postgres_cpu_ms_per_facility": round(1000 * pg_cpu_s / len(healthy), 2),
        "bms_sim_cpu_ms_per_command": round(1000 * bms_cpu_s / max(commands, 1), 2),
        "down_facility_resolved_s": _seconds(down_resolved_s),
        "cancel_to_all_restored_s": _seconds(restore_done_s),
        "final_states": ",".join(final_states),
        "cancel_notifications_unanswered": cancels_unanswered,
        "duplicate_bms_executions": duplicates,
    }


def main() -> None:
    p = parser(__doc__ or "DR benchmark")
    p.add_argument("--profile", default=None, help="write a cProfile of this process while dispatching here")
    args = p.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: every thread's stack on stderr (a stalled run)
    from energy.observability.logging import configure_logging

    configure_logging("bench-dr", "INFO", True)
    figures = asyncio.run(run(args.quick, args.profile))
    write_results(
        "dr",
        figures,
        units={
            "utilities": "VTNs",
            "dispatch_facilities": "facilities",
            "bms_latency_ms": "ms",
            "webhook_p50_ms": "ms",
            "webhook_p99_ms": "ms",
            "webhook_duplicate_p99_ms": "ms",
            "coordinator_warm_up_s": "s",
            "vtn_posts_answered_s": "s",
            "dispatch_bms_commands": "commands",
            "dispatch_all_healthy_s": "s",
            "load_avg_1m_start": "runnable processes",
            "load_avg_1m_end": "runnable processes",
            "dispatch_last_confirmed_s": "s",
            "coordinator_commands_per_s": "commands/s",
            "anchor_bms_calls_per_s": "calls/s",
            "anchor_failed_calls": "calls",
            "anchor_spread": "(max - min) / median",
            "anchor_client_cpu_ms_per_call": "CPU ms",
            "ratio_coordinator_to_bms_capacity": "ratio",
            "coordinator_cpu_s": "CPU s",
            "coordinator_cpu_ms_per_facility": "CPU ms",
            "postgres_cpu_ms_per_facility": "CPU ms",
            "bms_sim_cpu_ms_per_command": "CPU ms",
            "down_facility_resolved_s": "s",
            "cancel_to_all_restored_s": "s",
            "duplicate_bms_executions": "executions",
        },
        quick=args.quick,
        goals={
            "webhook_p99_ms": "< 100",
            "dispatch_all_healthy_s": "< 10",
            "ratio_coordinator_to_bms_capacity": ">= 0.6",
            "duplicate_bms_executions": "0",
        },
        notes=(
            f"{UTILITIES} utilities, each a strict OpenADR 3.1 VTN simulator onboarded through the onboarding path "
            "(VEN registered and subscribed by the coordinator's VEN runtime), one program each with an equal "
            f"share of the fleet enrolled; one event per VTN (no targets: every resource of the program, SIMPLE "
            f"level 2), posted to all VTNs at once. BMS simulator (one separate process, an HTTP/1.1 server keeping "
            "connections alive, closing them after 5 s idle or 100 requests, one thread per connection) with "
            f"{BMS_LATENCY_MS} ms latency on every call and {DOWN} down. API, coordinator and VEN runtime in one "
            "process; CPU figures are the measured window (VTN POST to all healthy confirmed) of that process, of "
            "PostgreSQL's processes and of the BMS simulator. Anchor: a bare httpx client sending pre-built "
            f"SetSetpoint envelopes to the same simulator with at most {IN_FLIGHT} calls in flight (the "
            "coordinator's worker_batch) over kept-alive connections, one pool per facility as the coordinator "
            "keeps them, as many calls as the dispatch confirmed (1,000 to 2,000), run "
            f"{ANCHOR_RUNS} times after the dispatch: its figure is the median rate. BMS call timeout "
            "30 s, connect timeout 10 s (the shared simulator's queueing is not a building failing); every DR setting "
            "that differs from its default is in settings_overrides. Absolute figures are context (see the load "
            "averages), the ratio is the goal."
        ),
    )


if __name__ == "__main__":
    main()
