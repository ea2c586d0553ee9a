"""Reports a 3.1 VTN accepts: built interval by interval from M&V values (pure), then sent once per
event, replaced with PUT after an ambiguous failure (strict simulator, real process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dr_coordinator.adapters.vtn_registry import VtnTarget
from dr_coordinator.bootstrap import ReportSender
from dr_coordinator.domain.report import (
    IntervalReading,
    ResourceResult,
    Wanted,
    build_interval_report,
    wanted_from_descriptors,
)
from sim.bms.process import SimulatorProcess

T0 = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
QUARTER = timedelta(minutes=15)


def two_intervals() -> tuple[IntervalReading, ...]:
    return (
        IntervalReading(T0 + QUARTER, T0 + 2 * QUARTER, usage_kwh=20.0, demand_kw=80.0, baseline_kw=100.0),
        IntervalReading(T0, T0 + QUARTER, usage_kwh=22.5, demand_kw=90.0, baseline_kw=100.0),
    )


def test_report_follows_descriptors_interval_by_interval_with_operating_state():
    wanted = wanted_from_descriptors(
        [{"payloadType": "DEMAND", "units": "KW"}, {"payloadType": "PRICE"}, {"payloadType": "DEMAND"}]
    )
    assert wanted == (Wanted("DEMAND", None, "KW"),)  # PRICE is not ours to report, duplicates once
    report = build_interval_report(
        version="3.1",
        program_id="p",
        event_id="7",
        client_name="ven",
        report_name="r",
        resources=[ResourceResult("fac-2", "restored", two_intervals()), ResourceResult("fac-1", "failed", ())],
        wanted=wanted,
    )
    assert "programID" not in report and report["eventID"] == "7"
    assert report["payloadDescriptors"] == [
        {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "OPERATING_STATE"},
        {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "DEMAND", "units": "KW"},
    ]
    fac1, fac2 = report["resources"]
    assert fac1 == {"resourceName": "fac-1", "intervals": []}
    assert [i["intervalPeriod"] for i in fac2["intervals"]] == [
        {"start": "2026-12-03T14:00:00Z", "duration": "PT900S"},
        {"start": "2026-12-03T14:15:00Z", "duration": "PT900S"},
    ]
    assert [i["payloads"] for i in fac2["intervals"]] == [
        [{"type": "OPERATING_STATE", "values": ["NORMAL"]}, {"type": "DEMAND", "values": [90.0]}],
        [{"type": "OPERATING_STATE", "values": ["NORMAL"]}, {"type": "DEMAND", "values": [80.0]}],
    ]


def test_default_payloads_and_3_0_1_program_id():
    report = build_interval_report(
        version="3.0.1",
        program_id="p",
        event_id="7",
        client_name="ven",
        report_name="r",
        resources=[ResourceResult("fac-1", "active", two_intervals()[:1])],
    )
    assert report["programID"] == "p"
    payloads = report["resources"][0]["intervals"][0]["payloads"]
    assert payloads == [
        {"type": "OPERATING_STATE", "values": ["RUNNING_CURTAILED"]},
        {"type": "USAGE", "values": [20.0]},
        {"type": "DEMAND", "values": [80.0]},
        {"type": "BASELINE", "values": [100.0]},
    ]


@pytest.fixture(scope="module")
def strict_vtn(stack, tmp_path_factory) -> Iterator[SimulatorProcess]:
    from energy.stack.process import free_port

    with SimulatorProcess.start(
        "utility",
        free_port(),
        "--openadr-version",
        "3.1",
        "--sequential-ids",
        "--callback-url",
        "none",
        log_dir=tmp_path_factory.mktemp("vtn31"),
    ) as sim:
        yield sim


async def test_report_is_accepted_by_a_strict_31_vtn_and_replaced_not_duplicated(strict_vtn, settings):
    token = settings.seed.utility_bearer_token.get_secret_value()
    ven_token = settings.dr.vtn_token.get_secret_value()  # reports are written by VENs only
    base = strict_vtn.url("/openadr3/3.1.0")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as bl:
        pid = (await bl.post("/programs", json={"programName": "reports"})).json()["id"]
        start = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0).isoformat()
        event = {"programID": pid, "intervalPeriod": {"start": start, "duration": "PT30M"}, "intervals": []}
        eid = (await bl.post("/events", json=event)).json()["id"]
        report = build_interval_report(
            version="3.1",
            program_id=pid,
            event_id=eid,
            client_name="ven-r",
            report_name="first",
            resources=[ResourceResult("fac-1", "restored", two_intervals())],
        )
        target = VtnTarget("u", base, "3.1", "ven-r", "bearer", {"token": ven_token})
        sender = ReportSender(ven_token)
        try:
            await sender(target, report, False)
            await sender(target, {**report, "reportName": "second"}, True)  # as after an ambiguous failure
        finally:
            await sender.close()
        stored = (await bl.get("/reports", params={"eventID": eid})).json()
    assert [r["reportName"] for r in stored] == ["second"]


async def test_not_applicable_events_are_reported_once_to_the_vtn(strict_vtn, settings, pg_pool, uid):
    import json as _json

    from dr_coordinator.entrypoints.vtn_reporting import VtnReportingJob
    from tests.dr.conftest import _CREATED_UTILITIES

    token = settings.seed.utility_bearer_token.get_secret_value()

    ven_token = settings.dr.vtn_token.get_secret_value()  # reports are written by VENs only
    base = strict_vtn.url("/openadr3/3.1.0")
    utility_id = f"na-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as bl:
        pid = (await bl.post("/programs", json={"programName": f"na-{uid}"})).json()["id"]
        start = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0).isoformat()
        # intervals numbered from 3, and a layout asked for the status: the strict VTN holds the report's
        # status interval to the event's ids (rule 25), so it must name interval 3 (decision 0931)
        body = {
            "programID": pid,
            "targets": ["fac-404"],
            "intervalPeriod": {"start": start, "duration": "PT30M"},
            "intervals": [{"id": k, "payloads": [{"type": "SIMPLE", "values": [1]}]} for k in (3, 4)],
            "reportDescriptors": [{"payloadType": "OPERATING_STATE", "reportIntervals": "INTERVALS"}],
        }
        eid = (await bl.post("/events", json=body)).json()["id"]
        async with pg_pool.acquire() as conn:
            await onboard(conn, utility_id, base, ven_token, uid)
        await pg_pool.execute(
            """INSERT INTO dr_event_intake (utility_id, event_key, outcome, detail)
               VALUES ($1, $2, 'not_applicable', $3::jsonb)""",
            utility_id,
            f"{eid}@x",
            _json.dumps(
                {"vtn_event_id": eid, "program_id": pid, "unknown_targets": ["fac-404"], "first_interval_id": 3}
            ),
        )
        sender = ReportSender(ven_token)

        async def step(row, fn):
            await fn()

        job = VtnReportingJob(pg_pool, settings.dr, lambda: datetime.now(UTC), None, sender, [utility_id], step)
        try:
            await job.report_not_applicable()
            await job.report_not_applicable()  # already reported: nothing sent again
        finally:
            await sender.close()
        stored = (await bl.get("/reports", params={"eventID": eid})).json()
    assert len(stored) == 1
    resources = [(r["resourceName"], [i["payloads"] for i in r["intervals"]]) for r in stored[0]["resources"]]
    assert resources == [("fac-404", [[{"type": "OPERATING_STATE", "values": ["NOT_APPLICABLE"]}]])]
    assert [i["id"] for i in stored[0]["resources"][0]["intervals"]] == [3]
    reported = await pg_pool.fetchval("SELECT reported_at FROM dr_event_intake WHERE utility_id = $1", utility_id)
    assert reported is not None


# What the report carries for a 30-minute event (one interval, id 0) settled per quarter hour at 60 and
# 70 kW (then trued up to 60 and 50 kW) against 100 kW, in each layout the event can ask for (decision
# 0931), computed by hand: a quarter hour at 60 kW is 15 kWh, at 70 kW 17.5, at 50 kW 12.5.
_Q1, _Q2, _Q2_TRUE_UP = (
    {"USAGE": 15.0, "DEMAND": 60.0, "BASELINE": 100.0},
    {"USAGE": 17.5, "DEMAND": 70.0, "BASELINE": 100.0},
    {"USAGE": 12.5, "DEMAND": 50.0, "BASELINE": 100.0},
)
LAYOUT_CASES = {
    # the event's interval, whole: energies add up, demand is the time-weighted mean
    None: (
        [0],
        [{"USAGE": 32.5, "DEMAND": 65.0, "BASELINE": 100.0}],
        {"USAGE": 27.5, "DEMAND": 55.0, "BASELINE": 100.0},
    ),
    "INTERVALS": (
        [0],
        [{"USAGE": 32.5, "DEMAND": 65.0, "BASELINE": 100.0}],
        {"USAGE": 27.5, "DEMAND": 55.0, "BASELINE": 100.0},
    ),
    # the event's interval cut in quarter hours, each piece keeping the interval's id
    "SUB_INTERVALS": ([0, 0], [_Q1, _Q2], _Q2_TRUE_UP),
    # the VEN's own intervals (the settlement's quarter hours), numbered by us
    "OPEN_INTERVALS": ([0, 1], [_Q1, _Q2], _Q2_TRUE_UP),
}


@pytest.mark.parametrize("layout", list(LAYOUT_CASES))
async def test_report_carries_the_settlement_intervals_and_a_true_up_replaces_it(
    strict_vtn, settings, pg_pool, uid, layout
):
    """The final report waits for the settlement and carries its values (USAGE, DEMAND, BASELINE) in the
    interval layout the event's reportDescriptors ask for; a true-up (a newer settlement version)
    replaces the utility's report, never adds one."""
    import uuid as _uuid
    from zoneinfo import ZoneInfo

    from dr_coordinator.adapters import settlement_store
    from dr_coordinator.domain import interval_baselines as ib
    from dr_coordinator.domain.settlement import RunKind, settle
    from dr_coordinator.entrypoints.vtn_reporting import VtnReportingJob
    from tests.dr.conftest import _CREATED_UTILITIES

    token = settings.seed.utility_bearer_token.get_secret_value()

    ven_token = settings.dr.vtn_token.get_secret_value()  # reports are written by VENs only
    base = strict_vtn.url("/openadr3/3.1.0")
    utility_id, facility_id = f"tu-{uid}", "fac-001"
    _CREATED_UTILITIES.add(utility_id)
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as bl:
        pid = (await bl.post("/programs", json={"programName": f"tu-{uid}"})).json()["id"]
        body = {
            "programID": pid,
            "intervalPeriod": {"start": start.isoformat(), "duration": "PT30M"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
        }
        if layout is not None:
            body["reportDescriptors"] = [
                {"payloadType": kind, "reportIntervals": layout} for kind in ("USAGE", "DEMAND", "BASELINE")
            ]
        created = (await bl.post("/events", json=body)).json()
        vtn_event_id = created["id"]
        dr_event_id = _uuid.uuid4()
        async with pg_pool.acquire() as conn, conn.transaction():
            await onboard(conn, utility_id, base, ven_token, uid)
            await conn.execute(
                """INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, vtn_event_id, program_id, state,
                                          start_at, end_at, target_kw, source_payload)
                   VALUES ($1, $2, $3, $3, $4, 'completed', $5, $6, 40, $7::jsonb)""",
                dr_event_id,
                utility_id,
                vtn_event_id,
                pid,
                start,
                end,
                json.dumps(created),
            )
            await conn.execute(
                """INSERT INTO dr_event_facilities (dr_event_id, facility_id, state, target_kw, baseline_kw)
                   VALUES ($1, $2, 'restored', 40, 100)""",
                dr_event_id,
                facility_id,
            )
        utc = ZoneInfo("UTC")
        iv = ib.event_intervals(start, end, utc, 15)
        baseline = ib.Baseline(
            ib.Method.FORECAST, iv, (100.0, 100.0), (100.0, 100.0), ib.Adjustment.NONE, 0.0, False, ()
        )

        async def settle_at(kind: RunKind, first_kw: float, second_kw: float) -> None:
            s = settle(baseline, {iv[0].start: first_kw, iv[1].start: second_kw}, target_kw=40.0)
            async with pg_pool.acquire() as conn, conn.transaction():
                await settlement_store.write_run(
                    conn, dr_event_id, facility_id, kind, s, baseline, True, 40.0, datetime.now(UTC)
                )

        sender = ReportSender(ven_token)

        async def step(row, fn):
            await fn()

        job = VtnReportingJob(
            pg_pool,
            settings.dr,
            lambda: datetime.now(UTC),
            None,
            sender,
            [utility_id],
            step,
            settlement_store.interval_source(pg_pool),
        )

        async def utility_reports() -> list[dict]:
            return [r for r in (await bl.get("/reports")).json() if r.get("eventID") == vtn_event_id]

        ids, first_values, true_up_last = LAYOUT_CASES[layout]

        def values(report: dict) -> list[dict[str, float]]:
            [resource] = report["resources"]
            return [
                {p["type"]: p["values"][0] for p in i["payloads"] if p["type"] != "OPERATING_STATE"}
                for i in resource["intervals"]
            ]

        try:
            await settle_at(RunKind.PRELIMINARY, 60.0, 70.0)
            await job.report_due()
            [first] = await utility_reports()
            assert values(first) == first_values
            assert [i["id"] for i in first["resources"][0]["intervals"]] == ids
            await job.report_due()  # nothing new: nothing sent
            assert len(await utility_reports()) == 1
            attempts = await pg_pool.fetchval(
                "SELECT report_attempts FROM dr_events WHERE dr_event_id = $1", dr_event_id
            )

            await settle_at(RunKind.TRUE_UP, 60.0, 50.0)  # late readings changed the second quarter hour
            await job.report_due()
            [updated] = await utility_reports()
            assert values(updated)[-1] == true_up_last
            assert (
                await pg_pool.fetchval("SELECT report_attempts FROM dr_events WHERE dr_event_id = $1", dr_event_id)
                == attempts + 1
            )
            detail = await pg_pool.fetchval("SELECT report_detail FROM dr_events WHERE dr_event_id = $1", dr_event_id)
            assert (detail if isinstance(detail, dict) else __import__("json").loads(detail))[
                "settlement_versions"
            ] == {facility_id: 2}
        finally:
            await sender.close()


async def onboard(conn, utility_id: str, vtn_base_url: str, token: str, uid: str) -> None:
    """A utility whose VTN is the strict simulator, onboarded as an integrator would."""
    from dr_coordinator.adapters import onboarding
    from schemas.utilities import UtilityIn

    await onboarding.add_utility(
        conn,
        UtilityIn(
            utility_id=utility_id,
            name=utility_id,
            vtn_base_url=vtn_base_url,
            ven_name=f"ven-{uid}",
            ven_token=token,
            webhook_token=f"hook-{uid}-0123456789",
        ),
        "test",
    )


# --- reports during the event (decision 0850) -----------------------------------------------------


def test_interim_points_follow_the_report_descriptor_timing():
    from dr_coordinator.domain.report import ReportTiming, interim_points, report_timing

    # User Guide "periodic reporting": at the end of intervals 1, 3 and 5 of six; 5 is the final report
    assert interim_points(ReportTiming(start_interval=1, num_intervals=2, frequency=2, repeat=3), 6) == (1, 3)
    # every interval until the end (repeat -1); the last one is the final report
    assert interim_points(ReportTiming(start_interval=0, frequency=1, repeat=-1), 4) == (0, 1, 2)
    assert interim_points(ReportTiming(start_interval=0, frequency=1, repeat=2), 4) == (0, 1)
    # frequency -1 means "as many as numIntervals"
    assert interim_points(ReportTiming(start_interval=1, num_intervals=2, repeat=-1), 6) == (1, 3)
    assert interim_points(ReportTiming(), 6) == ()  # defaults: one report at the end
    assert interim_points(ReportTiming(start_interval=0, frequency=0, repeat=-1), 6) == ()  # ad hoc: ours to choose
    assert interim_points(ReportTiming(start_interval=0, frequency=1, repeat=-1, historical=False), 6) == ()
    assert interim_points(ReportTiming(start_interval=0, frequency=1, repeat=-1), 1) == ()
    # the most frequent report among the payloads we report; PRICE asks nothing of us
    timing = report_timing(
        [
            {"payloadType": "PRICE", "startInterval": 0, "frequency": 1, "repeat": -1},
            {"payloadType": "USAGE", "startInterval": 0, "frequency": 3, "repeat": -1},
            {"payloadType": "DEMAND", "startInterval": 1, "frequency": 2, "repeat": 2},
        ]
    )
    assert timing == ReportTiming(start_interval=1, frequency=2, repeat=2)


def test_metered_so_far_weighs_the_frozen_baseline_by_time():
    from dr_coordinator.domain.report import metered_so_far

    q = [(T0, T0 + QUARTER), (T0 + QUARTER, T0 + 2 * QUARTER)]
    # baseline frozen by the hour: 100 kW for 14:00-14:20 and 130 kW for 14:20-15:00
    baseline = [(T0, T0 + timedelta(minutes=20), 100.0), (T0 + timedelta(minutes=20), T0 + timedelta(hours=1), 130.0)]
    first, second = metered_so_far(q, [80.0, None], baseline, 999.0)
    assert (first.demand_kw, first.usage_kwh, first.baseline_kw) == (80.0, 20.0, 100.0)
    # 14:15-14:30: 5 minutes at 100 and 10 at 130 -> 120; nothing metered -> no usage
    assert (second.demand_kw, second.usage_kwh) == (None, None)
    assert second.baseline_kw == pytest.approx(120.0)
    [only] = metered_so_far(q[:1], [50.0], [], 70.0)  # no frozen baseline: the facility's own
    assert only.baseline_kw == 70.0


@pytest.fixture
async def report_influx(settings, stack, uid):
    from energy.adapters.influx import InfluxClient

    name = f"dr_interim_{uid}"
    client = InfluxClient(settings.influx.model_copy(update={"database": name}), breaker_name=f"influx-r-{uid}")
    # The rollups' retention policy as the database's default, as the platform reads rollups from it.
    rp = settings.influx.rollup_retention_policy
    await client.query(f"CREATE DATABASE {name} WITH DURATION 730d NAME {rp}")
    yield client
    await client.query(f"DROP DATABASE {name}")
    await client.close()


async def test_reports_during_the_event_follow_the_descriptors_and_stay_one_report(
    strict_vtn, settings, pg_pool, uid, report_influx
):
    """An event of three quarter hours asking USAGE and DEMAND after every interval: after the first
    quarter hour the VTN has a report with that interval, after the second the same report (PUT) with
    both, and the final report replaces it again; the VTN never holds two."""
    import json as _json
    import uuid as _uuid

    from dr_coordinator.domain.schedule import IntervalAsk
    from dr_coordinator.entrypoints.vtn_reporting import SETTLEMENT_WAIT_S, VtnReportingJob
    from energy.adapters.influx import point
    from tests.dr.conftest import _CREATED_UTILITIES

    token = settings.seed.utility_bearer_token.get_secret_value()

    ven_token = settings.dr.vtn_token.get_secret_value()  # reports are written by VENs only
    base = strict_vtn.url("/openadr3/3.1.0")
    utility_id, facility_id = f"ir-{uid}", "fac-002"
    _CREATED_UTILITIES.add(utility_id)
    t0 = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    schedule = [IntervalAsk(i, t0 + i * QUARTER, t0 + (i + 1) * QUARTER, level=2) for i in range(3)]
    descriptors = [
        {"payloadType": "USAGE", "readingType": "DIRECT_READ", "units": "KWH", "startInterval": 0, "frequency": 1,
         "repeat": -1},
        {"payloadType": "DEMAND", "readingType": "DIRECT_READ", "units": "KW"},
        {"payloadType": "BASELINE", "readingType": "ESTIMATED", "units": "KW"},
    ]  # fmt: skip
    # metered: 80 kW in the first quarter hour, 90 in the second, 100 in the third
    tags = {"facility_id": facility_id, "window": "1m"}
    kw_at = [80.0] * 15 + [90.0] * 15 + [100.0] * 15
    await report_influx.write_lines(
        [point("facility_rollups", tags, {"avg_kw": kw}, t0 + timedelta(minutes=m)) for m, kw in enumerate(kw_at)]
    )
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as bl:
        pid = (await bl.post("/programs", json={"programName": f"ir-{uid}"})).json()["id"]
        event = {
            "programID": pid,
            "intervalPeriod": {"start": t0.isoformat(), "duration": "PT15M"},
            "intervals": [{"id": i, "payloads": [{"type": "SIMPLE", "values": [2]}]} for i in range(3)],
            "reportDescriptors": descriptors,
        }
        vtn_event_id = (await bl.post("/events", json=event)).json()["id"]
        dr_event_id = _uuid.uuid4()
        async with pg_pool.acquire() as conn, conn.transaction():
            await onboard(conn, utility_id, base, ven_token, uid)
            await conn.execute(
                """INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, vtn_event_id, program_id, state,
                                          start_at, end_at, level, intervals, source_payload)
                   VALUES ($1, $2, $3, $3, $4, 'active', $5, $6, 2, $7::jsonb, $8::jsonb)""",
                dr_event_id,
                utility_id,
                vtn_event_id,
                pid,
                t0,
                t0 + 3 * QUARTER,
                _json.dumps([i.to_json() for i in schedule]),
                _json.dumps({"objectType": "EVENT", "operation": "CREATE", "object": {**event, "id": vtn_event_id}}),
            )
            await conn.execute(
                """INSERT INTO dr_event_facilities (dr_event_id, facility_id, state, baseline_kw)
                   VALUES ($1, $2, 'active', 120)""",
                dr_event_id,
                facility_id,
            )
            frozen = [
                {"start": (t0 + i * QUARTER).isoformat(), "end": (t0 + (i + 1) * QUARTER).isoformat(), "kw": kw}
                for i, kw in enumerate([100.0, 110.0, 130.0])
            ]
            await conn.execute(
                """INSERT INTO dr_baselines (dr_event_id, facility_id, method, interval_minutes, timezone, intervals,
                                             detail, frozen_at)
                   VALUES ($1, $2, 'forecast', 15, 'UTC', $3::jsonb, '{}'::jsonb, $4)""",
                dr_event_id,
                facility_id,
                _json.dumps(frozen),
                t0,
            )
        now = [t0 + QUARTER + timedelta(seconds=30)]
        sender = ReportSender(ven_token)

        async def step(row, fn):
            await fn()

        job = VtnReportingJob(pg_pool, settings.dr, lambda: now[0], report_influx, sender, [utility_id], step)

        async def stored() -> list[dict]:
            return [r for r in (await bl.get("/reports")).json() if r.get("eventID") == vtn_event_id]

        def values(report: dict) -> list[dict]:
            [resource] = report["resources"]
            assert resource["resourceName"] == facility_id
            return [{p["type"]: p["values"][0] for p in i["payloads"]} for i in resource["intervals"]]

        try:
            await job.report_interim()
            [first] = await stored()
            # by hand: 80 kW for a quarter hour is 20 kWh; the baseline frozen for that quarter hour is 100 kW
            assert values(first) == [
                {"OPERATING_STATE": "RUNNING_CURTAILED", "USAGE": 20.0, "DEMAND": 80.0, "BASELINE": 100.0}
            ]
            kinds = [d["payloadType"] for d in first["payloadDescriptors"]]
            assert kinds == ["OPERATING_STATE", "USAGE", "DEMAND", "BASELINE"]
            await job.report_interim()  # nothing new elapsed: the report is left alone
            [same] = await stored()
            assert same["modificationDateTime"] == first["modificationDateTime"]

            now[0] = t0 + 2 * QUARTER + timedelta(seconds=30)
            await job.report_interim()
            [second] = await stored()
            assert second["id"] == first["id"]
            assert values(second) == [
                {"OPERATING_STATE": "RUNNING_CURTAILED", "USAGE": 20.0, "DEMAND": 80.0, "BASELINE": 100.0},
                {"OPERATING_STATE": "RUNNING_CURTAILED", "USAGE": 22.5, "DEMAND": 90.0, "BASELINE": 110.0},
            ]
            now[0] = t0 + 3 * QUARTER + timedelta(seconds=30)
            await job.report_interim()  # the end of the last interval is the final report's, not an interim one
            assert values((await stored())[0]) == values(second)

            # the event completes: the final report (no settlement here: each event interval measured,
            # 80, 90 and 100 kW = 20, 22.5 and 25 kWh in a quarter hour, against the facility's 120 kW;
            # the event's own intervals, as no descriptor asks another layout) replaces the interim one
            await pg_pool.execute("UPDATE dr_events SET state = 'completed' WHERE dr_event_id = $1", dr_event_id)
            await pg_pool.execute(
                "UPDATE dr_event_facilities SET state = 'restored' WHERE dr_event_id = $1", dr_event_id
            )
            now[0] = t0 + 3 * QUARTER + timedelta(seconds=SETTLEMENT_WAIT_S + 1)
            await job.report_due()
            [final] = await stored()
            assert final["id"] == first["id"]
            assert values(final) == [
                {"OPERATING_STATE": "NORMAL", "USAGE": 20.0, "DEMAND": 80.0, "BASELINE": 120.0},
                {"OPERATING_STATE": "NORMAL", "USAGE": 22.5, "DEMAND": 90.0, "BASELINE": 120.0},
                {"OPERATING_STATE": "NORMAL", "USAGE": 25.0, "DEMAND": 100.0, "BASELINE": 120.0},
            ]
            assert [i["id"] for i in final["resources"][0]["intervals"]] == [0, 1, 2]
        finally:
            await sender.close()
