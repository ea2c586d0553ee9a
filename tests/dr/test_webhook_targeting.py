"""The webhook resolves OpenADR targets through the program's enrollments and fails closed; deletions
seen before creation win; an id reused by a restarted VTN names a new event. Real API, real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio

from energy.settings import Settings
from tests.dr.conftest import Utility, api_server, dr_settings, soon


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_server(dr_settings(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


async def enroll(pg_pool: Any, u: Utility, program: str, groups: dict[str, list[str]]) -> None:
    """Facilities of the fleet (already enrolled in 'default') also enrolled in ``program`` with groups."""
    await pg_pool.executemany(
        "INSERT INTO facility_enrollments (utility_id, facility_id, program_id, groups) VALUES ($1, $2, $3, $4)",
        [(u.utility_id, f, program, g) for f, g in groups.items()],
    )


def note(op: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"objectType": "EVENT", "operation": op, "object": event}


def event(eid: str, start: datetime, targets: Any = None, program: str = "peak", created: str | None = None) -> dict:
    body: dict[str, Any] = {
        "id": eid,
        "programID": program,
        "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": "PT10M"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
    }
    if targets is not None:
        body["targets"] = targets
    if created is not None:
        body["createdDateTime"] = created
    return body


def hook(u: Utility) -> str:
    return f"/api/utility/{u.utility_id}/openadr3/notifications"


async def facilities_of(pg_pool: Any, u: Utility, key: str) -> list[str]:
    rows = await pg_pool.fetch(
        """SELECT f.facility_id FROM dr_events e JOIN dr_event_facilities f USING (dr_event_id)
           WHERE e.utility_id = $1 AND e.utility_event_id = $2 ORDER BY 1""",
        u.utility_id,
        key,
    )
    return [r["facility_id"] for r in rows]


GROUPS = {"fac-001": ["north"], "fac-002": ["north"], "fac-003": ["south"], "fac-004": []}


async def test_string_targets_dispatch_exactly_the_targeted_facilities(api, utility, pg_pool):
    await enroll(pg_pool, utility, "peak", GROUPS)
    resp = await api.post(
        hook(utility), json=note("CREATE", event("e1", soon(60), ["fac-001", "fac-003"])), headers=utility.auth
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["facilities"] == ["fac-001", "fac-003"]
    assert await facilities_of(pg_pool, utility, "e1") == ["fac-001", "fac-003"]


async def test_group_targets_resolve_through_enrollments_in_either_spelling(api, utility, pg_pool):
    await enroll(pg_pool, utility, "peak", GROUPS)
    v301 = event("g1", soon(60), [{"type": "GROUP", "values": ["north"]}])
    v31 = event("g2", soon(60 + 1200), ["south"])
    assert (await api.post(hook(utility), json=note("POST", v301), headers=utility.auth)).status_code == 200
    assert (await api.post(hook(utility), json=note("CREATE", v31), headers=utility.auth)).status_code == 200
    assert await facilities_of(pg_pool, utility, "g1") == ["fac-001", "fac-002"]
    assert await facilities_of(pg_pool, utility, "g2") == ["fac-003"]


async def test_no_targets_means_the_programs_enrollments_not_the_fleet(api, utility, pg_pool):
    await enroll(pg_pool, utility, "peak", GROUPS)
    resp = await api.post(hook(utility), json=note("CREATE", event("all", soon(60))), headers=utility.auth)
    assert resp.status_code == 200
    assert await facilities_of(pg_pool, utility, "all") == ["fac-001", "fac-002", "fac-003", "fac-004"]


async def test_unknown_targets_dispatch_nothing_and_are_reported(api, utility, pg_pool):
    await enroll(pg_pool, utility, "peak", GROUPS)
    mixed = await api.post(
        hook(utility), json=note("CREATE", event("m1", soon(60), ["fac-002", "fac-404"])), headers=utility.auth
    )
    assert mixed.status_code == 200 and mixed.json()["facilities"] == ["fac-002"]
    assert any("fac-404" in n for n in mixed.json()["notes"])
    only_unknown = await api.post(
        hook(utility), json=note("CREATE", event("u1", soon(1300), ["fac-404"])), headers=utility.auth
    )
    assert only_unknown.status_code == 200, only_unknown.text
    body = only_unknown.json()
    assert body["outcome"] == "not_applicable" and body["facilities"] == [] and body["unknown_targets"] == ["fac-404"]
    assert await facilities_of(pg_pool, utility, "u1") == []
    recorded = await pg_pool.fetchval(
        "SELECT outcome FROM dr_event_intake WHERE utility_id = $1 AND event_key = 'u1'", utility.utility_id
    )
    assert recorded == "not_applicable"
    # An event of a program nobody is enrolled in is not applicable either (never the whole fleet).
    other = await api.post(
        hook(utility), json=note("CREATE", event("p1", soon(60), program="nobody")), headers=utility.auth
    )
    assert other.status_code == 200 and other.json()["outcome"] == "not_applicable"


async def test_delete_seen_before_create_wins(api, utility, pg_pool):
    await enroll(pg_pool, utility, "peak", GROUPS)
    ev = event("late", soon(60), ["fac-001"], created="2026-12-03T06:00:00Z")
    deleted = await api.post(hook(utility), json=note("DELETE", ev), headers=utility.auth)
    assert deleted.status_code == 200 and deleted.json()["outcome"] == "deleted"
    created = await api.post(hook(utility), json=note("CREATE", ev), headers=utility.auth)
    assert created.status_code == 200 and created.json()["outcome"] == "deleted"
    assert await facilities_of(pg_pool, utility, "late@2026-12-03T06:00:00Z") == []


async def test_an_id_reused_after_a_vtn_restart_is_a_new_event(api, utility, pg_pool):
    await enroll(pg_pool, utility, "peak", GROUPS)
    before = event("0", soon(60), ["fac-001"], created="2026-12-03 06:00:00")
    after = event("0", soon(60) + timedelta(minutes=30), ["fac-002"], created="2026-12-03 07:00:00")
    first = await api.post(hook(utility), json=note("CREATE", before), headers=utility.auth)
    again = await api.post(hook(utility), json=note("CREATE", before), headers=utility.auth)
    reused = await api.post(hook(utility), json=note("CREATE", after), headers=utility.auth)
    assert first.status_code == 200 and again.status_code == 200 and again.json()["duplicate"]
    assert reused.status_code == 200 and not reused.json()["duplicate"], reused.text
    assert reused.json()["dr_event_id"] != first.json()["dr_event_id"]
    ids = await pg_pool.fetch(
        "SELECT vtn_event_id FROM dr_events WHERE utility_id = $1 ORDER BY created_at", utility.utility_id
    )
    assert [r["vtn_event_id"] for r in ids] == ["0", "0"]
