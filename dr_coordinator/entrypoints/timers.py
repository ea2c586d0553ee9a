"""Durable timers read from PostgreSQL: schedule new events, dispatch at start minus the lead,
restore at the end, report when done, measure and reconcile while active.

Nothing lives only in memory: after a restart the next tick finds every unfinished saga by its
state and times and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog

from dr_coordinator.adapters import inputs, measurement
from dr_coordinator.adapters.store import add_outbox, handle, with_retry
from dr_coordinator.config import DrSettings
from dr_coordinator.domain import baselines
from dr_coordinator.domain.commands import (
    Schedule,
    StartDispatch,
    StartRestore,
    command_id,
    idempotency_key,
)
from dr_coordinator.domain.planner import (
    FacilityPlan,
    ForecastInfo,
    Strategy,
    choose_strategy,
    facility_targets,
    plan_facility,
)
from dr_coordinator.domain.report import FacilityResult, build_report
from dr_coordinator.domain.saga import IllegalTransitionError
from dr_coordinator.entrypoints.worker import endpoint_url
from dr_coordinator.metrics import ACHIEVED_KW, DRIFT_CORRECTIONS, LOOP_ERRORS, REPORTS, UNDERPERFORMING
from dr_coordinator.ports import BmsGateway, BmsRejectedError, BmsUnavailableError
from energy.adapters.influx import InfluxClient
from energy.observability import tracing
from schemas.dr import BmsAction, BmsCommand, BmsCommandIssuedEvent
from schemas.topics import BMS_COMMANDS

log = structlog.get_logger("dr.timers")
OPEN_STATES = ("received", "scheduled", "dispatching", "active")
MAX_CORRECTIONS_PER_ZONE = 3
DEFAULT_LOAD_FACTOR = 0.6  # expected load as a share of peak when neither forecast nor history exist

ReportPoster = Callable[[str, dict[str, Any]], Awaitable[None]]


def _trace_of(trace_id: str | None) -> tracing.TraceContext | None:
    if trace_id and len(trace_id) == 32:
        return tracing.TraceContext(trace_id, uuid.uuid4().hex[:16])
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
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.influx = influx
        self.gateway = gateway
        self.post_report = post_report
        self.utility_ids = utility_ids or None
        self._sem = asyncio.Semaphore(4)
        self._last_reconcile: dict[uuid.UUID, datetime] = {}

    # --- the tick ----------------------------------------------------------------------------

    async def tick(self) -> None:
        now = self.clock()
        lead = timedelta(seconds=self.settings.dispatch_lead_s)
        rows = await self.pool.fetch(
            """SELECT dr_event_id, state, start_at, end_at, trace_id FROM dr_events
               WHERE state = ANY($1::text[]) AND ($2::text[] IS NULL OR utility_id = ANY($2::text[]))
               ORDER BY priority DESC, start_at""",
            list(OPEN_STATES),
            self.utility_ids,
        )
        jobs: list[Awaitable[None]] = []
        for r in rows:
            eid, state = r["dr_event_id"], r["state"]
            if state == "received":
                jobs.append(self._step(r, partial(self._message, eid, Schedule())))
            elif state == "scheduled" and r["start_at"] - lead <= now:
                jobs.append(self._step(r, partial(self._dispatch, eid)))
            elif state in ("dispatching", "active") and r["end_at"] <= now:
                jobs.append(self._step(r, partial(self._message, eid, StartRestore())))
            elif state == "active":
                jobs.append(self._step(r, partial(self._watch_active, eid)))
        jobs.append(self._reports())
        await asyncio.gather(*jobs)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
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
                tracing.use_trace(_trace_of(row["trace_id"])),
                structlog.contextvars.bound_contextvars(dr_event_id=str(row["dr_event_id"])),
            ):
                try:
                    await fn()
                except IllegalTransitionError as exc:
                    log.info("dr_step_raced", error=str(exc))  # another coordinator got there first
                except Exception as exc:
                    LOOP_ERRORS.labels("timers").inc()
                    log.error("dr_step_failed", error=f"{type(exc).__name__}: {exc}")

    async def _message(self, dr_event_id: uuid.UUID, message: Any) -> None:
        decision = await handle(self.pool, dr_event_id, message, self.clock)
        for ev in decision.events:
            log.info("dr_saga_event", saga_event=type(ev).__name__, **{k: str(v) for k, v in vars(ev).items()})

    # --- dispatch: plan then StartDispatch ----------------------------------------------------

    async def _dispatch(self, dr_event_id: uuid.UUID) -> None:
        plans, strategy, baselines_kw = await self.plan(dr_event_id)
        await self._message(dr_event_id, StartDispatch(plans, strategy))
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
            base_kw, method = await self._baseline(fid, start, end, ev["baseline_method"], fc)
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

    async def _baseline(
        self, facility_id: str, start: datetime, end: datetime, method: str, fc: ForecastInfo
    ) -> tuple[float | None, str]:
        """The utility's baseline method, falling back to the forecast when history is missing."""
        if method != "forecast" and self.influx is not None:
            try:
                event_days = {
                    r["d"]
                    for r in await self.pool.fetch(
                        """SELECT (e.start_at AT TIME ZONE 'UTC')::date AS d FROM dr_event_facilities ef
                           JOIN dr_events e USING (dr_event_id)
                           WHERE ef.facility_id = $1 AND e.start_at < $2 AND e.start_at > $2 - interval '46 days'
                             AND e.state NOT IN ('cancelled', 'received', 'scheduled')""",
                        facility_id,
                        start,
                    )
                }
                days, day_of = await measurement.history(self.influx, facility_id, start, end, event_days)
                fn = baselines.pjm_high4of5 if method == "pjm_high4of5" else baselines.caiso_10in10
                b = fn(days, start.date(), day_of)
                return b.kw, b.method
            except baselines.InsufficientHistoryError:
                pass
            except Exception as exc:
                log.warning("dr_baseline_history_unavailable", facility_id=facility_id, error=str(exc)[:300])
        if fc.expected_kw is not None:
            return fc.expected_kw, "forecast"
        return None, "none"

    # --- while active: measure, alert, reconcile ------------------------------------------------

    async def _watch_active(self, dr_event_id: uuid.UUID) -> None:
        now = self.clock()
        last = self._last_reconcile.get(dr_event_id)
        if last is not None and (now - last).total_seconds() < self.settings.reconcile_interval_s:
            return
        self._last_reconcile[dr_event_id] = now
        ev = await self.pool.fetchrow("SELECT start_at FROM dr_events WHERE dr_event_id = $1", dr_event_id)
        facs = await self.pool.fetch(
            """SELECT ef.facility_id, ef.state, ef.detail, ef.target_kw, ef.baseline_kw, b.url
               FROM dr_event_facilities ef LEFT JOIN bms_endpoints b USING (facility_id)
               WHERE ef.dr_event_id = $1 AND ef.state = 'active'""",
            dr_event_id,
        )
        if self.influx is not None and (now - ev["start_at"]).total_seconds() >= self.settings.underperformance_after_s:
            window_start = max(ev["start_at"], now - timedelta(seconds=self.settings.underperformance_after_s))
            actual = await measurement.actual_many(self.influx, [f["facility_id"] for f in facs], window_start, now)
            for f in facs:
                a = actual.get(f["facility_id"])
                if a is None or f["baseline_kw"] is None:
                    continue
                achieved = baselines.achieved_reduction_kw(f["baseline_kw"], a)
                ACHIEVED_KW.labels(f["facility_id"]).set(achieved)
                low = baselines.underperforming(achieved, f["target_kw"] or 0.0, self.settings.underperformance_ratio)
                UNDERPERFORMING.labels(str(dr_event_id), f["facility_id"]).set(1 if low else 0)
                if low:
                    log.warning(
                        "dr_underperforming",
                        facility_id=f["facility_id"],
                        achieved_kw=round(achieved, 2),
                        target_kw=f["target_kw"],
                    )
        if self.gateway is not None:
            await asyncio.gather(*(self._reconcile(dr_event_id, f) for f in facs))

    async def _reconcile(self, dr_event_id: uuid.UUID, fac: Any) -> None:
        """Re-command zones that drifted from their DR state (someone reset them locally)."""
        assert self.gateway is not None
        detail = json.loads(fac["detail"]) if isinstance(fac["detail"], str) else dict(fac["detail"])
        wanted = {a["zone_id"]: a for a in detail.get("actions", [])}
        if not wanted:
            return
        try:
            url = endpoint_url(self.settings, fac["facility_id"], fac["url"])
            if url is None:
                return
            states = await self.gateway.zone_states(url)
        except (BmsUnavailableError, BmsRejectedError) as exc:
            log.info("dr_reconcile_skipped", facility_id=fac["facility_id"], error=str(exc)[:200])
            return
        for z in states:
            a = wanted.get(z.zone_id)
            if a is None or z.overridden:
                continue
            await self._correct(dr_event_id, fac["facility_id"], a)

    async def _correct(self, dr_event_id: uuid.UUID, facility_id: str, action: dict[str, Any]) -> None:
        base = idempotency_key(dr_event_id, facility_id, action["zone_id"], action["action"])
        now = self.clock()

        async def once() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                n = await conn.fetchval(
                    "SELECT count(*) FROM bms_commands WHERE idempotency_key LIKE $1 || ':reconcile-%'", base
                )
                busy = await conn.fetchval(
                    """SELECT count(*) FROM bms_commands
                       WHERE (idempotency_key = $1 OR idempotency_key LIKE $1 || ':reconcile-%')
                         AND status IN ('pending', 'in_flight')""",
                    base,
                )
                if n >= MAX_CORRECTIONS_PER_ZONE or busy:
                    return
                key = f"{base}:reconcile-{n + 1}"
                await conn.execute(
                    """INSERT INTO bms_commands (command_id, idempotency_key, dr_event_id, facility_id, zone_id, action,
                                                 value, trace_id, not_before)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING""",
                    command_id(key),
                    key,
                    dr_event_id,
                    facility_id,
                    action["zone_id"],
                    action["action"],
                    float(action["value"]),
                    tracing.current_or_new().trace_id,
                    now,
                )
                cmd = BmsCommand(
                    command_id=command_id(key),
                    idempotency_key=key,
                    dr_event_id=dr_event_id,
                    facility_id=facility_id,
                    zone_id=action["zone_id"],
                    action=BmsAction(action["action"]),
                    value=float(action["value"]),
                )
                await add_outbox(
                    conn,
                    BMS_COMMANDS,
                    facility_id,
                    BmsCommandIssuedEvent.wrap(
                        cmd, source="dr-coordinator", occurred_at=now, event_id=uuid.uuid5(command_id(key), "issued")
                    ),
                )
                await conn.execute(
                    """INSERT INTO dr_event_log (dr_event_id, facility_id, entry_type, detail, trace_id)
                       VALUES ($1, $2, 'drift_corrected', $3::jsonb, $4)""",
                    dr_event_id,
                    facility_id,
                    json.dumps({"zone_id": action["zone_id"], "key": key}),
                    tracing.current_or_new().trace_id,
                )
                DRIFT_CORRECTIONS.inc()

        await with_retry(once)

    # --- reports -----------------------------------------------------------------------------------

    async def _reports(self) -> None:
        if self.post_report is None:
            return
        rows = await self.pool.fetch(
            """SELECT e.dr_event_id, e.trace_id, e.report_attempts, e.report_detail, u.vtn_base_url
               FROM dr_events e JOIN utilities u USING (utility_id)
               WHERE e.reported_at IS NULL AND e.state IN ('completed', 'partially_failed', 'failed')
                 AND e.report_attempts < $1 AND u.vtn_base_url IS NOT NULL
                 AND ($2::text[] IS NULL OR e.utility_id = ANY($2::text[]))""",
            self.settings.report_max_attempts,
            self.utility_ids,
        )
        now = self.clock()
        for r in rows:
            last = (json.loads(r["report_detail"]) if r["report_detail"] else {}).get("last_attempt")
            if last and (now - datetime.fromisoformat(last)).total_seconds() < 2 ** r["report_attempts"]:
                continue
            await self._step(r, partial(self.report, r["dr_event_id"], r["vtn_base_url"]))

    async def report(self, dr_event_id: uuid.UUID, vtn_base_url: str) -> dict[str, Any]:
        assert self.post_report is not None
        ev = await inputs.event_row(self.pool, dr_event_id)
        facs = await self.pool.fetch(
            """SELECT facility_id, state, target_kw, baseline_kw FROM dr_event_facilities
               WHERE dr_event_id = $1 ORDER BY facility_id""",
            dr_event_id,
        )
        actual: dict[str, float | None] = {}
        if self.influx is not None:
            actual = await measurement.actual_many(
                self.influx, [f["facility_id"] for f in facs], ev["start_at"], ev["end_at"]
            )
        results = [
            FacilityResult(
                f["facility_id"],
                f["state"],
                f["target_kw"],
                f["baseline_kw"],
                actual.get(f["facility_id"]),
                ev["baseline_method"],
            )
            for f in facs
        ]
        report = build_report(
            program_id=ev["program_id"],
            utility_event_id=ev["utility_event_id"],
            client_name=ev["ven_name"],
            state=ev["state"],
            start=ev["start_at"],
            end=ev["end_at"],
            results=results,
        )
        now = self.clock()
        try:
            await self.post_report(vtn_base_url, report)
        except Exception as exc:
            REPORTS.labels("failed").inc()
            log.warning("dr_report_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await self.pool.execute(
                """UPDATE dr_events SET report_attempts = report_attempts + 1, report_detail = $2::jsonb
                   WHERE dr_event_id = $1""",
                dr_event_id,
                json.dumps({"last_attempt": now.isoformat(), "error": str(exc)[:300]}),
            )
            return report
        REPORTS.labels("ok").inc()
        async with self.pool.acquire() as conn, conn.transaction():
            for res in results:
                await conn.execute(
                    "UPDATE dr_event_facilities SET achieved_kw = $3 WHERE dr_event_id = $1 AND facility_id = $2",
                    dr_event_id,
                    res.facility_id,
                    res.achieved_kw,
                )
            await conn.execute(
                """UPDATE dr_events SET reported_at = $2, report_attempts = report_attempts + 1,
                          report_detail = $3::jsonb WHERE dr_event_id = $1""",
                dr_event_id,
                now,
                json.dumps({"report": report}),
            )
            await conn.execute(
                """INSERT INTO dr_event_log (dr_event_id, entry_type, detail, trace_id)
                   VALUES ($1, 'reported', $2::jsonb, $3)""",
                dr_event_id,
                json.dumps({"facilities": len(results), "vtn": vtn_base_url}),
                tracing.current_or_new().trace_id,
            )
        log.info("dr_report_posted", facilities=len(results))
        return report


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


__all__ = ["Timers"]
