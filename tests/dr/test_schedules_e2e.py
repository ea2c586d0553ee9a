"""Issue 12 items 4-6 end to end: OpenADR notifications into the real API, the coordinator, the BMS
simulator (SOAP) and PostgreSQL. The BMS simulator's command log is the setpoint history.

Expected setpoints are computed by hand for fac-001 (4 HVAC zones of 63 kW rated, 22 -> max 26 degC;
3 lighting zones of 46.7 kW, floor 50 %; peak 560 kW) with a full forecast of 200 kW:
load factor 200/560 = 0.357, HVAC zone load 22.5 kW, 0.12 x 22.5 = 2.7 kW shed per degC (4 degC
headroom = 10.8 kW), lighting zone load 16.68 kW (8.34 kW down to 50 %). SIMPLE level x sheds
x * 10 % of 200 kW, zones walked in order, setpoints in 0.5 degC steps:
- level 1 (20 kW): hvac-1 +4 -> 26 (10.8); 9.2 left -> ceil(9.2/2.7/0.5)*0.5 = 3.5 -> hvac-2 25.5;
- level 2 (40 kW): hvac-1..3 at 26 (32.4); 7.6 left -> 3.0 -> hvac-4 25;
- level 3 (60 kW): hvac-1..4 at 26 (43.2); 16.8 left -> light-1 50 % (8.34), light-2 50 % (8.34);
  0.12 left -> light-3 floor(100 - 0.12/16.68*100) = 99 %.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from energy.settings import Settings
from sim.bms.process import SimulatorProcess
from tests.dr.conftest import admin, api_server, coordinator, dr_settings, make_utility, wait_for_state
from tests.dr.test_operator_and_measurement import forecasts
from tests.waiting import wait_until

FAC = "fac-001"
LEVEL_1 = {"hvac-1": 26.0, "hvac-2": 25.5}
LEVEL_2 = {"hvac-1": 26.0, "hvac-2": 26.0, "hvac-3": 26.0, "hvac-4": 25.0}
LEVEL_3 = {**{f"hvac-{i}": 26.0 for i in range(1, 5)}, "light-1": 50.0, "light-2": 50.0, "light-3": 99.0}


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def event(event_id: str, intervals: list[tuple[datetime, int, int]]) -> dict[str, Any]:
    """intervals: (start, seconds, SIMPLE level)."""
    return {
        "id": event_id,
        "programID": "default",
        "eventName": event_id,
        "targets": [{"type": "RESOURCE_NAME", "values": [FAC]}],
        "intervals": [
            {
                "id": n,
                "intervalPeriod": {"start": iso(start), "duration": f"PT{seconds}S"},
                "payloads": [{"type": "SIMPLE", "values": [level]}],
            }
            for n, (start, seconds, level) in enumerate(intervals)
        ],
    }


def forecast_rows(start: datetime) -> list[tuple[str, datetime, float, str]]:
    slot = start.replace(second=0, microsecond=0) - timedelta(minutes=start.minute % 15)
    return [(FAC, slot + timedelta(minutes=15 * k), 200.0, "full") for k in range(-1, 3)]


def history(bms: SimulatorProcess) -> list[dict[str, Any]]:
    """The simulator's executed commands for the facility, in execution order."""
    records = admin(bms, f"commands?facility_id={FAC}")
    return sorted(records, key=lambda r: r["bms_reference"])


def sets_of(records: list[dict[str, Any]], event_id: uuid.UUID, replan: bool) -> dict[str, float]:
    return {
        r["zone_id"]: r["value"]
        for r in records
        if r["idempotency_key"].startswith(str(event_id))
        and r["operation"] != "RestoreZone"
        and (":v" in r["idempotency_key"]) == replan
    }


def restores_of(records: list[dict[str, Any]], event_id: uuid.UUID) -> set[str]:
    return {
        r["zone_id"]
        for r in records
        if r["idempotency_key"].startswith(str(event_id)) and r["operation"] == "RestoreZone"
    }


async def dr_event_id(pool: Any, utility_id: str, utility_event_id: str) -> uuid.UUID:
    eid = await pool.fetchval(
        "SELECT dr_event_id FROM dr_events WHERE utility_id = $1 AND utility_event_id = $2",
        utility_id,
        utility_event_id,
    )
    assert eid is not None
    return uuid.UUID(str(eid))


