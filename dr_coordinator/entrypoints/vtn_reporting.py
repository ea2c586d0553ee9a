"""VTN reporting job: once an event is finished, build its report (per-facility results against the
baseline) and post it to the utility's VTN, with back-off between failed attempts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

import structlog

from dr_coordinator.adapters import inputs, measurement
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.report import FacilityResult, build_report
from dr_coordinator.metrics import REPORTS
from energy.adapters.influx import InfluxClient
from energy.observability import tracing

log = structlog.get_logger("dr.vtn_reporting")

ReportPoster = Callable[[str, dict[str, Any]], Awaitable[None]]
StepRunner = Callable[[Any, Callable[[], Awaitable[object]]], Awaitable[None]]


class VtnReportingJob:
    def __init__(
        self,
        pool: Any,
        settings: DrSettings,
        clock: Callable[[], datetime],
        influx: InfluxClient | None,
        post_report: ReportPoster | None,
        utility_ids: list[str] | None,
        step: StepRunner,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.influx = influx
        self.post_report = post_report
        self.utility_ids = utility_ids
        self.step = step

    async def report_due(self) -> None:
        """Report every finished, unreported event whose back-off has elapsed."""
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
            await self.step(r, partial(self.report, r["dr_event_id"], r["vtn_base_url"]))

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
            utility_event_id=ev["vtn_event_id"] or ev["utility_event_id"],  # the VTN's own id
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


__all__ = ["ReportPoster", "VtnReportingJob"]
