"""Chaos (DR-3, DR-4, DR-5, DR-6, DR-9, OPS-1): the coordinator killed mid-dispatch while its
PostgreSQL restarts; one building's BMS down. Real processes, real servers, counted outcomes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dr_coordinator.entrypoints.vtn_reporting import SETTLEMENT_WAIT_S
from energy.adapters.postgres import create_pool
from energy.db.migrate import migrate
from energy.fleet import build_fleet, token_hash
from energy.observability.metrics import REGISTRY
from energy.seed import seed_fleet
from energy.settings import Settings
from energy.stack.process import free_port
from energy.stack.servers import PostgresServer
from sim.bms.process import SimulatorProcess
from tests.dr.conftest import (
    FLEET,
    PG_TRANSIENT,
    admin,
    api_server,
    assert_each_command_applied_once,
    coordinator,
    dr_settings,
    event_body,
    make_utility,
    wait_for_state,
)
from tests.waiting import wait_until

# The restart test's event: it must outlast the kill, a PostgreSQL restart and the new coordinator's start,
# so that the restarted coordinator finishes the dispatch while the event runs. At load 13-14 that took 31 s
# and 38 s from the dispatch to the new coordinator's warm-up; with a 20 s event the event ended first, the
# unsent commands were superseded by the restores and never reached the BMS ("a command never reached the
# BMS"). 75 s is twice the worst seen; the test says so plainly if the event ends first all the same.
RESTART_EVENT_S = 75


async def post_event(
    s: Settings, utility: Any, name: str, lead_s: float, duration_s: float, facilities: list[str], target_kw: float
) -> uuid.UUID:
    """The utility's event through the real API, its start taken once the API is up (with the coordinator
    already running, neither start-up is counted against the event's lead)."""
    async with api_server(s) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        start = datetime.now(UTC) + timedelta(seconds=lead_s)
        resp = await client.post(
            f"/api/utility/{utility.utility_id}/events",
            json=event_body(name, start, duration_s, facilities, target_kw=target_kw),
            headers=utility.auth,
        )
    assert resp.status_code == 202, resp.text
    return uuid.UUID(resp.json()["dr_event_id"])


async def answers_ready(port: int) -> bool:
    async with httpx.AsyncClient(timeout=2) as c:
        return (await c.get(f"http://127.0.0.1:{port}/ready")).status_code == 200