async def notify(client: httpx.AsyncClient, utility_id: str, token: str, operation: str, obj: dict[str, Any]) -> Any:
    resp = await client.post(
        f"/api/utility/{utility_id}/openadr3/notifications",
        json={"objectType": "EVENT", "operation": operation, "object": obj},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code in (200, 202), resp.text
    return resp.json()


@pytest.mark.slow
async def test_interval_boundary_then_a_raised_level_then_a_delete(
    settings: Settings, stack: Any, pg_pool: Any, uid: str, bms_sim: SimulatorProcess
) -> None:
    u = await make_utility(pg_pool, uid, f"t-{uid}", method="forecast")
    s = dr_settings(settings, bms_base_url=bms_sim.url("/bms"), only_utility_ids=u.utility_id)
    async with (
        forecasts(pg_pool, forecast_rows(datetime.now(UTC))),
        api_server(s) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        coordinator(s, pg_pool, None),
    ):
        # Times from now, once everything runs (a loaded machine can take seconds to start them).
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
        boundary = start + timedelta(seconds=10)
        body = event(f"sched-{uid}", [(start, 10, 1), (boundary, 120, 2)])
        await notify(client, u.utility_id, u.token, "CREATE", body)
        eid = await dr_event_id(pg_pool, u.utility_id, body["id"])

        # Interval 0 (level 1), then at the boundary only what differs for level 2.
        async def level_2_applied() -> bool:
            return sets_of(history(bms_sim), eid, replan=True) == {k: v for k, v in LEVEL_2.items() if k != "hvac-1"}

        await wait_until(level_2_applied, timeout_s=40, what="the level 2 interval's commands", interval_s=0.2)
        records = history(bms_sim)
        assert sets_of(records, eid, replan=False) == LEVEL_1
        boundary_cmds = [r for r in records if ":v" in r["idempotency_key"]]
        # hvac-1 stays at 26: no command; nothing of interval 1 ran before its start.
        assert all(datetime.fromisoformat(r["executed_at"]) >= boundary for r in boundary_cmds)
        assert restores_of(records, eid) == set()

        # The utility raises the level of the running interval: re-plan, only differing commands.
        await wait_for_state(pg_pool, eid, {"active"}, 20)
        raised = event(f"sched-{uid}", [(start, 10, 1), (boundary, 120, 3)])
        assert "modified" in (await notify(client, u.utility_id, u.token, "UPDATE", raised))["notes"]

        async def level_3_applied() -> bool:
            recs = history(bms_sim)
            return {r["zone_id"] for r in recs if ":v" in r["idempotency_key"]} >= {"light-1", "light-2", "light-3"}

        await wait_until(level_3_applied, timeout_s=30, what="the raised level's commands", interval_s=0.2)
        records = history(bms_sim)
        replans = [r for r in records if ":v" in r["idempotency_key"]]
        second = [r for r in replans if r not in boundary_cmds]
        # Level 2 -> 3 differs in hvac-4 (25 -> 26) and the three lighting zones; nothing else.
        assert {r["zone_id"]: r["value"] for r in second} == {
            "hvac-4": 26.0,
            "light-1": 50.0,
            "light-2": 50.0,
            "light-3": 99.0,
        }

        # A DELETE restores every zone this event changed and ends it cancelled.
        await notify(client, u.utility_id, u.token, "DELETE", raised)
        assert await wait_for_state(pg_pool, eid, {"cancelled", "completed", "failed", "partially_failed"}, 30) == (
            "cancelled"
        )
        records = history(bms_sim)
    assert restores_of(records, eid) == set(LEVEL_3)
    last_op = {r["zone_id"]: r["operation"] for r in records}
    assert set(last_op.values()) == {"RestoreZone"}


@pytest.mark.slow
async def test_back_to_back_events_on_the_same_zones_never_undo_each_other(
    settings: Settings, stack: Any, pg_pool: Any, uid: str, bms_sim: SimulatorProcess
) -> None:
    u = await make_utility(pg_pool, uid, f"t-{uid}", method="forecast")
    s = dr_settings(settings, bms_base_url=bms_sim.url("/bms"), only_utility_ids=u.utility_id, dispatch_lead_s=3.0)
    async with (
        forecasts(pg_pool, forecast_rows(datetime.now(UTC))),
        api_server(s) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        coordinator(s, pg_pool, None),
    ):
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        handover = start + timedelta(seconds=10)
        first = event(f"a-{uid}", [(start, 10, 1)])
        second = event(f"b-{uid}", [(handover, 10, 2)])
        await notify(client, u.utility_id, u.token, "CREATE", first)
        await notify(client, u.utility_id, u.token, "CREATE", second)
        a = await dr_event_id(pg_pool, u.utility_id, first["id"])
        b = await dr_event_id(pg_pool, u.utility_id, second["id"])
        final = {"completed", "failed", "partially_failed", "cancelled"}
        assert await wait_for_state(pg_pool, a, final, 40) == "completed"
        assert await wait_for_state(pg_pool, b, final, 40) == "completed"
    records = history(bms_sim)
    assert sets_of(records, a, replan=False) == LEVEL_1
    assert sets_of(records, b, replan=False) == LEVEL_2
    # A's end hands hvac-1 and hvac-2 over to B instead of restoring them; B restores all four.
    assert restores_of(records, a) == set()
    assert restores_of(records, b) == set(LEVEL_2)
    for zone in LEVEL_2:
        ops = [(r["idempotency_key"].split(":")[0], r["operation"]) for r in records if r["zone_id"] == zone]
        owners = [owner for owner, _ in ops]
        # Per zone: A's commands (if any), then only B's; the last word is B's restore.
        assert owners == sorted(owners, key=lambda o: o != str(a)), ops
        assert ops[-1] == (str(b), "RestoreZone"), ops
    # B takes A's zones over at its start, not during its dispatch lead inside A.
    for r in records:
        if r["idempotency_key"].startswith(str(b)) and r["zone_id"] in LEVEL_1 and r["operation"] != "RestoreZone":
            assert datetime.fromisoformat(r["executed_at"]) >= handover, r


async def test_intake_records_a_missed_event_and_counts_the_lead_in_the_overlap_check(
    settings: Settings, stack: Any, pg_pool: Any, uid: str
) -> None:
    u = await make_utility(pg_pool, uid, f"t-{uid}")
    s = dr_settings(settings, dispatch_lead_s=60.0)
    now = datetime.now(UTC).replace(microsecond=0)
    async with api_server(s) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        # Ended a minute ago when first seen (e.g. after an outage): recorded as missed, nothing dispatched.
        gone = event(f"gone-{uid}", [(now - timedelta(minutes=5), 240, 1)])
        answer = await notify(client, u.utility_id, u.token, "CREATE", gone)
        assert answer["outcome"] == "missed" and answer["facilities"] == []
        assert (
            await pg_pool.fetchval(
                "SELECT outcome FROM dr_event_intake WHERE utility_id = $1 AND event_key = $2", u.utility_id, gone["id"]
            )
            == "missed"
        )
        assert await pg_pool.fetchval("SELECT count(*) FROM dr_events WHERE utility_id = $1", u.utility_id) == 0

        start = now + timedelta(minutes=10)
        await notify(client, u.utility_id, u.token, "CREATE", event(f"first-{uid}", [(start, 600, 1)]))
        # 30 s after the first ends: inside the 60 s lead -> accepted as a hand-over.
        later = event(f"second-{uid}", [(start + timedelta(seconds=630), 600, 2)])
        accepted = await notify(client, u.utility_id, u.token, "CREATE", later)
        assert any("handed over" in n and f"first-{uid}" in n for n in accepted["notes"]), accepted
        # Overlapping periods are still refused.
        clash = await client.post(
            f"/api/utility/{u.utility_id}/openadr3/notifications",
            json={
                "objectType": "EVENT",
                "operation": "CREATE",
                "object": event(f"third-{uid}", [(start + timedelta(seconds=300), 600, 1)]),
            },
            headers={"Authorization": f"Bearer {u.token}"},
        )
        assert clash.status_code == 409, clash.text


async def test_the_worker_sends_one_zones_commands_in_order_across_events(
    settings: Settings, stack: Any, pg_pool: Any, uid: str
) -> None:
    """The claim query itself, on PostgreSQL: another open event's older unsent command of the same
    zone holds a newer one back; other zones and closed events do not."""
    from dr_coordinator.entrypoints.worker import _CLAIM
    from tests.dr.test_operator_and_measurement import new_event

    u = await make_utility(pg_pool, uid, f"t-{uid}")
    now = datetime.now(UTC)
    start = now + timedelta(days=400, minutes=int(uuid.uuid4().int % 10_000))
    a = await new_event(pg_pool, u, ["fac-007"], start, start + timedelta(minutes=10))
    b = await new_event(pg_pool, u, ["fac-007"], start + timedelta(minutes=10), start + timedelta(minutes=20))
    await pg_pool.execute("UPDATE dr_events SET state = 'active' WHERE dr_event_id = ANY($1::uuid[])", [a, b])

    async def command(event: uuid.UUID, zone: str, age_s: float) -> uuid.UUID:
        cid = uuid.uuid4()
        await pg_pool.execute(
            """INSERT INTO bms_commands (command_id, idempotency_key, dr_event_id, facility_id, zone_id, action, value,
                                         not_before, created_at)
               VALUES ($1, $2, $3, 'fac-007', $4, 'set_setpoint', 25.0, $5, $5)""",
            cid,
            f"{event}:fac-007:{zone}:set_setpoint:test-{cid}",
            event,
            zone,
            now - timedelta(seconds=age_s),
        )
        return cid

    older = await command(a, "hvac-1", 5)
    newer_same_zone = await command(b, "hvac-1", 1)
    other_zone = await command(b, "hvac-2", 1)

    async def claim() -> set[uuid.UUID]:
        rows = await pg_pool.fetch(_CLAIM, datetime.now(UTC), 50, 30.0, [u.utility_id])
        return {r["command_id"] for r in rows}

    assert await claim() == {older, other_zone}
    # The older one is in flight under a live lease: the newer one still waits.
    assert await claim() == set()
    await pg_pool.execute("UPDATE bms_commands SET status = 'acknowledged' WHERE command_id = $1", older)
    assert await claim() == {newer_same_zone}

    # An unsent command of an event that is over (cancelled) holds nobody back.
    await command(a, "hvac-3", 5)
    await pg_pool.execute("UPDATE dr_events SET state = 'cancelled' WHERE dr_event_id = $1", a)
    later = await command(b, "hvac-3", 1)
    assert later in await claim()


async def test_randomize_start_spreads_each_facilitys_first_commands_inside_the_window(
    settings: Settings, stack: Any, pg_pool: Any, uid: str
) -> None:
    from dr_coordinator.adapters.store import NewEvent, handle, insert_event
    from dr_coordinator.domain.commands import Schedule
    from dr_coordinator.entrypoints.timers import Timers

    u = await make_utility(pg_pool, uid, f"t-{uid}")
    lead, window = 60.0, 300.0
    s = dr_settings(settings, dispatch_lead_s=lead)
    # Dispatch moment (start - lead) still ahead: no offset is clamped to "now".
    start = datetime.now(UTC) + timedelta(seconds=lead + 60)
    facilities = ("fac-001", "fac-003", "fac-005", "fac-007", "fac-009", "fac-011")
    async with pg_pool.acquire() as conn, conn.transaction():
        eid, _ = await insert_event(
            conn,
            NewEvent(
                u.utility_id,
                f"rnd-{uid}",
                None,
                facilities,
                start,
                start + timedelta(minutes=30),
                None,
                None,
                2,
                0,
                {},
                randomize_start_s=window,
            ),
            datetime.now(UTC),
        )
    timers = Timers(pg_pool, s.dr, lambda: datetime.now(UTC), None, None, None, [u.utility_id])
    await handle(pg_pool, eid, Schedule(), lambda: datetime.now(UTC))
    await timers.planning.dispatch(eid)
    rows = await pg_pool.fetch(
        "SELECT facility_id, min(not_before) AS lo, max(not_before) AS hi FROM bms_commands "
        "WHERE dr_event_id = $1 GROUP BY facility_id",
        eid,
    )
    assert {r["facility_id"] for r in rows} == set(facilities)
    dispatch_at = start - timedelta(seconds=lead)
    for r in rows:
        assert r["lo"] == r["hi"]  # one moment per facility
        assert dispatch_at <= r["lo"] < dispatch_at + timedelta(seconds=window)
    # Six facilities over 300 s: not all at one moment.
    assert len({r["lo"] for r in rows}) == len(facilities)
