"""Durable timers read from PostgreSQL: schedule new events, dispatch at start minus the lead,
restore at the end, report when done, measure and reconcile while active.

Nothing lives only in memory: after a restart the next tick finds every unfinished saga by its
state and times and carries on. Each job lives in its own module (``planning``, ``baselines``,
``reconciliation``, ``vtn_reporting``); this one only decides, per tick, which job is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog

from aggregation.config import AggregationSettings
from dr_coordinator.adapters import settlement_store
from dr_coordinator.adapters.store import complete_intake, handle
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.commands import Schedule, StartRestore
from dr_coordinator.domain.program_rules import dispatch_lead_s
from dr_coordinator.domain.saga import IllegalTransitionError
from dr_coordinator.entrypoints.baselines import DEFAULT_CELL_DEG, BaselineJob
from dr_coordinator.entrypoints.planning import PlanningJob, due_interval_index
from dr_coordinator.entrypoints.reconciliation import ReconciliationJob
from dr_coordinator.entrypoints.settlement import SettlementJob
from dr_coordinator.entrypoints.vtn_reporting import ReportPoster, VtnReportingJob
from dr_coordinator.metrics import LOOP_ERRORS
from dr_coordinator.ports import BmsGateway
from energy.adapters.influx import InfluxClient
from energy.observability import tracing

log = structlog.get_logger("dr.timers")
OPEN_STATES = ("received", "scheduled", "dispatching", "active")


def _trace_of(trace_id: str | None) -> tracing.TraceContext | None:
    if trace_id and len(trace_id) == 32:
        return tracing.TraceContext(trace_id, uuid.uuid4().hex[:16])
    return None


def _replan_reason(row: Any, now: datetime) -> str | None:
    """Why a running event needs new plans now: a modification, or the next interval is due."""
    if row["replan_due"]:
        return "event modified"
    due = due_interval_index(row, now)
    if due != row["interval_index"]:
        return f"interval {due} due" if due >= 0 else "no interval due (gap in the schedule)"
    return None


class Timers:
    def __init__(
        self,
        pool: Any,
        settings: DrSettings,
        clock: Callable[[], datetime],
        influx: InfluxClient | None,
        gateway: BmsGateway | None,
        post_report: ReportPoster | None,
        utility_ids: list[str] | None = None,
        *,
        lateness_s: float = AggregationSettings().allowed_lateness_s,
        weather_cell_deg: float = DEFAULT_CELL_DEG,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.utility_ids = utility_ids or None
        self._sem = asyncio.Semaphore(4)
        self.baselines = BaselineJob(pool, influx, weather_cell_deg)
        self.settlement = SettlementJob(pool, settings, clock, influx, self.baselines, lateness_s, self.utility_ids)
        self.planning = PlanningJob(pool, settings, clock, self.baselines, self._message)
        self.reconciliation = ReconciliationJob(pool, settings, clock, influx, gateway)
        self.reporting = VtnReportingJob(
            pool,
            settings,
            clock,
            influx,
            post_report,
            self.utility_ids,
            self._step,
            settlement_store.interval_source(pool),
        )

    async def tick(self) -> None:
        now = self.clock()

        def lead_of(row: Any) -> float:
            return dispatch_lead_s(row["program_lead_s"], self.settings.dispatch_lead_s)

        rows = await self.pool.fetch(
            """SELECT dr_event_id, state, start_at, end_at, trace_id, intervals, level, import_limit_kw, target_kw,
                      interval_index, replan_due, intake_facility_ids IS NOT NULL AS intake_pending,
                      (SELECT p.dispatch_lead_s FROM utility_programs p  -- the program's lead (decision 0850)
                       WHERE p.utility_id = e.utility_id AND p.program_id = COALESCE(e.program_id, 'default'))
                        AS program_lead_s
               FROM dr_events e
               WHERE state = ANY($1::text[]) AND ($2::text[] IS NULL OR utility_id = ANY($2::text[]))
               ORDER BY priority DESC, start_at""",
            list(OPEN_STATES),
            self.utility_ids,
        )
        jobs: list[Awaitable[None]] = []
        for r in rows:
            eid, state = r["dr_event_id"], r["state"]
            if state == "received":
                jobs.append(self._step(r, partial(self._schedule, eid, r["intake_pending"])))
            elif state == "scheduled" and r["start_at"] - timedelta(seconds=lead_of(r)) <= now:
                jobs.append(self._step(r, partial(self.planning.dispatch, eid)))
            elif state in ("dispatching", "active") and r["end_at"] <= now:
                jobs.append(self._step(r, partial(self._message, eid, StartRestore())))
            elif state in ("dispatching", "active") and (replan := _replan_reason(r, now)):
                jobs.append(self._step(r, partial(self.planning.replan, eid, replan)))
            elif state == "active":
                jobs.append(self._step(r, partial(self.reconciliation.watch_active, eid)))
        jobs.append(self.reporting.report_interim())
        jobs.append(self.reporting.report_due())
        jobs.append(self.reporting.report_not_applicable())
        await asyncio.gather(*jobs)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():  # a tick every poll interval, not a retry loop (decision 0840)
            try:
                await self.tick()
            except Exception as exc:
                LOOP_ERRORS.labels("timers").inc()
                log.error("dr_timers_tick_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)

    async def _step(self, row: Any, fn: Callable[[], Awaitable[object]]) -> None:
        async with self._sem:
            with (
                tracing.use_trace(
                    _trace_of(row["trace_id"]), "dr.timers.step", attributes={"dr_event_id": str(row["dr_event_id"])}
                ),
                structlog.contextvars.bound_contextvars(dr_event_id=str(row["dr_event_id"])),
            ):
                try:
                    await fn()
                except IllegalTransitionError as exc:
                    log.info("dr_step_raced", error=str(exc))  # another coordinator got there first
                except Exception as exc:
                    LOOP_ERRORS.labels("timers").inc()
                    log.error("dr_step_failed", error=f"{type(exc).__name__}: {exc}")

    async def _schedule(self, dr_event_id: uuid.UUID, intake_pending: bool) -> None:
        """A large event's facilities are all added (in chunks) before its saga is scheduled."""
        if intake_pending:
            await complete_intake(self.pool, dr_event_id)
        await self._message(dr_event_id, Schedule())

    async def _message(self, dr_event_id: uuid.UUID, message: Any) -> None:
        decision = await handle(self.pool, dr_event_id, message, self.clock)
        for ev in decision.events:
            log.info("dr_saga_event", saga_event=type(ev).__name__, **{k: str(v) for k, v in vars(ev).items()})


__all__ = ["OPEN_STATES", "Timers"]
