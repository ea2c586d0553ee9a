"""The coordinator's start-up survives a loaded PostgreSQL: its warm-up query, cancelled by the
statement timeout while a lock holds it up, is retried (energy.resilience) with the process
reported not ready, and the coordinator becomes ready once the lock is gone, never exiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dr_coordinator.service import WARM_UP, Coordinator
from energy.adapters.postgres import create_pool
from energy.observability.health import Health
from energy.settings import Settings
from energy.stack.process import free_port
from tests.dr.conftest import Utility, dr_settings
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_warm_up_query_cancelled_by_statement_timeout_is_retried_until_ready(
    settings: Settings, pg_pool: Any, utility: Utility
) -> None:
    from dr_coordinator.adapters.bms_soap import SoapBmsGateway

    # No BMS listens on this port: the BMS pings fail at once (best effort), which is not what is tested.
    s = dr_settings(settings, bms_base_url=f"http://127.0.0.1:{free_port()}/bms", only_utility_ids=utility.utility_id)
    short = s.postgres.model_copy(update={"command_timeout_s": 0.3})  # statement_timeout 300 ms
    pool = await create_pool(short, min_size=1, max_size=4)
    gateway = SoapBmsGateway(s.dr)
    health = Health("dr-coordinator-test")
    stop = asyncio.Event()
    locker = await pg_pool.acquire()
    tx = locker.transaction()
    await tx.start()
    task: asyncio.Task[None] | None = None
    coord: Coordinator | None = None
    locked = True
    try:
        # The warm-up reads bms_endpoints: an exclusive lock makes it wait past the statement timeout.
        await locker.execute("LOCK TABLE bms_endpoints IN ACCESS EXCLUSIVE MODE")
        coord = Coordinator(s, pool, gateway, None, None, health=health)
        task = asyncio.create_task(coord.run(stop))
        await wait_until(
            lambda: "retrying" in health.conditions.get(WARM_UP, ""),
            timeout_s=30,
            what="the warm-up query failed and is being retried",
            interval_s=0.05,
        )
        reason = health.conditions[WARM_UP]
        assert "QueryCanceledError" in reason or "TimeoutError" in reason, reason
        ready, body = await health.ready()
        assert ready is False and WARM_UP in str(body)
        assert not task.done(), "the coordinator exited on a transient start-up failure"
        assert not coord.warmed.is_set()

        await tx.rollback()  # the lock goes
        locked = False
        await wait_until(coord.warmed.is_set, timeout_s=60, what="the coordinator warmed up", interval_s=0.05)
        ready, body = await health.ready()
        assert ready is True, body
        assert WARM_UP not in health.conditions
        assert not task.done()
    finally:
        if locked:
            await tx.rollback()
        await pg_pool.release(locker)
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 30)
        if coord is not None:
            await coord.timers_report_close()
        await gateway.close()
        await pool.close()