def energy_argv() -> list[str]:
    exe = Path(sys.executable).with_name("energy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "energy.cli"]


def start_coordinator(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*energy_argv(), "dr", "run"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )


async def wait_count(pool: Any, sql: str, args: tuple[Any, ...], at_least: int, timeout_s: float) -> int:
    return int(
        await wait_until(
            lambda: pool.fetchval(sql, *args),
            accept=lambda n: int(n) >= at_least,
            timeout_s=timeout_s,
            what=f"at least {at_least}: {sql}",
            interval_s=0.05,
            ignore=PG_TRANSIENT,
        )
    )


@pytest.mark.chaos
@pytest.mark.slow
async def test_restart_mid_dispatch_with_postgres_restart_sends_each_bms_command_once_and_keeps_the_trace(
    settings: Settings, stack: Any, private_server: Any, uid: str, tmp_path: Path
) -> None:
    pg = private_server(PostgresServer)
    s = dr_settings(settings)
    s = s.model_copy(update={"postgres": s.postgres.model_copy(update={"port": pg.port})})
    await migrate(s.postgres.dsn())
    await seed_fleet(s)
    pool = await create_pool(s.postgres, min_size=1, max_size=5)
    coord_log = tmp_path / "coordinator.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (
            SimulatorProcess.start("bms", free_port(), "--latency-ms", "300", log_dir=tmp_path) as bms,
            SimulatorProcess.start("utility", free_port(), log_dir=tmp_path) as vtn,
        ):
            utility = await make_utility(pool, uid, f"token-{uid}", vtn.url("/openadr3/3.1.0"), method="forecast")
            coordinator_port = free_port()
            env = {
                "ENERGY_POSTGRES__PORT": str(pg.port),
                "ENERGY_ENDPOINTS__DR_COORDINATOR_PORT": str(coordinator_port),
                "ENERGY_DR__BMS_BASE_URL": bms.url("/bms"),
                "ENERGY_DR__ONLY_UTILITY_IDS": utility.utility_id,
                "ENERGY_DR__DISPATCH_LEAD_S": "2",
                "ENERGY_DR__POLL_INTERVAL_S": "0.2",
                "ENERGY_DR__BMS_LEASE_S": "3",
                "ENERGY_DR__BMS_RETRY_BASE_S": "0.3",
                "ENERGY_DR__BMS_COMMAND_MAX_ATTEMPTS": "20",
                # two waves of 40 calls of 300 ms: the kill below lands mid-dispatch however fast acks are
                # recorded (they are batched: 80 calls in flight at once were acknowledged in one go)
                "ENERGY_DR__WORKER_BATCH": "40",
                # as dr_settings: no reconciliation rounds (their own test is below); the longer event reaches
                # production's 30 s interval, and a round found a zone another test's simulator had set
                # (the simulators share the zone states in Redis) and corrected it with a second command
                "ENERGY_DR__RECONCILE_INTERVAL_S": "3600",
                "ENERGY_LOG__LEVEL": "INFO",
            }
            procs.append(start_coordinator(env, coord_log))
            await wait_until(
                lambda: answers_ready(coordinator_port),
                timeout_s=90,
                what="the coordinator process ready",
                interval_s=0.2,
                ignore=(httpx.TransportError,),
            )
            trace_id = secrets.token_hex(16)
            async with api_server(s) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
                # taken once the API and the coordinator are up: their start-up on a loaded machine once put
                # the start in the past
                start = datetime.now(UTC) + timedelta(seconds=4)
                resp = await client.post(
                    f"/api/utility/{utility.utility_id}/events",
                    json=event_body("chaos", start, RESTART_EVENT_S, FLEET, target_kw=5000.0),
                    headers={**utility.auth, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
                )
            assert resp.status_code == 202, resp.text
            dr_event_id = uuid.UUID(resp.json()["dr_event_id"])

            # kill -9 once part of the dispatch is acknowledged and part is still in flight
            await wait_count(
                pool,
                "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND status = 'acknowledged'",
                (dr_event_id,),
                10,
                30,
            )
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            in_flight_keys = {
                r["idempotency_key"]
                for r in await pool.fetch(
                    "SELECT idempotency_key FROM bms_commands WHERE dr_event_id = $1 AND status = 'in_flight'",
                    dr_event_id,
                )
            }
            # What the BMS received from the killed coordinator: once every connection it had is closed on
            # the BMS's side, each request that reached it has been executed and counted (a row claimed
            # just before the kill may never have left the process: that one is sent once, not again).
            await wait_until(
                lambda: admin(bms, "connections"),
                timeout_s=30,
                what="the killed coordinator's connections closed at the BMS",
                interval_s=0.05,
                accept=lambda c: c["open"] <= 1,  # the admin request's own connection
            )
            received_before_restart = admin(bms, "requests")
            total = await pool.fetchval("SELECT count(*) FROM bms_commands WHERE dr_event_id = $1", dr_event_id)
            acked = await pool.fetchval(
                "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND status = 'acknowledged'", dr_event_id
            )
            assert acked < total, "the kill came too late to be mid-dispatch"

            # PostgreSQL restarts while the coordinator is down
            await pool.close()
            pg.stop()
            pg.start()
            pool = await create_pool(s.postgres, min_size=1, max_size=5)

            procs.append(start_coordinator(env, coord_log))
            # and PostgreSQL goes away again under the running coordinator, mid-event
            resumed = await wait_for_state(pool, dr_event_id, {"active", "restoring"}, 60)
            assert resumed == "active", "the restarted coordinator got going only after the event's end"
            await pool.close()
            pg.stop()
            await asyncio.sleep(2)  # the outage's length: the cause under test, not a wait for anything
            pg.start()
            pool = await create_pool(s.postgres, min_size=1, max_size=5)
            assert procs[1].poll() is None, "the coordinator must survive a database outage"
            state = await wait_for_state(pool, dr_event_id, {"completed", "partially_failed", "failed"}, 90)
            assert state == "completed"
            # A dispatch command whose zone was restored before it was sent is superseded and never sent, by
            # design (the worker's claim): on a loaded machine the restarted coordinator can come back after the
            # event ended. Every other command must have reached the BMS, once.
            keys = [
                r["idempotency_key"]
                for r in await pool.fetch(
                    "SELECT idempotency_key FROM bms_commands WHERE dr_event_id = $1 AND status <> 'superseded'",
                    dr_event_id,
                )
            ]
            requests = admin(bms, "requests")
            assert_each_command_applied_once(bms, keys)
            in_flight_keys &= set(keys)
            assert all(requests.get(k, 0) >= 1 for k in in_flight_keys), "every in-flight command was sent"
            resent = {k for k in in_flight_keys if received_before_restart.get(k, 0) >= 1}
            assert all(requests[k] > received_before_restart[k] for k in resent), (
                "in-flight commands the BMS had received should have been sent again"
            )
            assert await pool.fetchval(
                "SELECT count(*) FROM dr_event_facilities WHERE dr_event_id = $1 AND state = 'restored'", dr_event_id
            ) == len(FLEET)
            await wait_until(
                lambda: pool.fetchval("SELECT reported_at FROM dr_events WHERE dr_event_id = $1", dr_event_id),
                timeout_s=SETTLEMENT_WAIT_S + 30,  # the report waits for the settlements up to this after the end
                what="the report to the VTN posted",
                ignore=PG_TRANSIENT,
            )

            # OPS-1: one trace id from the webhook through the BMS calls to the report
            commands = admin(bms, "commands")
            assert commands and all(
                trace_id in (c["trace_parent"] or "") for c in commands if str(dr_event_id) in c["idempotency_key"]
            )
            lines = [json.loads(line) for line in coord_log.read_text().splitlines() if line.startswith("{")]
            traced = {ln["event"] for ln in lines if ln.get("trace_id") == trace_id}
            assert {"bms_command_executed", "dr_report_posted"} <= traced, traced
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
        await pool.close()


# The dispatch lead of the "others finish on time" test: planning 20 facilities and 76 zone commands of
# the 19 healthy buildings acknowledged must fit in it. That took about 2 s at load 9 (the failing run's
# log, once the coordinator was up); 10 s leaves a fivefold margin and is still a sixth of production's
# default (dr.dispatch_lead_s = 60 s), so the test asks more than production needs. With the 2 s of the
# shared test settings, and the coordinator started after the event, it failed at load 9-12.
ON_TIME_LEAD_S = 10.0


def breaker_rejections(facility_id: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "energy_dependency_calls"
        for sample in metric.samples
        if sample.labels.get("dependency") == f"bms:{facility_id}" and sample.labels.get("outcome") == "rejected_open"
    )


async def operator_key(pool: Any, tenant_id: str) -> str:
    key = f"op-{secrets.token_hex(12)}"
    key_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role)
           VALUES ($1, $2, 'dr test operator', $3, 'operator')""",
        key_id,
        tenant_id,
        token_hash(key),
    )
    await pool.executemany(
        "INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2)",
        [(key_id, f) for f in FLEET],
    )
    return key


@pytest.mark.chaos
@pytest.mark.slow
async def test_one_bms_down_others_finish_on_time_event_partially_failed_dlq_and_restore_retried(
    settings: Settings, stack: Any, pg_pool: Any, influx: Any, uid: str, tmp_path: Path
) -> None:
    down = "fac-005"
    utility = await make_utility(pg_pool, uid, f"token-{uid}", method="forecast")
    with SimulatorProcess.start("bms", free_port(), log_dir=tmp_path) as bms:
        admin(bms, "faults", {"facility_id": down, "down": True})
        s = dr_settings(
            settings,
            bms_base_url=bms.url("/bms"),
            only_utility_ids=utility.utility_id,
            bms_command_max_attempts=4,
            bms_breaker_fail_max=3,
            bms_breaker_reset_s=2.0,
            dispatch_lead_s=ON_TIME_LEAD_S,
        )
        rejected_before = breaker_rejections(down)
        async with (
            api_server(s) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as client,
            coordinator(s, pg_pool, influx),
        ):
            # Timed from now, with the API and the coordinator already up: their start-up (seconds at load
            # 10-15) once ate the whole lead, and the dispatch went out after the start it had to meet.
            # The event arrives before its dispatch moment (start - lead), so the healthy buildings have
            # the whole lead to be planned and to acknowledge.
            start = datetime.now(UTC) + timedelta(seconds=ON_TIME_LEAD_S + 3)
            resp = await client.post(
                f"/api/utility/{utility.utility_id}/events",
                json=event_body("down", start, 8, FLEET, target_kw=1500.0),
                headers=utility.auth,
            )
            assert resp.status_code == 202
            dr_event_id = uuid.UUID(resp.json()["dr_event_id"])
            assert (
                await wait_for_state(pg_pool, dr_event_id, {"completed", "partially_failed", "failed"}, 60)
                == "partially_failed"
            )
            facs = {
                r["facility_id"]: r["state"]
                for r in await pg_pool.fetch(
                    "SELECT facility_id, state FROM dr_event_facilities WHERE dr_event_id = $1", dr_event_id
                )
            }
            assert facs.pop(down) == "failed" and set(facs.values()) == {"restored"}

            # the healthy buildings were all shedding by the start time: as the BMS executed them (when our
            # database recorded the acknowledgement is not when the building shed; at load 13 those writes
            # met the statement timeout and were recorded after the start although the BMS ran them before)
            start_at = await pg_pool.fetchval("SELECT start_at FROM dr_events WHERE dr_event_id = $1", dr_event_id)
            healthy_keys = {
                r["idempotency_key"]
                for r in await pg_pool.fetch(
                    """SELECT idempotency_key FROM bms_commands
                       WHERE dr_event_id = $1 AND facility_id <> $2 AND action <> 'restore'""",
                    dr_event_id,
                    down,
                )
            }
            executed: dict[str, datetime] = {}
            for record in admin(bms, "commands"):
                if record["idempotency_key"] in healthy_keys:
                    at = datetime.fromisoformat(record["executed_at"])
                    executed[record["idempotency_key"]] = min(at, executed.get(record["idempotency_key"], at))
            late = sorted(k for k in healthy_keys if k not in executed or executed[k] > start_at)
            assert healthy_keys and not late, (len(late), late[:3], start_at)
            # the breaker opened: later calls to the dead BMS were refused without a network call
            assert breaker_rejections(down) > rejected_before
            # failed for good -> the DLQ topic (via the outbox) with the reason
            dlq = await pg_pool.fetch(
                """SELECT payload FROM outbox WHERE topic = 'bms-commands-dlq' AND key = $1
                   AND convert_from(payload, 'UTF8') LIKE $2""",
                down,
                f"%{dr_event_id}%",
            )
            assert dlq and all(json.loads(bytes(r["payload"]))["payload"]["reason"] for r in dlq)
            failed = await pg_pool.fetch(
                "SELECT action, status FROM bms_commands WHERE dr_event_id = $1 AND facility_id = $2",
                dr_event_id,
                down,
            )
            # nothing reached the dead BMS; unsent dispatch commands were superseded by the compensation
            assert {r["status"] for r in failed} <= {"failed", "superseded"}
            assert {r["status"] for r in failed if r["action"] == "restore"} == {"failed"}

            # DR-9: the BMS comes back; an operator retries; the building is restored and confirmed
            admin(bms, "faults", {"facility_id": down, "down": False})
            key = await operator_key(pg_pool, "tenant-a")
            timeline = await client.get(f"/api/dr/operator/events/{dr_event_id}/timeline", headers={"X-Api-Key": key})
            assert timeline.status_code == 200 and timeline.json()["failed_commands"]
            retry = await client.post(f"/api/dr/operator/events/{dr_event_id}/retry-failed", headers={"X-Api-Key": key})
            assert retry.status_code == 200 and retry.json()["count"] >= 1
            await wait_until(
                lambda: pg_pool.fetchval(
                    """SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND facility_id = $2
                       AND action = 'restore' AND status <> 'acknowledged'""",
                    dr_event_id,
                    down,
                ),
                accept=lambda pending: pending == 0,
                timeout_s=30,
                what=f"every restore of {down} acknowledged after the operator's retry",
                ignore=PG_TRANSIENT,
            )
        restore_keys = [
            r["idempotency_key"]
            for r in await pg_pool.fetch(
                "SELECT idempotency_key FROM bms_commands WHERE dr_event_id = $1 AND action = 'restore'", dr_event_id
            )
        ]
        assert_each_command_applied_once(bms, restore_keys)


@pytest.mark.chaos
async def test_restore_failed_while_bms_down_is_retried_until_the_bms_confirms_it(
    settings: Settings, stack: Any, pg_pool: Any, influx: Any, uid: str, tmp_path: Path
) -> None:
    down = "fac-011"
    utility = await make_utility(pg_pool, uid, f"token-{uid}", method="forecast")
    with SimulatorProcess.start("bms", free_port(), log_dir=tmp_path) as bms:
        s = dr_settings(
            settings,
            bms_base_url=bms.url("/bms"),
            only_utility_ids=utility.utility_id,
            bms_command_max_attempts=2,
            bms_breaker_reset_s=1.0,
            restore_retry_interval_s=1.0,
        )
        async with coordinator(s, pg_pool, influx):
            dr_event_id = await post_event(s, utility, "auto", 3, 10, [down], 30.0)
            # shed first, then the BMS dies before the end (10 s of active event for the few polls this takes):
            # the restore cannot get through
            await wait_for_state(pg_pool, dr_event_id, {"active"}, 30)
            admin(bms, "faults", {"facility_id": down, "down": True})
            restores_before_fault = await pg_pool.fetchval(
                "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND action = 'restore'", dr_event_id
            )
            assert restores_before_fault == 0, (
                "the fault came after the restore: this run did not test a failed restore"
            )
            assert await wait_for_state(pg_pool, dr_event_id, {"failed", "completed"}, 40) == "failed"
            assert await pg_pool.fetchval(
                "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND action = 'restore' AND status = 'failed'",
                dr_event_id,
            )
            admin(bms, "faults", {"facility_id": down, "down": False})
            await wait_count(
                pg_pool,
                """SELECT count(*) = count(*) FILTER (WHERE status = 'acknowledged') FROM bms_commands
                   WHERE dr_event_id = $1 AND action = 'restore'""",
                (dr_event_id,),
                1,
                30,
            )
        keys = [
            r["idempotency_key"]
            for r in await pg_pool.fetch("SELECT idempotency_key FROM bms_commands WHERE dr_event_id = $1", dr_event_id)
        ]
        assert_each_command_applied_once(bms, keys)
        late = await pg_pool.fetchval(
            "SELECT count(*) FROM dr_event_log WHERE dr_event_id = $1 AND entry_type = 'late_ack'", dr_event_id
        )
        assert late >= 1


@pytest.mark.chaos
async def test_zone_reset_behind_our_back_during_the_event_is_corrected_by_reconciliation(
    settings: Settings, stack: Any, pg_pool: Any, influx: Any, uid: str, tmp_path: Path
) -> None:
    from sim.bms.model import normal_state
    from sim.bms.redis_store import RedisZoneStore
    from sim.building_model import REDIS_PREFIX

    facility = "fac-013"
    utility = await make_utility(pg_pool, uid, f"token-{uid}", method="forecast")
    with SimulatorProcess.start("bms", free_port(), log_dir=tmp_path) as bms:
        s = dr_settings(
            settings, bms_base_url=bms.url("/bms"), only_utility_ids=utility.utility_id, reconcile_interval_s=0.5
        )
        async with coordinator(s, pg_pool, influx):
            dr_event_id = await post_event(s, utility, "drift", 3, 12, [facility], 20.0)
            await wait_for_state(pg_pool, dr_event_id, {"active"}, 30)
            zone_id = await pg_pool.fetchval(
                "SELECT zone_id FROM bms_commands WHERE dr_event_id = $1 AND action <> 'restore' LIMIT 1", dr_event_id
            )
            zone = next(
                z for f in build_fleet(20, 10) if f.facility_id == facility for z in f.zones if z.zone_id == zone_id
            )
            store = RedisZoneStore(settings.redis.url(), 1.0, REDIS_PREFIX)
            try:
                store.write(facility, zone_id, normal_state(zone))  # someone resets the zone at the panel
            finally:
                store.close()
            await wait_count(
                pg_pool,
                """SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND zone_id = $2
                   AND idempotency_key LIKE '%:reconcile-%' AND status = 'acknowledged'""",
                (dr_event_id, zone_id),
                1,
                20,
            )
            assert await wait_for_state(pg_pool, dr_event_id, {"completed"}, 40) == "completed"
        log = await pg_pool.fetch(
            "SELECT detail FROM dr_event_log WHERE dr_event_id = $1 AND entry_type = 'drift_corrected'", dr_event_id
        )
        assert log and json.loads(log[0]["detail"])["zone_id"] == zone_id
        executions = admin(bms, "executions")
        assert all(v == 1 for k, v in executions.items() if str(dr_event_id) in k)


@pytest.mark.chaos
async def test_random_bms_faults_and_lost_acks_are_retried_and_every_command_runs_once(
    settings: Settings, stack: Any, pg_pool: Any, influx: Any, uid: str, tmp_path: Path
) -> None:
    facilities = ["fac-001", "fac-002", "fac-003", "fac-004", "fac-006"]
    utility = await make_utility(pg_pool, uid, f"token-{uid}", method="forecast")
    with SimulatorProcess.start("bms", free_port(), "--seed", "7", log_dir=tmp_path) as bms:
        admin(bms, "faults", {"fault_rate": 0.3, "ack_loss_rate": 0.3, "latency_ms": 50})
        s = dr_settings(
            settings,
            bms_base_url=bms.url("/bms"),
            only_utility_ids=utility.utility_id,
            bms_command_max_attempts=12,
            bms_breaker_fail_max=50,
        )
        async with coordinator(s, pg_pool, influx):
            dr_event_id = await post_event(s, utility, "flaky", 4, 6, facilities, 400.0)
            assert await wait_for_state(pg_pool, dr_event_id, {"completed", "partially_failed", "failed"}, 60) == (
                "completed"
            )
        rows = await pg_pool.fetch(
            "SELECT idempotency_key, attempts, status FROM bms_commands WHERE dr_event_id = $1", dr_event_id
        )
        executions = admin(bms, "executions")
        requests = admin(bms, "requests")
        assert_each_command_applied_once(bms, [r["idempotency_key"] for r in rows])
    assert rows and {r["status"] for r in rows} == {"acknowledged"}
    assert any(r["attempts"] > 1 for r in rows), "30 % faults should have forced retries"
    # every call that got past the injected Server faults executed: the first one, or as a duplicate
    assert all(executions.get(r["idempotency_key"], 0) >= 1 for r in rows)
    # a lost acknowledgement means the BMS saw the key again and answered "duplicate"
    assert any(requests.get(r["idempotency_key"], 0) > 1 for r in rows)
