"""Per-program rules (decision 0850): notice, maximum duration, events per day and dispatch lead. The
rules alone (pure), then through the real API's OpenADR webhook and the report the utility's strict
3.1 VTN receives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio

from dr_coordinator.domain.program_rules import ProgramRules, check_rules, cut_schedule, dispatch_lead_s
from dr_coordinator.domain.schedule import IntervalAsk
from energy.settings import Settings
from sim.bms.process import SimulatorProcess
from tests.dr.conftest import _CREATED_UTILITIES, Utility, api_server, dr_settings

S = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
TWENTY = timedelta(minutes=20)
SCHEDULE = tuple(IntervalAsk(i, S + i * TWENTY, S + (i + 1) * TWENTY, level=i + 1) for i in range(3))
FACS = ["fac-001", "fac-002", "fac-003"]


def check(rules: ProgramRules | None, announced: datetime, counts: dict[str, int] | None = None) -> Any:
    return check_rules(
        rules,
        start=S,
        end=S + 3 * TWENTY,
        intervals=SCHEDULE,
        announced_at=announced,
        facility_ids=FACS,
        events_that_day=counts or {},
    )


def test_no_rules_lets_everything_through():
    got = check(None, S - timedelta(minutes=1))
    assert (got.facility_ids, got.declined, got.end, got.intervals) == (tuple(FACS), {}, S + 3 * TWENTY, SCHEDULE)


def test_short_notice_declines_every_facility():
    got = check(ProgramRules(notice_s=3600), S - timedelta(minutes=30))
    assert not got.dispatchable and set(got.declined) == set(FACS)
    assert got.findings == ("notice 1800s is less than the program's 3600s",)
    assert check(ProgramRules(notice_s=3600), S - timedelta(minutes=60)).dispatchable  # exactly the notice: fine


def test_too_long_an_event_is_cut_at_the_programs_maximum():
    got = check(ProgramRules(max_duration_s=30 * 60), S - timedelta(hours=1))
    assert got.facility_ids == tuple(FACS) and got.end == S + timedelta(minutes=30)
    # 17:00-17:20 kept, 17:20-17:40 cut at 17:30, 17:40-18:00 dropped
    assert [(i.index, i.start, i.end, i.level) for i in got.intervals] == [
        (0, S, S + TWENTY, 1),
        (1, S + TWENTY, S + timedelta(minutes=30), 2),
    ]
    assert "3600s is more than the program's 1800s" in got.findings[0]
    assert cut_schedule(SCHEDULE, S + 3 * TWENTY) == SCHEDULE


def test_facilities_at_the_daily_cap_are_declined_the_others_dispatched():
    got = check(ProgramRules(max_events_per_day=2), S - timedelta(hours=1), {"fac-001": 2, "fac-002": 1})
    assert got.facility_ids == ("fac-002", "fac-003")
    assert got.declined == {"fac-001": "already in 2 of the program's events that day (at most 2)"}


def test_the_programs_dispatch_lead_replaces_the_default():
    assert dispatch_lead_s(None, 60.0) == 60.0
    assert dispatch_lead_s(300, 60.0) == 300.0
    assert dispatch_lead_s(0, 60.0) == 0.0


def test_reports_say_what_the_rules_did():
    from dr_coordinator.domain.report import ResourceResult, add_program_rules, build_interval_report

    report = build_interval_report(
        version="3.1",
        program_id="p",
        event_id="9",
        client_name="ven",
        report_name="r",
        resources=[ResourceResult("fac-002", "active", ())],
    )
    report["resources"][0]["intervals"] = [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": ["X"]}]}]
    told = add_program_rules(report, {"fac-001": "at the cap"}, ["cut at 18:00"], {"fac-002"})
    assert told["payloadDescriptors"][-1] == {
        "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
        "payloadType": "X_PROGRAM_RULE",
    }
    assert told["resources"] == [
        {
            "resourceName": "fac-002",
            "intervals": [
                {
                    "id": 0,
                    "payloads": [
                        {"type": "OPERATING_STATE", "values": ["X"]},
                        {"type": "X_PROGRAM_RULE", "values": ["cut at 18:00"]},
                    ],
                }
            ],
        },
        {
            "resourceName": "fac-001",
            "intervals": [
                {
                    "id": 0,
                    "payloads": [
                        {"type": "OPERATING_STATE", "values": ["RUNNING_OPTED_OUT"]},
                        {"type": "X_PROGRAM_RULE", "values": ["at the cap"]},
                    ],
                }
            ],
        },
    ]
    assert add_program_rules(report, {}, [], {"fac-002"}) is report  # nothing to tell: unchanged


# --- through the webhook -------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_server(dr_settings(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


async def set_program(pg_pool: Any, utility_id: str, facilities: list[str], **rules: int) -> None:
    from dr_coordinator.adapters import onboarding
    from schemas.utilities import EnrollmentIn, ProgramIn

    async with pg_pool.acquire() as conn:
        await onboarding.add_program(conn, utility_id, ProgramIn(program_id="peak", **rules), "test")
        await onboarding.enroll(conn, utility_id, EnrollmentIn(program_id="peak", facility_ids=facilities), "test")


def notification(eid: str, start: datetime, minutes: int, targets: list[str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": eid,
        "programID": "peak",
        "createdDateTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": f"PT{minutes}M"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
    }
    if targets is not None:
        event["targets"] = targets
    return {"objectType": "EVENT", "operation": "CREATE", "object": event}


def hook(utility_id: str) -> str:
    return f"/api/utility/{utility_id}/openadr3/notifications"


async def dispatched(pg_pool: Any, utility_id: str, vtn_event_id: str) -> tuple[list[str], Any]:
    row = await pg_pool.fetchrow(
        """SELECT e.end_at, ARRAY(SELECT facility_id FROM dr_event_facilities f WHERE f.dr_event_id = e.dr_event_id
                                  ORDER BY 1) AS facilities
           FROM dr_events e WHERE utility_id = $1 AND vtn_event_id = $2""",
        utility_id,
        vtn_event_id,
    )
    return (list(row["facilities"]), row["end_at"]) if row else ([], None)


async def test_short_notice_is_accepted_recorded_and_not_dispatched(api, utility: Utility, pg_pool):
    await set_program(pg_pool, utility.utility_id, ["fac-001", "fac-002"], notice_s=3600)
    note = notification("n1", datetime.now(UTC) + timedelta(minutes=10), 10)
    resp = await api.post(hook(utility.utility_id), json=note, headers=utility.auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["outcome"], body["facilities"]) == ("rule_violation", [])
    assert set(body["declined"]) == {"fac-001", "fac-002"}
    assert await dispatched(pg_pool, utility.utility_id, "n1") == ([], None)
    outcome = await pg_pool.fetchval(
        "SELECT outcome FROM dr_event_intake WHERE utility_id = $1 AND event_key LIKE 'n1@%'", utility.utility_id
    )
    assert outcome == "rule_violation"
    # the same notification again (a VTN retry, a poll): still recorded once, still not dispatched
    again = await api.post(hook(utility.utility_id), json=note, headers=utility.auth)
    assert again.json()["facilities"] == [] and await dispatched(pg_pool, utility.utility_id, "n1") == ([], None)


async def test_an_event_longer_than_the_program_allows_is_dispatched_until_the_maximum(api, utility: Utility, pg_pool):
    await set_program(pg_pool, utility.utility_id, ["fac-001"], max_duration_s=300)
    start = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    resp = await api.post(hook(utility.utility_id), json=notification("d1", start, 20), headers=utility.auth)
    assert resp.status_code == 200, resp.text
    assert any("is more than the program's 300s" in n for n in resp.json()["notes"])
    facilities, end = await dispatched(pg_pool, utility.utility_id, "d1")
    assert facilities == ["fac-001"] and end == start + timedelta(minutes=5)


async def test_the_daily_cap_declines_only_the_facilities_at_it(api, utility: Utility, pg_pool):
    rows = await pg_pool.fetch(
        "SELECT facility_id, timezone FROM facilities WHERE facility_id = ANY($1::text[]) ORDER BY 1",
        [f"fac-{i:03d}" for i in range(1, 21)],
    )
    by_zone: dict[str, list[str]] = {}
    for r in rows:
        by_zone.setdefault(r["timezone"], []).append(r["facility_id"])
    name, (a, b) = next((z, fs[:2]) for z, fs in sorted(by_zone.items()) if len(fs) >= 2)
    zone = ZoneInfo(name)
    await set_program(pg_pool, utility.utility_id, [a, b], max_events_per_day=1)
    # local noon tomorrow and an hour later: the same local day whatever the time now
    tomorrow = (datetime.now(zone) + timedelta(days=1)).date()
    noon = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 12, tzinfo=zone).astimezone(UTC)
    first = await api.post(hook(utility.utility_id), json=notification("c1", noon, 10, [a]), headers=utility.auth)
    assert first.json()["facilities"] == [a], first.text
    second = await api.post(
        hook(utility.utility_id), json=notification("c2", noon + timedelta(hours=1), 10), headers=utility.auth
    )
    assert second.status_code == 200 and second.json()["facilities"] == [b], second.text
    targeting = await pg_pool.fetchval(
        "SELECT targeting FROM dr_events WHERE utility_id = $1 AND vtn_event_id = 'c2'", utility.utility_id
    )
    declined = targeting if isinstance(targeting, dict) else json.loads(targeting)
    assert list(declined["rule_declined"]) == [a]
    # the next local day starts a new count
    third = await api.post(
        hook(utility.utility_id), json=notification("c3", noon + timedelta(days=1), 10), headers=utility.auth
    )
    assert third.json()["facilities"] == [a, b], third.text


@pytest.fixture(scope="module")
def strict_vtn(stack, tmp_path_factory) -> Iterator[SimulatorProcess]:
    from energy.stack.process import free_port

    args = ("--openadr-version", "3.1", "--sequential-ids", "--callback-url", "none")
    with SimulatorProcess.start("utility", free_port(), *args, log_dir=tmp_path_factory.mktemp("vtn31r")) as sim:
        yield sim


async def test_the_utility_is_told_with_a_report_its_vtn_accepts(api, strict_vtn, settings, pg_pool, uid):
    """Short notice: the utility's 3.1 VTN gets one report saying each targeted facility opted out, and
    why (OPERATING_STATE RUNNING_OPTED_OUT and the rule, a private payload type)."""
    from dr_coordinator.bootstrap import ReportSender
    from dr_coordinator.entrypoints.vtn_reporting import VtnReportingJob
    from tests.dr.test_vtn_report import onboard

    token = settings.seed.utility_bearer_token.get_secret_value()

    ven_token = settings.dr.vtn_token.get_secret_value()  # reports are written by VENs only
    base = strict_vtn.url("/openadr3/3.1.0")
    utility_id = f"pr-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as bl:
        pid = (await bl.post("/programs", json={"programName": "peak"})).json()["id"]
        start = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
        body = {
            "programID": pid,
            "targets": ["fac-001", "fac-002"],
            "intervalPeriod": {"start": start.isoformat(), "duration": "PT10M"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
        }
        created = (await bl.post("/events", json=body)).json()
        async with pg_pool.acquire() as conn:
            await onboard(conn, utility_id, base, ven_token, uid)
        from dr_coordinator.adapters import onboarding
        from schemas.utilities import EnrollmentIn, ProgramIn

        async with pg_pool.acquire() as conn:
            await onboarding.add_program(conn, utility_id, ProgramIn(program_id=pid, notice_s=3600), "test")
            await onboarding.enroll(conn, utility_id, EnrollmentIn(program_id=pid, facility_ids=FACS[:2]), "test")
        hook_auth = {"Authorization": f"Bearer hook-{uid}-0123456789"}
        note = {"objectType": "EVENT", "operation": "CREATE", "object": created}
        resp = await api.post(hook(utility_id), json=note, headers=hook_auth)
        assert resp.json()["outcome"] == "rule_violation", resp.text
        sender = ReportSender(ven_token)

        async def step(row, fn):
            await fn()

        job = VtnReportingJob(pg_pool, settings.dr, lambda: datetime.now(UTC), None, sender, [utility_id], step)
        try:
            await job.report_not_applicable()
            await job.report_not_applicable()  # once
        finally:
            await sender.close()
        [report] = (await bl.get("/reports", params={"eventID": created["id"]})).json()
    assert [d["payloadType"] for d in report["payloadDescriptors"]] == ["OPERATING_STATE", "X_PROGRAM_RULE"]
    reason = "is less than the program's 3600s"
    got = {
        r["resourceName"]: [(p["type"], p["values"][0]) for p in r["intervals"][0]["payloads"]]
        for r in report["resources"]
    }
    assert set(got) == {"fac-001", "fac-002"}
    for payloads in got.values():
        assert payloads[0] == ("OPERATING_STATE", "RUNNING_OPTED_OUT")
        assert payloads[1][0] == "X_PROGRAM_RULE" and reason in payloads[1][1]


async def test_a_modification_cannot_lengthen_an_event_past_the_maximum(api, utility: Utility, pg_pool):
    await set_program(pg_pool, utility.utility_id, ["fac-001"], max_duration_s=600)
    start = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    note = notification("m1", start, 5)
    assert (await api.post(hook(utility.utility_id), json=note, headers=utility.auth)).status_code == 200
    longer = {**note, "operation": "UPDATE"}
    longer["object"] = {**note["object"], "intervalPeriod": {**note["object"]["intervalPeriod"], "duration": "PT30M"}}
    resp = await api.post(hook(utility.utility_id), json=longer, headers=utility.auth)
    assert resp.status_code == 200, resp.text
    assert any("is more than the program's 600s" in n for n in resp.json()["notes"])
    assert (await dispatched(pg_pool, utility.utility_id, "m1"))[1] == start + timedelta(minutes=10)


async def test_the_timers_dispatch_each_event_at_its_programs_lead(settings, pg_pool, uid):
    """Two events starting in five minutes: the one whose program leads by ten minutes is dispatched
    now, the one of a program without a lead (the tests' default: 2 s) waits."""
    from dr_coordinator.adapters.store import NewEvent, handle, insert_event
    from dr_coordinator.domain.commands import Schedule
    from dr_coordinator.entrypoints.timers import Timers
    from tests.dr.conftest import make_utility

    u = await make_utility(pg_pool, uid, f"lead-{uid}")
    await set_program(pg_pool, u.utility_id, ["fac-001"], dispatch_lead_s=600)
    start = datetime.now(UTC) + timedelta(minutes=5)
    ids = {}
    for program, facility in (("peak", "fac-001"), ("default", "fac-002")):
        async with pg_pool.acquire() as conn, conn.transaction():
            ids[program], _ = await insert_event(
                conn,
                NewEvent(u.utility_id, f"lead-{program}", program, (facility,), start, start + timedelta(minutes=10),
                         50.0, None, None, 0, {}),
                datetime.now(UTC),
            )  # fmt: skip
        await handle(pg_pool, ids[program], Schedule(), lambda: datetime.now(UTC))
    timers = Timers(pg_pool, dr_settings(settings).dr, lambda: datetime.now(UTC), None, None, None, [u.utility_id])
    dispatched_now: list[Any] = []

    async def record(dr_event_id: Any) -> None:  # the planning job itself is tested elsewhere
        dispatched_now.append(dr_event_id)

    timers.planning.dispatch = record  # type: ignore[method-assign]
    await timers.tick()
    assert dispatched_now == [ids["peak"]]
