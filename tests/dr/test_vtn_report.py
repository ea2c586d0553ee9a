"""Reports a 3.1 VTN accepts: built interval by interval from M&V values (pure), then sent once per
event, replaced with PUT after an ambiguous failure (strict simulator, real process)."""

from __future__ import annotations

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
        target = VtnTarget("u", base, "3.1", "ven-r", "bearer", {"token": token})
        sender = ReportSender(token)
        try:
            await sender(target, report, False)
            await sender(target, {**report, "reportName": "second"}, True)  # as after an ambiguous failure
        finally:
            await sender.close()
        stored = (await bl.get("/reports", params={"eventID": eid})).json()
    assert [r["reportName"] for r in stored] == ["second"]


async def test_not_applicable_events_are_reported_once_to_the_vtn(strict_vtn, settings, pg_pool, uid):
    import json as _json

    from dr_coordinator.adapters import onboarding
    from dr_coordinator.entrypoints.vtn_reporting import VtnReportingJob
    from schemas.utilities import UtilityIn
    from tests.dr.conftest import _CREATED_UTILITIES

    token = settings.seed.utility_bearer_token.get_secret_value()
    base = strict_vtn.url("/openadr3/3.1.0")
    utility_id = f"na-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as bl:
        pid = (await bl.post("/programs", json={"programName": f"na-{uid}"})).json()["id"]
        start = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0).isoformat()
        body = {"programID": pid, "targets": ["fac-404"], "intervalPeriod": {"start": start, "duration": "PT30M"}}
        eid = (await bl.post("/events", json=body)).json()["id"]
        async with pg_pool.acquire() as conn:
            await onboarding.add_utility(
                conn,
                UtilityIn(
                    utility_id=utility_id,
                    name=utility_id,
                    vtn_base_url=base,
                    ven_name=f"ven-{uid}",
                    ven_token=token,
                    webhook_token=f"hook-{uid}-0123456789",
                ),
                "test",
            )
        await pg_pool.execute(
            """INSERT INTO dr_event_intake (utility_id, event_key, outcome, detail)
               VALUES ($1, $2, 'not_applicable', $3::jsonb)""",
            utility_id,
            f"{eid}@x",
            _json.dumps({"vtn_event_id": eid, "program_id": pid, "unknown_targets": ["fac-404"]}),
        )
        sender = ReportSender(token)

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
    reported = await pg_pool.fetchval("SELECT reported_at FROM dr_event_intake WHERE utility_id = $1", utility_id)
    assert reported is not None
