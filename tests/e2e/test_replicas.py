"""Two replicas of every scaled-out service against the same stack, one of each killed (SIGKILL) mid-run
(issue 16): nothing lost, nothing doubled.

Two ingestion replicas (one MQTT shared subscription), two aggregation workers (one consumer group), two
DR coordinators (each with its VEN runtime polling the simulated utility's VTN) and two API processes, on
this test's own MQTT prefix, topics, consumer group and InfluxDB database. Checked, each against a figure
the test computes itself:
- every published reading is counted exactly once in the 1-minute meter rollups (valid plus flagged
  samples per meter == readings the test published for it), and once in the raw points;
- a DR event created at the VTN becomes one platform event; every BMS command changed its zone exactly
  once (the BMS simulator counts every execution, duplicates included); the VTN holds one report for the
  event, with each targeted facility once;
- a forecast run writes one forecast per facility for its run;
- the current-load cache holds across API processes (a value one process loaded is a Redis hit in the
  other) and the rate limit is per process (decision 0880): two processes accept twice the burst.
The forecast service is not replicated (deploy/base/forecast.yaml: one replica, decision 0880).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from energy.fleet import build_fleet
from energy.stack.process import free_port
from energy.stack.topics import ensure_topics_async
from sim.bms.process import SimulatorProcess
from tests.aggregation.conftest import create_influx_db, influx_admin
from tests.dr.conftest import assert_each_command_applied_once
from tests.waiting import wait_until

# ~2.5 min on a quiet machine; the timeout leaves room for a loaded CI runner (eleven processes start).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

ENERGY = Path(sys.executable).with_name("energy")
FACILITIES = ["fac-001", "fac-003"]  # both tenant-a (the API key below sees them)
API_KEY_A = {"X-Api-Key": "dev-key-tenant-a-analyst"}
API_KEY_B = {"X-Api-Key": "dev-key-tenant-b-analyst"}
RATE_BURST = 6
PER_METER = (4, 8)  # readings per meter (15 s apart) before and during the kills


class Proc:
    """One service process (``energy <args>``) with its own port and log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port_var: str, log_dir: Path) -> None:
        self.name, self.args, self.port = name, args, free_port()
        self.env = {**env, port_var: str(self.port)}
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(ENERGY), *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    async def ready(self, path: str = "/healthz", timeout_s: float = 90) -> None:
        async with httpx.AsyncClient(timeout=2) as c:

            async def answers() -> bool:
                assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited: {self.tail()}"
                return (await c.get(self.base + path)).status_code == 200

            await wait_until(
                answers, timeout_s=timeout_s, what=f"{self.name} {path}", interval_s=0.3, ignore=(httpx.TransportError,)
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


T_START = time.monotonic()


def step(what: str) -> None:
    """Progress on stdout (shown by pytest on failure): where a slow run spent its time."""
    print(f"{time.monotonic() - T_START:7.1f}s {what}", flush=True)


def meter_sim(env: dict[str, str], start: datetime, count: int, seq_start: int, rate: float) -> subprocess.Popen[bytes]:
    args = ["sim", "meters", "--count", str(count), "--rate", str(rate), "--facilities", "3", "--seed", "5"]
    args += ["--start", start.isoformat(), "--seq-start", str(seq_start), "--port", str(free_port())]
    return subprocess.Popen([str(ENERGY), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


async def test_two_replicas_of_each_service_one_killed_nothing_lost_nothing_doubled(
    stack, settings, pg_pool, uid, tmp_path
) -> None:
    from dr_coordinator.adapters import onboarding
    from energy.adapters.influx import InfluxClient, iter_rows
    from energy.adapters.redis import make_redis
    from schemas.utilities import EnrollmentIn, ProgramIn, UtilityIn
    from sim.weather.process import WeatherSimProcess

    global T_START
    T_START = time.monotonic()
    topic, dlq, group, db = f"rep-readings-{uid}", f"rep-dlq-{uid}", f"rep-agg-{uid}", f"rep_{uid}"
    utility_id = f"rep-{uid}"
    await ensure_topics_async(settings.kafka.bootstrap_servers, {topic: 6, dlq: 1, f"{topic}-late": 1})
    create_influx_db(settings.influx.url, db)
    fleet = {f.facility_id: [m.meter_id for m in f.meters] for f in build_fleet()[:3]}
    sim_facilities = list(fleet)  # the meter simulator's first three facilities
    assert set(FACILITIES) <= set(sim_facilities)
    bms = SimulatorProcess.start("bms", free_port(), log_dir=tmp_path)
    vtn = SimulatorProcess.start(
        "utility", free_port(), "--openadr-version", "3.1", "--sequential-ids", "--callback-url", "none",
        log_dir=tmp_path,
    )  # fmt: skip
    weather = WeatherSimProcess(free_port()).start()
    procs: list[Proc] = []
    influx: InfluxClient | None = None
    env = {
        **os.environ,
        "ENERGY_ENVIRONMENT": "test",
        "ENERGY_LOG__LEVEL": "INFO",
        # Eleven processes start at once: on a loaded runner PostgreSQL answers slower than the 2 s default
        # statement timeout, and a coordinator whose start-up query times out exits (reported, issue 16).
        "ENERGY_POSTGRES__COMMAND_TIMEOUT_S": "15",
        "ENERGY_INFLUX__DATABASE": db,
        "ENERGY_MQTT__TOPIC_PREFIX": f"rep-{uid}",
        "ENERGY_INGESTION__READINGS_TOPIC": topic,
        "ENERGY_INGESTION__DLQ_TOPIC": dlq,
        "ENERGY_INGESTION__MQTT_CLIENT_ID": f"rep-ingestion-{uid}",
        "ENERGY_INGESTION__MQTT_SHARED_GROUP": f"rep{uid}",
        "ENERGY_AGGREGATION__READINGS_TOPIC": topic,
        "ENERGY_AGGREGATION__DLQ_TOPIC": dlq,
        "ENERGY_AGGREGATION__LATE_WINDOWS_TOPIC": f"{topic}-late",
        "ENERGY_AGGREGATION__CONSUMER_GROUP": group,
        "ENERGY_AGGREGATION__ARCHIVE_GROUP": f"{group}-archive",
        "ENERGY_AGGREGATION__ARCHIVE_URI": str(tmp_path / "archive"),
        "ENERGY_AGGREGATION__BATCH_MAX_WAIT_S": "0.2",
        "ENERGY_API__RATE_LIMIT_PER_S": "0.001",
        "ENERGY_API__RATE_LIMIT_BURST": str(RATE_BURST),
        "ENERGY_API__CURRENT_CACHE_TTL_S": "300",
        "ENERGY_API__CURRENT_STALE_MAX_S": "600",
        "ENERGY_DR__ONLY_UTILITY_IDS": utility_id,
        "ENERGY_DR__BMS_BASE_URL": bms.url("/bms"),
        "ENERGY_DR__DISPATCH_LEAD_S": "2",
        "ENERGY_DR__POLL_INTERVAL_S": "0.2",
        "ENERGY_DR__MIN_EVENT_DURATION_S": "5",
        "ENERGY_DR__MAX_START_SKEW_S": "5",
        "ENERGY_DR__BMS_LEASE_S": "3",
        "ENERGY_DR__BMS_RETRY_BASE_S": "0.3",
        "ENERGY_DR__BMS_COMMAND_MAX_ATTEMPTS": "20",
        "ENERGY_DR__VEN_POLL_INTERVAL_S": "2",
        "ENERGY_FORECAST__WEATHER_PRIMARY_URL": f"{weather.base}/weatherapi",
        "ENERGY_FORECAST__WEATHER_SECONDARY_URL": f"{weather.base}/openmeteo",
    }

    def service(name: str, args: list[str], port_var: str, **extra: str) -> Proc:
        p = Proc(name, args, {**env, **extra}, port_var, tmp_path)
        procs.append(p)
        return p.start()

    try:
        ing = [
            service(f"ingestion-{r}", ["ingestion", "run"], "ENERGY_ENDPOINTS__INGESTION_PORT",
                    ENERGY_INGESTION__MQTT_REPLICA_ID=r)
            for r in "ab"
        ]  # fmt: skip
        agg = [service(f"aggregation-{r}", ["aggregation", "run"], "ENERGY_ENDPOINTS__AGGREGATION_PORT") for r in "ab"]
        api = [service(f"api-{r}", ["api", "run"], "ENERGY_ENDPOINTS__API_PORT") for r in "ab"]
        # The VTN's notifications go to api-a's webhook; api-a is killed later, polling still finds events.
        env["ENERGY_DR__WEBHOOK_BASE_URL"] = api[0].base
        dr = [service(f"dr-{r}", ["dr", "run"], "ENERGY_ENDPOINTS__DR_COORDINATOR_PORT") for r in "ab"]
        step("processes started")
        for p in ing:
            await p.ready("/ready")
        for p in [*agg, *api, *dr]:
            await p.ready()

        step("all ready")
        # --- the simulated utility: a program, our VEN onboarded, two facilities enrolled --------------
        bl_token = settings.seed.utility_bearer_token.get_secret_value()
        vtn_url = vtn.url("/openadr3/3.1.0")
        bl = httpx.AsyncClient(base_url=vtn_url, headers={"Authorization": f"Bearer {bl_token}"}, timeout=10)
        program_id = (await bl.post("/programs", json={"programName": f"rep-{uid}"})).json()["id"]
        async with pg_pool.acquire() as conn, conn.transaction():
            await onboarding.add_utility(
                conn,
                UtilityIn(
                    utility_id=utility_id,
                    name=utility_id,
                    vtn_base_url=vtn_url,
                    ven_name=f"ven-{uid}",
                    ven_token=settings.dr.vtn_token.get_secret_value(),
                    webhook_token=f"hook-{uid}-0123456789",
                ),
                "test",
            )
            await onboarding.add_program(conn, utility_id, ProgramIn(program_id=program_id, notice_s=0), "test")
            await onboarding.enroll(
                conn, utility_id, EnrollmentIn(program_id=program_id, facility_ids=FACILITIES), "test"
            )

        # 3.1: a VEN sees a targeted event only once the utility granted it those targets (decision
        # 0410 rule 17); the utility's business logic grants them on our VEN's object.
        async def our_ven() -> list[dict[str, Any]] | None:
            return [v for v in (await bl.get("/vens")).json() if v.get("venName") == f"ven-{uid}"] or None

        for ven in await wait_until(our_ven, timeout_s=60, what="our VEN registered at the VTN", interval_s=0.5):
            grant = {"objectType": "BL_VEN_REQUEST", "clientID": ven["clientID"], "venName": ven["venName"],
                     "targets": FACILITIES}  # fmt: skip
            (await bl.put(f"/vens/{ven['id']}", json=grant)).raise_for_status()

        async def targeted_subscription() -> bool:
            subs = (await bl.get("/subscriptions")).json()
            return any(sorted(sub.get("targets") or []) == sorted(FACILITIES) for sub in subs)

        await wait_until(
            targeted_subscription, timeout_s=90, what="the VEN's subscription for its granted targets", interval_s=0.5
        )
        step("utility onboarded")
        # --- readings, first half: every replica up ----------------------------------------------------
        # Ten minutes before the current quarter hour: the forecast run (run_at = a quarter hour no
        # earlier than this one) then always has these readings' 15-minute window in its history.
        now = datetime.now(UTC)
        t0 = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) - timedelta(minutes=10)
        first, second = PER_METER
        sim = meter_sim(env, t0, first, 0, 400)
        assert sim.wait(120) == 0
        influx = InfluxClient(settings.influx.model_copy(update={"database": db}), breaker_name="rep-e2e")
        in_rollups = dict.fromkeys((m for f in sim_facilities for m in fleet[f]), first)
        await wait_until(
            lambda: rollup_counts(influx, t0, in_rollups),
            timeout_s=90,
            what="the first half in the rollups",
            interval_s=0.5,
        )

        step("first half published")
        # --- a forecast run (one process: the forecast service is not replicated) -----------------------
        forecast = subprocess.run(
            [str(ENERGY), "forecast", "once", "--no-publish", *(a for f in FACILITIES for a in ("--facility", f))],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert forecast.returncode == 0, forecast.stdout + forecast.stderr
        run_at = datetime.fromisoformat(re.search(r'"run_at": "([^"]+)"', forecast.stdout).group(1))  # type: ignore[union-attr]

        step("forecast run done")
        # --- a DR event through the utility's VTN ------------------------------------------------------
        start = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
        body = {
            "programID": program_id,
            "eventName": f"rep-{uid}",
            "targets": FACILITIES,
            "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": "PT20S"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
        }
        created = await bl.post("/events", json=body)
        assert created.status_code in (201, 500), created.text  # 500: stored, a subscriber was down (3.1)
        vtn_event = (await bl.get("/events")).json()[-1]
        assert vtn_event["eventName"] == f"rep-{uid}"

        async def the_event() -> Any:
            return await pg_pool.fetchval(
                "SELECT dr_event_id FROM dr_events WHERE utility_id = $1 AND vtn_event_id = $2",
                utility_id,
                vtn_event["id"],
            )

        dr_event_id = await wait_until(
            the_event, timeout_s=30, what="the platform taking the VTN's event", interval_s=0.5
        )

        step("event taken")
        # --- the API: the current-load cache across processes, the per-process rate limit --------------
        redis = make_redis(settings.redis)
        try:
            await redis.delete(f"energy:api:current:{FACILITIES[0]}")
        finally:
            await redis.aclose()
        async with httpx.AsyncClient(timeout=10) as c:
            for p in api:
                r = await c.get(f"{p.base}/api/facilities/{FACILITIES[0]}/current", headers=API_KEY_A)
                assert r.status_code == 200, r.text
            outcomes = [await cache_outcomes(c, p.base) for p in api]
            assert outcomes[0].get("miss") == 1 and "hit" not in outcomes[0], outcomes
            assert outcomes[1].get("hit") == 1 and "miss" not in outcomes[1], outcomes  # loaded by api-a
            accepted = 0
            for p in api:
                for _ in range(RATE_BURST + 4):
                    r = await c.get(f"{p.base}/api/facilities", headers=API_KEY_B)
                    assert r.status_code in (200, 429), r.text
                    accepted += r.status_code == 200
            assert accepted == 2 * RATE_BURST  # one bucket per process (decision 0880)

        step("API checks done")

        # --- kill one replica of each while readings flow and the event dispatches ---------------------
        async def acknowledged() -> Any:
            return await pg_pool.fetchval(
                "SELECT count(*) FROM bms_commands WHERE dr_event_id = $1 AND status = 'acknowledged'", dr_event_id
            )

        await wait_until(acknowledged, timeout_s=60, what="the first BMS command acknowledged", interval_s=0.5)
        for p in (api[0], dr[0]):
            p.kill()
        sim = meter_sim(env, t0 + timedelta(seconds=15 * first), second, first, 60)
        before = sum(len(fleet[f]) for f in sim_facilities) * first
        await wait_until(
            lambda: topic_count(settings, topic, before + 20),
            timeout_s=60,
            what="the second half flowing",
            interval_s=0.5,
        )
        for p in (ing[1], agg[1]):
            p.kill()
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"{api[1].base}/api/facilities/{FACILITIES[0]}/current", headers=API_KEY_A)
            assert r.status_code == 200, r.text
        assert await asyncio.to_thread(sim.wait, 120) == 0
        # A killed ingestion or aggregation pod comes back under its own name (its MQTT session, its
        # static group membership) and carries on where it stopped.
        ing[1].start()
        agg[1].start()
        await ing[1].ready("/ready")

        step("killed replicas back")
        # --- every reading once in the rollups --------------------------------------------------------
        expected = {m: first + second for f in sim_facilities for m in fleet[f]}
        try:
            await wait_until(
                lambda: rollup_counts(influx, t0, expected),
                timeout_s=120,
                what="every reading in the 1-minute rollups",
                interval_s=0.5,
            )
        except AssertionError:
            raise AssertionError(f"rollup sample counts {await counts_now(influx, t0)} != {expected}") from None
        raw = iter_rows(
            await influx.query(
                'SELECT count("active_power_kw") FROM "raw_90d"."readings" WHERE time >= $s GROUP BY "meter_id"',
                {"s": int(t0.timestamp()) * 10**9},
            )
        )
        assert {r["meter_id"]: int(r["count"]) for r in raw} == expected

        # --- the DR event: one platform event, each BMS command once, one report ----------------------
        async def finished() -> Any:
            state = await pg_pool.fetchval("SELECT state FROM dr_events WHERE dr_event_id = $1", dr_event_id)
            return state if state in ("completed", "partially_failed", "failed") else None

        assert await wait_until(finished, timeout_s=90, what="the event finished", interval_s=0.5) == "completed"
        events = await pg_pool.fetchval("SELECT count(*) FROM dr_events WHERE utility_id = $1", utility_id)
        assert events == 1
        keys = [
            r["idempotency_key"]
            for r in await pg_pool.fetch("SELECT idempotency_key FROM bms_commands WHERE dr_event_id = $1", dr_event_id)
        ]
        commanded = await pg_pool.fetch(
            "SELECT DISTINCT facility_id FROM bms_commands WHERE dr_event_id = $1", dr_event_id
        )
        assert {r["facility_id"] for r in commanded} == set(FACILITIES)
        assert_each_command_applied_once(bms, keys)

        step("event finished, commands checked")

        async def reports() -> Any:
            return (await bl.get("/reports", params={"eventID": vtn_event["id"]})).json()

        stored = await wait_until(reports, timeout_s=150, what="the report at the VTN", interval_s=0.5)
        step("report stored")
        # --- one forecast per facility for its run ----------------------------------------------------
        runs = await pg_pool.fetch(
            "SELECT facility_id, count(*) AS n FROM forecast_runs WHERE run_at = $1 AND facility_id = ANY($2) "
            "GROUP BY facility_id",
            run_at,
            FACILITIES,
        )
        assert {r["facility_id"]: r["n"] for r in runs} == dict.fromkeys(FACILITIES, 1)
        rows = await pg_pool.fetch(
            "SELECT facility_id, count(*) AS n FROM load_forecasts WHERE run_at = $1 AND facility_id = ANY($2) "
            "GROUP BY facility_id",
            run_at,
            FACILITIES,
        )
        assert {r["facility_id"]: r["n"] for r in rows} == dict.fromkeys(FACILITIES, 96)  # a day of quarter hours
        stored = await reports()  # read again, after everything else: still one
        assert len(stored) == 1, stored
        assert sorted(r["resourceName"] for r in stored[0]["resources"]) == sorted(FACILITIES)
        await bl.aclose()
    finally:
        if influx is not None:
            await influx.close()
        for p in procs:
            p.stop()
        for sim_proc in (bms, vtn):
            sim_proc.stop()
        weather.stop()
        await pg_pool.execute(
            "UPDATE dr_events SET state = 'cancelled' WHERE utility_id = $1 AND state <> ALL($2::text[])",
            utility_id,
            ["completed", "partially_failed", "failed", "cancelled"],
        )
        await pg_pool.execute("UPDATE utilities SET active = false WHERE utility_id = $1", utility_id)
        influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')


async def cache_outcomes(client: httpx.AsyncClient, base: str) -> dict[str, int]:
    """This process's current-load cache lookups by outcome (its Prometheus counter)."""
    text = (await client.get(f"{base}/metrics")).text
    out = {}
    for m in re.finditer(r'^energy_api_current_cache_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.M):
        if float(m.group(2)) > 0:
            out[m.group(1)] = int(float(m.group(2)))
    return out


async def topic_count(settings: Any, topic: str, at_least: int) -> bool:
    """Whether ``topic`` holds at least ``at_least`` records (sum of its end offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        ends = await c.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values()) >= at_least
    finally:
        await c.stop()


async def rollup_counts(influx: Any, t0: datetime, expected: dict[str, int]) -> bool:
    return await counts_now(influx, t0) == expected


async def counts_now(influx: Any, t0: datetime) -> dict[str, int]:
    """Readings per meter in its 1-minute rollups: valid samples plus those flagged anomalous (counted
    apart). The second meter-simulator run starts every register afresh, so the replica that sees a
    meter's first reading after the previous run's last flags it ``energy_register_decreased``."""
    from energy.adapters.influx import iter_rows

    rows = iter_rows(
        await influx.query(
            'SELECT sum("sample_count") AS valid, sum("anomaly_count") AS flagged FROM "rollups_2y"."meter_rollups" '
            'WHERE "window" = \'1m\' AND time >= $s GROUP BY "meter_id"',
            {"s": int(t0.timestamp()) * 10**9},
        )
    )
    return {r["meter_id"]: int(r["valid"] or 0) + int(r["flagged"] or 0) for r in rows}
