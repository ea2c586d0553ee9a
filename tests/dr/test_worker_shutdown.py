"""Graceful shutdown of the BMS command worker: commands whose BMS has not answered are handed back
(their lease ended at once) so another replica sends them now, and the BMS executes each once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from dr_coordinator.adapters.bms_soap import SoapBmsGateway
from dr_coordinator.entrypoints.worker import CommandWorker
from tests.dr.conftest import admin, dr_settings
from tests.waiting import wait_until


async def test_sigterm_hands_unanswered_commands_back_and_the_next_worker_sends_them(
    settings, pg_pool, utility, bms_sim
) -> None:
    s = dr_settings(settings, bms_base_url=bms_sim.url("/bms"), only_utility_ids=utility.utility_id)
    s = s.model_copy(
        update={
            "dr": s.dr.model_copy(
                update={"bms_lease_s": 600.0, "worker_shutdown_wait_s": 0.5, "bms_total_timeout_s": 30.0}
            )
        }
    )
    event_id, command_id, key = uuid.uuid4(), uuid.uuid4(), f"lease-back-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    async with pg_pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, state, start_at, end_at, target_kw)
               VALUES ($1, $2, $3, 'dispatching', $4, $5, 10)""",
            event_id,
            utility.utility_id,
            f"lease-{event_id.hex[:8]}",
            now,
            now + timedelta(hours=1),
        )
        await conn.execute(
            """INSERT INTO bms_commands (command_id, idempotency_key, dr_event_id, facility_id, zone_id, action, value)
               VALUES ($1, $2, $3, 'fac-001', 'hvac-1', 'set_setpoint', 25.5)""",
            command_id,
            key,
            event_id,
        )
    admin(bms_sim, "faults", {"facility_id": "fac-001", "latency_ms": 20_000})  # the BMS takes 20 s to answer
    gateway = SoapBmsGateway(s.dr)
    first = CommandWorker(pg_pool, gateway, s.dr, lambda: datetime.now(UTC), [utility.utility_id])
    stop = asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    try:
        status = "SELECT status, not_before FROM bms_commands WHERE command_id = $1"
        claimed = await wait_until(
            lambda: pg_pool.fetchrow(status + " AND status = 'in_flight'", command_id), timeout_s=20, what="the claim"
        )
        assert claimed["not_before"] > datetime.now(UTC) + timedelta(minutes=5)  # a 600 s lease
        stop.set()  # SIGTERM
        await asyncio.wait_for(running, 10)
        released = await pg_pool.fetchrow(status, command_id)
        assert released["status"] == "in_flight" and released["not_before"] <= datetime.now(UTC)

        admin(bms_sim, "faults", {"facility_id": "fac-001", "latency_ms": 0})
        second = CommandWorker(pg_pool, gateway, s.dr, lambda: datetime.now(UTC), [utility.utility_id])
        stop2 = asyncio.Event()
        running2 = asyncio.create_task(second.run(stop2))
        try:
            await wait_until(
                lambda: pg_pool.fetchval(
                    "SELECT status = 'acknowledged' FROM bms_commands WHERE command_id = $1", command_id
                ),
                timeout_s=20,
                what="the second worker to send it",
            )
        finally:
            stop2.set()
            await asyncio.wait_for(running2, 15)
    finally:
        stop.set()
        await gateway.close()
    # the first call may still have reached the BMS: executed once all the same (idempotency key)
    assert admin(bms_sim, "applied").get(key) == 1
