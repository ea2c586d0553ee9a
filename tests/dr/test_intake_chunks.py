"""A large DR event is taken in chunk by chunk (decision 0920): the webhook's transaction writes
the event with one chunk of facilities, the coordinator adds the rest one transaction per chunk
and only then schedules the saga; repeating or racing the completion adds every facility once."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dr_coordinator.adapters import store
from dr_coordinator.adapters.store import NewEvent, complete_intake, insert_event
from dr_coordinator.entrypoints.timers import Timers
from energy.settings import Settings
from tests.dr.conftest import FLEET, Utility, dr_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHUNK = 3  # 20 facilities: a first chunk of 3 in the webhook's transaction, then 6 more chunks (3,3,3,3,3,2)


async def _new_event(pool: Any, u: Utility) -> uuid.UUID:
    start = datetime.now(UTC) + timedelta(hours=3)
    async with pool.acquire() as conn, conn.transaction():
        eid, duplicate = await insert_event(
            conn,
            NewEvent(
                u.utility_id,
                f"big-{secrets.token_hex(4)}",
                None,
                tuple(FLEET),
                start,
                start + timedelta(hours=1),
                100.0,
                None,
                None,
                0,
                {},
            ),
            datetime.now(UTC),
        )
    assert not duplicate
    return eid


async def _rows_per_transaction(pool: Any, eid: uuid.UUID) -> list[int]:
    """How many of the event's facility rows each writing transaction created (PostgreSQL's xmin)."""
    rows = await pool.fetch(
        "SELECT xmin::text AS tx, count(*) AS n FROM dr_event_facilities WHERE dr_event_id = $1 GROUP BY xmin",
        eid,
    )
    return sorted(int(r["n"]) for r in rows)


async def test_large_event_is_written_in_chunks_and_scheduled_complete(
    settings: Settings, pg_pool: Any, utility: Utility, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "INTAKE_CHUNK", CHUNK)
    eid = await _new_event(pg_pool, utility)

    # The webhook's transaction: the event, its first chunk, and the list of the facilities to add.
    assert await _rows_per_transaction(pg_pool, eid) == [3]
    pending = await pg_pool.fetchval("SELECT intake_facility_ids FROM dr_events WHERE dr_event_id = $1", eid)
    assert sorted(pending) == sorted(FLEET)

    # Completed by hand here, to see its transactions before the saga's updates rewrite the rows.
    assert await complete_intake(pg_pool, eid) == 20
    assert await pg_pool.fetchval("SELECT intake_facility_ids FROM dr_events WHERE dr_event_id = $1", eid) is None
    per_tx = await _rows_per_transaction(pg_pool, eid)
    # 3 rows in the webhook's; then chunks [0:3] (nothing new), [3:6] .. [15:18] (3 each), [18:20] (2).
    assert per_tx == [2, 3, 3, 3, 3, 3, 3], per_tx

    # A second event, left to the coordinator: its tick completes the intake, then schedules the saga.
    other = await _new_event(pg_pool, utility)
    assert await _rows_per_transaction(pg_pool, other) == [3]
    timers = Timers(
        pg_pool, dr_settings(settings).dr, lambda: datetime.now(UTC), None, None, None, [utility.utility_id]
    )
    await timers.tick()
    for event in (eid, other):
        state, left = await pg_pool.fetchrow(
            "SELECT state, intake_facility_ids FROM dr_events WHERE dr_event_id = $1", event
        )
        assert state == "scheduled" and left is None
        facilities = await pg_pool.fetch(
            "SELECT facility_id, state FROM dr_event_facilities WHERE dr_event_id = $1 ORDER BY facility_id", event
        )
        assert [r["facility_id"] for r in facilities] == sorted(FLEET)
        assert {r["state"] for r in facilities} == {"pending"}  # the saga plans them at dispatch

    # Completing again is a no-op.
    assert await complete_intake(pg_pool, eid) == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM dr_event_facilities WHERE dr_event_id = $1", eid) == 20


async def test_interrupted_intake_completed_by_two_coordinators_adds_each_facility_once(
    pg_pool: Any, utility: Utility, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "INTAKE_CHUNK", CHUNK)
    eid = await _new_event(pg_pool, utility)
    # A coordinator that crashed after two more chunks: rows of chunks 1 and 2 are in, the list is not cleared.
    async with pg_pool.acquire() as conn, conn.transaction():
        await store._add_facilities(conn, eid, list(FLEET[3:9]))
    assert await pg_pool.fetchval("SELECT count(*) FROM dr_event_facilities WHERE dr_event_id = $1", eid) == 9

    done = await asyncio.gather(complete_intake(pg_pool, eid), complete_intake(pg_pool, eid))
    assert sorted(done) in ([0, 20], [20, 20])  # the second may find the list cleared already
    rows = await pg_pool.fetch("SELECT facility_id FROM dr_event_facilities WHERE dr_event_id = $1", eid)
    assert sorted(r["facility_id"] for r in rows) == sorted(FLEET)
    assert await pg_pool.fetchval("SELECT intake_facility_ids FROM dr_events WHERE dr_event_id = $1", eid) is None


async def test_small_event_is_complete_in_one_transaction(pg_pool: Any, utility: Utility) -> None:
    eid = await _new_event(pg_pool, utility)  # 20 facilities, the default chunk is larger
    assert len(FLEET) <= store.INTAKE_CHUNK
    assert await _rows_per_transaction(pg_pool, eid) == [20]
    assert await pg_pool.fetchval("SELECT intake_facility_ids FROM dr_events WHERE dr_event_id = $1", eid) is None
