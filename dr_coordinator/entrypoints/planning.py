"""Planning job: when a scheduled event reaches start minus the dispatch lead, plan each pending
facility (forecast, baseline, strategy, per-zone actions) for the schedule's current interval,
move the saga to dispatching and log each facility's plan. While the event runs, at each interval
boundary or after a modification, plan the running facilities again (``replan``): the saga sends
only the commands that differ (decision 0421)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from dr_coordinator.adapters import inputs, settlement_store
from dr_coordinator.adapters.store import handle_in, with_retry
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.commands import ApplyPlans, StartDispatch
from dr_coordinator.domain.interval_baselines import Baseline
from dr_coordinator.domain.planner import (
    FacilityInputs,
    FacilityPlan,
    ForecastInfo,
    choose_strategy,
    plan_interval,
)
from dr_coordinator.domain.program_rules import dispatch_lead_s
from dr_coordinator.domain.saga import Decision
from dr_coordinator.domain.schedule import IntervalAsk, current_interval, randomized_offset_s, single_interval
from dr_coordinator.entrypoints.baselines import BaselineJob
from energy.observability import tracing

log = structlog.get_logger("dr.planning")
DEFAULT_LOAD_FACTOR = 0.6  # expected load as a share of peak when neither forecast nor history exist

SagaSender = Callable[[uuid.UUID, Any], Awaitable[None]]


class PlanningJob:
    def __init__(
        self,
        pool: Any,
        settings: DrSettings,
        clock: Callable[[], datetime],
        baselines: BaselineJob,
        send: SagaSender,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.baselines = baselines
        self.send = send

    async def dispatch(self, dr_event_id: uuid.UUID) -> None:
        """Plan every pending facility for the interval due, then, in one transaction, move the saga
        to dispatching (StartDispatch), freeze each facility's interval baseline and log its plan: a
        crash can never leave a dispatched facility without its baseline."""
        now = self.clock()
        ev = await inputs.event_row(self.pool, dr_event_id)
        interval = interval_at(schedule_of(ev), now)
        plans, strategy, baselines_kw = await self.plan(dr_event_id, interval, ("pending",))
        not_before = {}
        if ev["randomize_start_s"]:
            lead_s = dispatch_lead_s(ev["program_lead_s"], self.settings.dispatch_lead_s)
            dispatch_at = ev["start_at"] - timedelta(seconds=lead_s)
            window = timedelta(seconds=ev["randomize_start_s"])
            for fid in plans:
                offset = randomized_offset_s(window, str(dr_event_id), fid)
                not_before[fid] = dispatch_at + timedelta(seconds=offset)
        frozen = {fid: self.baselines.take(dr_event_id, fid) for fid in baselines_kw}
        command = StartDispatch(plans, strategy, interval.index, not_before)

        async def once() -> Decision:
            async with self.pool.acquire() as conn, conn.transaction():
                decision = await handle_in(conn, dr_event_id, command, self.clock())
                if decision.changed:
                    await self._log_plans(conn, dr_event_id, plans, baselines_kw, interval, frozen)
                return decision

        try:
            decision = await with_retry(once)
        finally:
            self.baselines.forget(dr_event_id)
        for saga_event in decision.events:
            log.info(
                "dr_saga_event",
                saga_event=type(saga_event).__name__,
                **{k: str(v) for k, v in vars(saga_event).items()},
            )

    async def replan(self, dr_event_id: uuid.UUID, reason: str) -> None:
        """Plan the running facilities for the interval due now (or the modified asks)."""
        ev = await inputs.event_row(self.pool, dr_event_id)
        interval = interval_at(schedule_of(ev), self.clock())
        try:
            plans, _, _ = await self.plan(dr_event_id, interval, ("dispatching", "active"))
        finally:
            self.baselines.forget(dr_event_id)  # the baselines frozen at dispatch stay the settled ones
        await self.send(dr_event_id, ApplyPlans(plans, interval.index, reason))
        async with self.pool.acquire() as conn, conn.transaction():
            await self._log_plans(conn, dr_event_id, plans, {}, interval, {})

    async def _log_plans(
        self,
        conn: Any,
        dr_event_id: uuid.UUID,
        plans: dict[str, FacilityPlan],
        baselines_kw: dict[str, tuple[float | None, str]],
        interval: IntervalAsk,
        frozen: dict[str, Baseline | None],
    ) -> None:
        now = self.clock()
        trace_id = tracing.current_or_new().trace_id
        baseline_rows, log_rows = [], []
        for fid in sorted(set(plans) | set(baselines_kw)):
            kw, method = baselines_kw.get(fid, (None, ""))
            baseline = frozen.get(fid)
            if fid in baselines_kw:
                baseline_rows.append((dr_event_id, fid, kw))
                if baseline is not None:
                    await settlement_store.freeze_baseline(conn, dr_event_id, fid, baseline, now)
            detail = _plan_detail(plans.get(fid), kw, method, baseline) | {"interval": interval.index}
            log_rows.append((dr_event_id, fid, json.dumps(detail), trace_id))
        # One statement per table for the whole event (row-by-row round trips grew with its size).
        if baseline_rows:
            await conn.executemany(
                "UPDATE dr_event_facilities SET baseline_kw = $3 WHERE dr_event_id = $1 AND facility_id = $2",
                baseline_rows,
            )
        if log_rows:
            await conn.executemany(
                """INSERT INTO dr_event_log (dr_event_id, facility_id, entry_type, detail, trace_id)
                   VALUES ($1, $2, 'plan', $3::jsonb, $4)""",
                log_rows,
            )

    async def plan(
        self, dr_event_id: uuid.UUID, interval: IntervalAsk | None = None, states: tuple[str, ...] = ("pending",)
    ) -> tuple[dict[str, FacilityPlan], str, dict[str, tuple[float | None, str]]]:
        now = self.clock()
        ev = await inputs.event_row(self.pool, dr_event_id)
        if interval is None:
            interval = interval_at(schedule_of(ev), now)
        fac_ids = [
            r["facility_id"]
            for r in await self.pool.fetch(
                "SELECT facility_id FROM dr_event_facilities WHERE dr_event_id = $1 AND state = ANY($2::text[])",
                dr_event_id,
                list(states),
            )
        ]
        infos = await inputs.facility_infos(self.pool, fac_ids)
        start, end = ev["start_at"], ev["end_at"]

        async def gather_one(fid: str) -> tuple[str, ForecastInfo, float | None, str]:
            fc = await inputs.forecast_info(self.pool, fid, start, end, now)
            base_kw, method = await self.baselines.baseline(
                fid, start, end, ev["baseline_method"], fc, ev["baseline_rules"], dr_event_id
            )
            return fid, fc, base_kw, method

        sem = asyncio.Semaphore(8)

        async def bounded(fid: str) -> tuple[str, ForecastInfo, float | None, str]:
            async with sem:
                return await gather_one(fid)

        gathered = await asyncio.gather(*(bounded(f) for f in fac_ids if f in infos))
        facilities: dict[str, FacilityInputs] = {}
        baselines_kw: dict[str, tuple[float | None, str]] = {}
        for fid, fc, base_kw, method in gathered:
            info = infos[fid]
            facilities[fid] = FacilityInputs(
                tuple(info.zones),
                fc.expected_kw or base_kw or info.peak_kw * DEFAULT_LOAD_FACTOR,
                info.peak_kw,
                choose_strategy(fc, self.settings.forecast_policy, self.settings.forecast_max_age_s),
            )
            baselines_kw[fid] = (base_kw, method)
        plans = plan_interval(
            interval,
            facilities,
            level_fraction=self.settings.simple_level_fraction,
            fallback_fraction=self.settings.fallback_shed_fraction,
        )
        used = sorted({f.strategy.value for f in facilities.values()})
        strategy = used[0] if len(used) == 1 else "mixed:" + ",".join(used)
        return plans, strategy or "none", baselines_kw


def schedule_of(ev: Any) -> list[IntervalAsk]:
    """The event's schedule; events stored without one are a single window with the event's asks."""
    raw = ev["intervals"]
    if raw:
        items = json.loads(raw) if isinstance(raw, str) else raw
        return [IntervalAsk.from_json(i) for i in items]
    return single_interval(
        ev["start_at"], ev["end_at"], level=ev["level"], import_limit_kw=ev["import_limit_kw"], shed_kw=ev["target_kw"]
    )


def interval_at(schedule: list[IntervalAsk], now: datetime) -> IntervalAsk:
    """The interval due at ``now``; in a gap between intervals (or past the last): shed nothing."""
    current = current_interval(schedule, now)
    if current is not None:
        return current
    return IntervalAsk(-1, now, now)


def due_interval_index(ev: Any, now: datetime) -> int:
    return interval_at(schedule_of(ev), now).index


def _plan_detail(
    plan: FacilityPlan | None, baseline_kw: float | None, method: str, baseline: Baseline | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline_kw": baseline_kw, "baseline_method": method}
    if baseline is not None:
        out["baseline"] = baseline.as_dict()
    if plan is not None:
        out.update(
            strategy=plan.strategy.value,
            target_kw=round(plan.target_kw, 3),
            expected_kw=round(plan.expected_kw, 3),
            planned_shed_kw=round(plan.planned_shed_kw, 3),
            shortfall_kw=round(plan.shortfall_kw, 3),
            actions=[{"zone_id": a.zone_id, "action": a.action, "value": a.value} for a in plan.actions],
        )
    return out


__all__ = ["DEFAULT_LOAD_FACTOR", "PlanningJob"]
