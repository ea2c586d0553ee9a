"""VTN reporting job: while an event runs, the reports its ``reportDescriptors`` ask for (interval by
interval, what is metered so far); once it is finished, the final report (per-facility results against
the baseline). One report object per event on the VTN: every later report replaces it (PUT). Back-off
between failed attempts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog

from dr_coordinator.adapters import inputs, measurement
from dr_coordinator.adapters.vtn_registry import UTILITY_VTN_COLUMNS, VtnTarget
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.report import (
    IntervalReading,
    ResourceResult,
    add_program_rules,
    build_interval_report,
    build_not_applicable_report,
    event_intervals,
    interim_points,
    lay_out,
    metered_so_far,
    not_applicable_resources,
    report_layout,
    report_timing,
    wanted_from_descriptors,
)
from dr_coordinator.domain.schedule import IntervalAsk
from dr_coordinator.metrics import REPORTS
from energy.adapters.influx import InfluxClient
from energy.observability import tracing
from energy.resilience import RetryPolicy

log = structlog.get_logger("dr.vtn_reporting")

# (utility's VTN, report, a previous attempt failed) -> None; raises when the VTN did not take it
ReportPoster = Callable[[VtnTarget, dict[str, Any], bool], Awaitable[None]]
# (event row, facility ids) -> per facility: (settlement version, its interval readings) (M&V)
IntervalSource = Callable[[Any, list[str]], Awaitable[dict[str, tuple[int, list[IntervalReading]]]]]
SETTLEMENT_WAIT_S = 120.0  # a first report waits at most this long after the end for the preliminary settlement
# failed attempts back off 2^n s, at most ~1 h; the due time is kept by the last attempt's time, so no jitter
REPORT_RETRY = RetryPolicy(attempts=None, base_delay_s=2.0, max_delay_s=2.0**12)
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
        interval_source: IntervalSource | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.influx = influx
        self.post_report = post_report
        self.utility_ids = utility_ids
        self.step = step
        self.interval_source = interval_source

    async def report_due(self) -> None:
        """Report every finished event once its preliminary settlement exists (or SETTLEMENT_WAIT_S after
        its end, whichever comes first), and report again, replacing the first (PUT), whenever a newer
        settlement version (a settlement run or a true-up) changes the values the utility has."""
        if self.post_report is None:
            return
        now = self.clock()
        rows = await self.pool.fetch(
            f"""SELECT e.dr_event_id, e.trace_id, e.report_attempts, e.report_detail, e.reported_at,
                       {UTILITY_VTN_COLUMNS}
               FROM dr_events e JOIN utilities u USING (utility_id)
               WHERE e.state IN ('completed', 'partially_failed', 'failed') AND u.vtn_base_url IS NOT NULL
                 AND ($2::text[] IS NULL OR e.utility_id = ANY($2::text[]))
                 AND ((e.reported_at IS NULL AND e.report_attempts < $1
                       AND (e.end_at <= $3
                            OR (EXISTS (SELECT 1 FROM dr_settlement_runs s WHERE s.dr_event_id = e.dr_event_id)
                                AND NOT EXISTS (  -- every facility with a frozen baseline is settled
                                    SELECT 1 FROM dr_baselines b WHERE b.dr_event_id = e.dr_event_id
                                      AND NOT EXISTS (SELECT 1 FROM dr_settlement_runs s
                                                      WHERE s.dr_event_id = b.dr_event_id
                                                        AND s.facility_id = b.facility_id)))))
                      OR (e.reported_at IS NOT NULL AND EXISTS (
                            SELECT 1 FROM dr_settlement_runs s WHERE s.dr_event_id = e.dr_event_id
                              AND s.version > COALESCE(
                                  (e.report_detail -> 'settlement_versions' ->> s.facility_id)::int, 0))))""",
            self.settings.report_max_attempts,
            self.utility_ids,
            now - timedelta(seconds=SETTLEMENT_WAIT_S),
        )
        for r in rows:
            last = (json.loads(r["report_detail"]) if r["report_detail"] else {}).get("last_attempt")
            backoff_s = REPORT_RETRY.min_delay_s(r["report_attempts"])
            if last and (now - datetime.fromisoformat(last)).total_seconds() < backoff_s:
                continue
            target = VtnTarget.from_row(r)
            # an update, a report during the event already sent, or a retry after a failure that may have
            # reached the VTN: find it and replace it
            interim = (json.loads(r["report_detail"]) if r["report_detail"] else {}).get("interim") or {}
            replace = r["reported_at"] is not None or r["report_attempts"] > 0 or "through" in interim
            await self.step(r, partial(self.report, r["dr_event_id"], target, replace))

    async def report(self, dr_event_id: uuid.UUID, target: VtnTarget, after_failure: bool = False) -> dict[str, Any]:
        """Build the event's report and hand it over; after a failed (possibly ambiguous) attempt the
        sender looks for the report first and replaces it (PUT) instead of posting a second one."""
        assert self.post_report is not None
        ev = await inputs.event_row(self.pool, dr_event_id)
        facs = await self.pool.fetch(
            """SELECT facility_id, state, target_kw, baseline_kw FROM dr_event_facilities
               WHERE dr_event_id = $1 ORDER BY facility_id""",
            dr_event_id,
        )
        versions, readings = await self.readings(ev, [f["facility_id"] for f in facs])
        event_obj = _event_object(ev["source_payload"])
        layout = report_layout(event_obj.get("reportDescriptors"))
        intervals = event_intervals(event_obj, [(i.start, i.end) for i in _schedule(ev)])
        resources = [
            ResourceResult(
                f["facility_id"], f["state"], lay_out(tuple(readings.get(f["facility_id"], ())), intervals, layout)
            )
            for f in facs
        ]
        event_id = ev["vtn_event_id"] or ev["utility_event_id"]  # the VTN's own id
        report = build_interval_report(
            version=target.version,
            program_id=ev["program_id"] or "default",
            event_id=event_id,
            client_name=ev["ven_name"],
            report_name=f"dr-{event_id}",
            resources=resources,
            wanted=wanted_from_descriptors(event_obj.get("reportDescriptors")),
        )
        targeting = _targeting(ev)
        first = intervals[0].id if intervals else 0
        if targeting.get("unknown_targets"):  # targets that are not ours: said so, once per event
            unknown = list(targeting["unknown_targets"])
            report["resources"].extend(not_applicable_resources(unknown, ev["ven_name"], first))
        report = _with_rules(report, targeting, facs, first)
        achieved = {f["facility_id"]: _achieved(readings.get(f["facility_id"], ())) for f in facs}
        now = self.clock()
        try:
            await self.post_report(target, report, after_failure)
        except Exception as exc:
            REPORTS.labels("failed").inc()
            log.warning("dr_report_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await self.pool.execute(
                """UPDATE dr_events SET report_attempts = report_attempts + 1,
                          report_detail = COALESCE(report_detail, '{}'::jsonb) || $2::jsonb
                   WHERE dr_event_id = $1""",
                dr_event_id,
                json.dumps({"last_attempt": now.isoformat(), "error": str(exc)[:300]}),
            )
            return report
        REPORTS.labels("ok").inc()
        async with self.pool.acquire() as conn, conn.transaction():
            for fid, kw in achieved.items():
                await conn.execute(
                    "UPDATE dr_event_facilities SET achieved_kw = $3 WHERE dr_event_id = $1 AND facility_id = $2",
                    dr_event_id,
                    fid,
                    kw,
                )
            await conn.execute(
                """UPDATE dr_events SET reported_at = $2, report_attempts = report_attempts + 1,
                          report_detail = $3::jsonb WHERE dr_event_id = $1""",
                dr_event_id,
                now,
                json.dumps({"report": report, "settlement_versions": versions}),
            )
            await conn.execute(
                """INSERT INTO dr_event_log (dr_event_id, entry_type, detail, trace_id)
                   VALUES ($1, 'reported', $2::jsonb, $3)""",
                dr_event_id,
                json.dumps({"facilities": len(resources), "vtn": target.base_url}),
                tracing.current_or_new().trace_id,
            )
        log.info("dr_report_posted", facilities=len(resources))
        return report

    async def report_interim(self) -> None:
        """Reports during a running event where its ``reportDescriptors`` ask for them (decision 0413):
        after each due interval, the intervals elapsed so far; the first is POSTed, the next ones replace
        it (PUT), and the final report replaces it again."""
        if self.post_report is None:
            return
        now = self.clock()
        rows = await self.pool.fetch(
            f"""SELECT e.dr_event_id, e.trace_id, e.report_detail, e.start_at, e.end_at, e.intervals,
                       e.source_payload, {UTILITY_VTN_COLUMNS}
               FROM dr_events e JOIN utilities u USING (utility_id)
               WHERE e.state IN ('dispatching', 'active') AND u.vtn_base_url IS NOT NULL AND e.start_at <= $1
                 AND ($2::text[] IS NULL OR e.utility_id = ANY($2::text[]))""",
            now,
            self.utility_ids,
        )
        for r in rows:
            event_obj = _event_object(r["source_payload"])
            timing = report_timing(event_obj.get("reportDescriptors"))
            schedule = _schedule(r)
            elapsed = [k for k in interim_points(timing, len(schedule)) if schedule[k].end <= now]
            if not elapsed:
                continue
            detail = json.loads(r["report_detail"]) if r["report_detail"] else {}
            interim = detail.get("interim") or {}
            through = int(interim.get("through", -1))
            if elapsed[-1] <= through or int(interim.get("attempts", 0)) >= self.settings.report_max_attempts:
                continue
            last = interim.get("last_attempt")
            if last and (now - datetime.fromisoformat(last)).total_seconds() < REPORT_RETRY.min_delay_s(
                int(interim.get("attempts", 0))
            ):
                continue
            target = VtnTarget.from_row(r)
            step = partial(self.send_interim, r["dr_event_id"], target, schedule[: elapsed[-1] + 1], interim)
            await self.step(r, step)

    async def send_interim(
        self, dr_event_id: uuid.UUID, target: VtnTarget, elapsed: list[IntervalAsk], interim: dict[str, Any]
    ) -> dict[str, Any]:
        assert self.post_report is not None
        ev = await inputs.event_row(self.pool, dr_event_id)
        facs = await self.pool.fetch(
            "SELECT facility_id, state, baseline_kw FROM dr_event_facilities WHERE dr_event_id = $1 ORDER BY 1",
            dr_event_id,
        )
        ids = [f["facility_id"] for f in facs]
        spans = [(i.start, i.end) for i in elapsed]
        demand: dict[str, list[float | None]] = {fid: [] for fid in ids}
        for start, end in spans:
            measured = await measurement.actual_many(self.influx, ids, start, end) if self.influx else {}
            for fid in ids:
                demand[fid].append(measured.get(fid))
        frozen = {
            b["facility_id"]: [
                (datetime.fromisoformat(i["start"]), datetime.fromisoformat(i["end"]), float(i["kw"]))
                for i in (json.loads(b["intervals"]) if isinstance(b["intervals"], str) else b["intervals"])
                if i.get("kw") is not None
            ]
            for b in await self.pool.fetch(
                "SELECT facility_id, intervals FROM dr_baselines WHERE dr_event_id = $1", dr_event_id
            )
        }
        event_obj = _event_object(ev["source_payload"])
        layout = report_layout(event_obj.get("reportDescriptors"))
        intervals = event_intervals(event_obj, [(i.start, i.end) for i in _schedule(ev)])
        resources = [
            ResourceResult(
                f["facility_id"],
                f["state"],
                lay_out(
                    metered_so_far(spans, demand[f["facility_id"]], frozen.get(f["facility_id"], []), f["baseline_kw"]),
                    intervals,
                    layout,
                ),
            )
            for f in facs
        ]
        event_id = ev["vtn_event_id"] or ev["utility_event_id"]
        report = build_interval_report(
            version=target.version,
            program_id=ev["program_id"] or "default",
            event_id=event_id,
            client_name=ev["ven_name"],
            report_name=f"dr-{event_id}",
            resources=resources,
            wanted=wanted_from_descriptors(event_obj.get("reportDescriptors")),
        )
        targeting = _targeting(ev)
        first = intervals[0].id if intervals else 0
        if targeting.get("unknown_targets"):  # as the final report will say it
            unknown = list(targeting["unknown_targets"])
            report["resources"].extend(not_applicable_resources(unknown, ev["ven_name"], first))
        report = _with_rules(report, targeting, facs, first)
        now = self.clock()
        sent_before = "through" in interim
        try:
            await self.post_report(target, report, sent_before or int(interim.get("attempts", 0)) > 0)
        except Exception as exc:
            REPORTS.labels("failed").inc()
            log.warning("dr_interim_report_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            failed = {**interim, "attempts": int(interim.get("attempts", 0)) + 1, "last_attempt": now.isoformat()}
            await self._set_interim(dr_event_id, failed)
            return report
        REPORTS.labels("ok").inc()
        await self._set_interim(dr_event_id, {"through": len(elapsed) - 1, "at": now.isoformat(), "attempts": 0})
        log.info("dr_interim_report_sent", through_interval=len(elapsed) - 1, facilities=len(resources))
        return report

    async def _set_interim(self, dr_event_id: uuid.UUID, interim: dict[str, Any]) -> None:
        await self.pool.execute(
            """UPDATE dr_events SET report_detail = COALESCE(report_detail, '{}'::jsonb) || $2::jsonb
               WHERE dr_event_id = $1""",
            dr_event_id,
            json.dumps({"interim": interim}),
        )

    async def report_not_applicable(self) -> None:
        """Tell the VTN about events that target none of our enrolled facilities (decision 0412)."""
        if self.post_report is None:
            return
        rows = await self.pool.fetch(
            f"""SELECT i.event_key, i.outcome, i.detail, {UTILITY_VTN_COLUMNS}
               FROM dr_event_intake i JOIN utilities u USING (utility_id)
               WHERE (i.outcome = 'not_applicable'
                      OR (i.outcome = 'rule_violation' AND i.detail->>'vtn_event_id' IS NOT NULL))
                 AND i.reported_at IS NULL AND u.active
                 AND u.vtn_base_url IS NOT NULL AND COALESCE((i.detail->>'report_attempts')::int, 0) < $1
                 AND ($2::text[] IS NULL OR i.utility_id = ANY($2::text[]))""",
            self.settings.report_max_attempts,
            self.utility_ids,
        )
        for r in rows:
            detail = json.loads(r["detail"]) if isinstance(r["detail"], str) else dict(r["detail"] or {})
            target = VtnTarget.from_row(r)
            first = detail.get("first_interval_id")
            first = first if isinstance(first, int) and not isinstance(first, bool) else 0  # older records: 0
            report = build_not_applicable_report(
                version=target.version,
                program_id=str(detail.get("program_id") or "default"),
                event_id=str(detail.get("vtn_event_id") or r["event_key"]),
                client_name=target.ven_name,
                unknown_targets=list(detail.get("unknown_targets") or []),
                interval_id=first,
            )
            if r["outcome"] == "rule_violation":  # declined by a program rule (decision 0850)
                if not detail.get("unknown_targets"):
                    report["resources"] = []
                report["reportName"] = f"dr-{report['eventID']}-declined"
                report = add_program_rules(report, dict(detail.get("rule_declined") or {}), [], set(), first)
            attempts = int(detail.get("report_attempts") or 0)
            try:
                await self.post_report(target, report, attempts > 0)
            except Exception as exc:
                REPORTS.labels("failed").inc()
                log.warning("dr_not_applicable_report_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await self.pool.execute(
                    """UPDATE dr_event_intake SET detail = detail || jsonb_build_object('report_attempts', $3::int)
                       WHERE utility_id = $1 AND event_key = $2""",
                    target.utility_id,
                    r["event_key"],
                    attempts + 1,
                )
                continue
            REPORTS.labels("ok").inc()
            await self.pool.execute(
                "UPDATE dr_event_intake SET reported_at = $3 WHERE utility_id = $1 AND event_key = $2",
                target.utility_id,
                r["event_key"],
                self.clock(),
            )
            log.info("dr_not_applicable_reported", utility_id=target.utility_id, event_key=r["event_key"])

    async def readings(
        self, ev: Any, facility_ids: list[str]
    ) -> tuple[dict[str, int], dict[str, list[IntervalReading]]]:
        """Per-interval values of each facility, and the settlement version they come from: the latest
        settlement (M&V, ``interval_source``) where there is one; else one reading per event interval,
        measured demand from InfluxDB over it and the stored baseline (version 0): the layouts the VTN
        may ask for (decision 0931) cut or group readings at the event's intervals, so a single mean over
        the whole event would claim every interval had it."""
        versions: dict[str, int] = {}
        out: dict[str, list[IntervalReading]] = {}
        if self.interval_source is not None:
            settled = await self.interval_source(ev, facility_ids)
            for fid, (version, intervals) in settled.items():
                if fid in facility_ids:
                    versions[fid], out[fid] = version, intervals
        missing = [fid for fid in facility_ids if fid not in out]
        if not missing:
            return versions, out
        baselines = {
            r["facility_id"]: r["baseline_kw"]
            for r in await self.pool.fetch(
                "SELECT facility_id, baseline_kw FROM dr_event_facilities WHERE dr_event_id = $1", ev["dr_event_id"]
            )
        }
        for fid in missing:
            out[fid] = []
        for interval in _schedule(ev):
            actual: dict[str, float | None] = {}
            if self.influx is not None:
                actual = await measurement.actual_many(self.influx, missing, interval.start, interval.end)
            hours = (interval.end - interval.start).total_seconds() / 3600.0
            for fid in missing:
                kw = actual.get(fid)
                out[fid].append(
                    IntervalReading(
                        interval.start,
                        interval.end,
                        usage_kwh=None if kw is None else kw * hours,
                        demand_kw=kw,
                        baseline_kw=baselines.get(fid),
                    )
                )
        return versions, out


def _event_object(source: Any) -> dict[str, Any]:
    """The OpenADR event as the VTN sent it (a notification's ``object``, or the event itself)."""
    payload = json.loads(source) if isinstance(source, str) else dict(source or {})
    obj = payload.get("object")
    return obj if isinstance(obj, dict) else payload


def _targeting(ev: Any) -> dict[str, Any]:
    raw = ev["targeting"]
    return json.loads(raw) if isinstance(raw, str) else dict(raw or {})


def _with_rules(report: dict[str, Any], targeting: dict[str, Any], facs: list[Any], interval_id: int) -> dict[str, Any]:
    """Facilities a program rule declined, and findings such as a cut duration (decision 0850)."""
    return add_program_rules(
        report,
        dict(targeting.get("rule_declined") or {}),
        list(targeting.get("rule_findings") or []),
        {f["facility_id"] for f in facs},
        interval_id,
    )


def _schedule(row: Any) -> list[IntervalAsk]:
    """The event's intervals in order; an event stored without a schedule is one interval."""
    raw = row["intervals"]
    raw = json.loads(raw) if isinstance(raw, str) else raw
    if not raw:
        return [IntervalAsk(0, row["start_at"], row["end_at"])]
    return sorted((IntervalAsk.from_json(i) for i in raw), key=lambda i: i.start)


def _achieved(readings: Any) -> float | None:
    """Average demand reduction over the readings that have both values."""
    pairs = [(r.baseline_kw, r.demand_kw) for r in readings if r.baseline_kw is not None and r.demand_kw is not None]
    if not pairs:
        return None
    return sum(b - d for b, d in pairs) / len(pairs)


__all__ = ["ReportPoster", "VtnReportingJob"]
