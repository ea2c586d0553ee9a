"""Planning job: when a scheduled event reaches start minus the dispatch lead, plan each pending
facility (forecast, baseline, strategy, per-zone actions), move the saga to dispatching and log
each facility's plan."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from dr_coordinator.adapters import inputs
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.commands import StartDispatch
from dr_coordinator.domain.planner import (
    FacilityPlan,
    ForecastInfo,
    Strategy,
    choose_strategy,
    facility_targets,
    plan_facility,
)
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
        """Plan every pending facility, then move the saga to dispatching (StartDispatch)."""
        plans, strategy, baselines_kw = await self.plan(dr_event_id)
        await self.send(dr_event_id, StartDispatch(plans, strategy))
        async with self.pool.acquire() as conn, conn.transaction():
            for fid, (kw, method) in baselines_kw.items():
                await conn.execute(
                    "UPDATE dr_event_facilities SET baseline_kw = $3 WHERE dr_event_id = $1 AND facility_id = $2",
                    dr_event_id,
                    fid,
                    kw,
                )
                await conn.execute(
                    """INSERT INTO dr_event_log (dr_event_id, facility_id, entry_type, detail, trace_id)
                       VALUES ($1, $2, 'plan', $3::jsonb, $4)""",
                    dr_event_id,
                    fid,
                    json.dumps(_plan_detail(plans.get(fid), kw, method)),
                    tracing.current_or_new().trace_id,
                )

    async def plan(
        self, dr_event_id: uuid.UUID
    ) -> tuple[dict[str, FacilityPlan], str, dict[str, tuple[float | None, str]]]:
        now = self.clock()
        ev = await inputs.event_row(self.pool, dr_event_id)
        fac_ids = [
            r["facility_id"]
            for r in await self.pool.fetch(
                "SELECT facility_id FROM dr_event_facilities WHERE dr_event_id = $1 AND state = 'pending'", dr_event_id
            )
        ]
        infos = await inputs.facility_infos(self.pool, fac_ids)
        start, end = ev["start_at"], ev["end_at"]

        async def gather_one(fid: str) -> tuple[str, ForecastInfo, float | None, str]:
            fc = await inputs.forecast_info(self.pool, fid, start, end, now)
            base_kw, method = await self.baselines.baseline(fid, start, end, ev["baseline_method"], fc)
            return fid, fc, base_kw, method

        sem = asyncio.Semaphore(8)

        async def bounded(fid: str) -> tuple[str, ForecastInfo, float | None, str]:
            async with sem:
                return await gather_one(fid)

        gathered = await asyncio.gather(*(bounded(f) for f in fac_ids if f in infos))
        expected: dict[str, float] = {}
        strategies: dict[str, Strategy] = {}
        baselines_kw: dict[str, tuple[float | None, str]] = {}
        for fid, fc, base_kw, method in gathered:
            info = infos[fid]
            strategies[fid] = choose_strategy(fc, self.settings.forecast_policy, self.settings.forecast_max_age_s)
            expected[fid] = fc.expected_kw or base_kw or info.peak_kw * DEFAULT_LOAD_FACTOR
            baselines_kw[fid] = (base_kw, method)
        targets = facility_targets(
            expected,
            shed_kw=ev["target_kw"],
            import_limit_kw=ev["import_limit_kw"],
            level=ev["level"],
            level_fraction=self.settings.simple_level_fraction,
        )
        plans = {
            fid: plan_facility(
                fid,
                infos[fid].zones,
                target_kw=targets[fid],
                expected_kw=expected[fid],
                peak_kw=infos[fid].peak_kw,
                strategy=strategies[fid],
                fallback_fraction=self.settings.fallback_shed_fraction,
            )
            for fid in expected
        }
        used = sorted({s.value for s in strategies.values()})
        strategy = used[0] if len(used) == 1 else "mixed:" + ",".join(used)
        return plans, strategy or "none", baselines_kw


def _plan_detail(plan: FacilityPlan | None, baseline_kw: float | None, method: str) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline_kw": baseline_kw, "baseline_method": method}
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
