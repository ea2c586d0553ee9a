"""Settlement job: measure each dispatched facility of an ended event against its frozen interval
baseline and write versioned runs (decision 0431):

* ``preliminary`` as soon as the event has ended;
* ``settlement`` once end + the aggregation's lateness bound has passed (no reading for the
  window can be accepted after that);
* ``true_up`` whenever a later re-measurement (every ``settlement_rerun_s`` until
  ``settlement_horizon_s`` after the end) differs from the latest version: late or backfilled
  rollups for the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from dr_coordinator.adapters import meter_history, settlement_store
from dr_coordinator.adapters.store import with_retry
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.settlement import RunKind, changed, next_run_kind, settle
from dr_coordinator.entrypoints.baselines import BaselineJob
from dr_coordinator.metrics import LOOP_ERRORS, SETTLEMENT_RUNS
from energy.adapters.influx import InfluxClient

log = structlog.get_logger("dr.settlement")
SCAN_INTERVAL_S = 2.0  # a preliminary run is due at the event's end, within this
BACKFILL_RERUN_FACTOR = 10  # after end + 2 x lateness only a backfill can change the readings

# Facilities of an ended event that were dispatched (a frozen baseline or a logged plan).
_DUE = """
    SELECT e.dr_event_id, e.start_at, e.end_at, ef.facility_id, ef.target_kw, u.baseline_method, u.baseline_rules
    FROM dr_events e JOIN utilities u USING (utility_id)
    JOIN dr_event_facilities ef USING (dr_event_id)
    WHERE e.end_at <= $1 AND e.end_at > $2 AND ($3::text[] IS NULL OR e.utility_id = ANY($3::text[]))
      AND (EXISTS (SELECT 1 FROM dr_baselines b WHERE b.dr_event_id = e.dr_event_id AND b.facility_id = ef.facility_id)
           OR EXISTS (SELECT 1 FROM dr_event_log l WHERE l.dr_event_id = e.dr_event_id
                        AND l.facility_id = ef.facility_id AND l.entry_type = 'plan'))
    ORDER BY e.end_at
"""


class SettlementJob:
    def __init__(
        self,
        pool: Any,
        settings: DrSettings,
        clock: Callable[[], datetime],
        influx: InfluxClient | None,
        baselines: BaselineJob,
        lateness_s: float,
        utility_ids: list[str] | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.influx = influx
        self.baselines = baselines
        self.lateness = timedelta(seconds=lateness_s)
        self.utility_ids = utility_ids
        self._last: dict[tuple[uuid.UUID, str], datetime] = {}
        self._sem = asyncio.Semaphore(4)

    async def run_due(self) -> None:
        """Every due run of every dispatched facility of recently ended events."""
        if self.influx is None:
            return
        now = self.clock()
        rows = await self.pool.fetch(
            _DUE, now, now - timedelta(seconds=self.settings.settlement_horizon_s), self.utility_ids
        )
        present = {(r["dr_event_id"], r["facility_id"]) for r in rows}
        self._last = {k: v for k, v in self._last.items() if k in present}  # past the horizon: forgotten
        jobs = []
        for r in rows:
            key = (r["dr_event_id"], r["facility_id"])
            last = self._last.get(key)
            # Re-measure often around the lateness bound; later, meter.late_window events trigger
            # re-runs at once (late_windows.py) and these scheduled ones are the slow fallback.
            every = self.settings.settlement_rerun_s
            if now > r["end_at"] + 2 * self.lateness:
                every *= BACKFILL_RERUN_FACTOR
            rerun_due = last is None or (now - last).total_seconds() >= every
            phase_changed = last is not None and last < r["end_at"] + self.lateness <= now
            if rerun_due or phase_changed:
                self._last[key] = now
                jobs.append(self._guarded(r))
        await asyncio.gather(*jobs)

    async def run(self, stop: asyncio.Event) -> None:
        """Its own loop (not the timers' tick): a slow measurement never delays a dispatch."""
        while not stop.is_set():  # a scan every interval, not a retry loop (decision 0840)
            try:
                await self.run_due()
            except Exception as exc:
                LOOP_ERRORS.labels("settlement").inc()
                log.error("dr_settlement_scan_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SCAN_INTERVAL_S)

    async def _guarded(self, row: Any) -> None:
        async with self._sem:
            try:
                await self.settle_facility(
                    row["dr_event_id"],
                    row["facility_id"],
                    row["start_at"],
                    row["end_at"],
                    row["target_kw"],
                    row["baseline_method"],
                    row["baseline_rules"],
                )
            except Exception as exc:
                LOOP_ERRORS.labels("settlement").inc()
                log.error(
                    "dr_settlement_failed",
                    dr_event_id=str(row["dr_event_id"]),
                    facility_id=row["facility_id"],
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )

    async def settle_facility(
        self,
        dr_event_id: uuid.UUID,
        facility_id: str,
        start: datetime,
        end: datetime,
        target_kw: float | None,
        method: str,
        rules_json: Any,
    ) -> int | None:
        """Measure now and write the due version; returns it, or None when nothing was written."""
        assert self.influx is not None
        now = self.clock()
        stored = await settlement_store.runs(self.pool, dr_event_id, facility_id)
        kind = next_run_kind(now, end, self.lateness, {r.kind for r in stored})
        if kind is None:
            return None
        baseline = await settlement_store.frozen_baseline(self.pool, dr_event_id, facility_id)
        frozen = baseline is not None
        if baseline is None:  # dispatched before baselines were frozen, or planning had no history
            baseline = await self.baselines.interval_baseline(dr_event_id, facility_id, start, end, method, rules_json)
        first = baseline.intervals[0].start if baseline.intervals else start
        last = baseline.intervals[-1].end if baseline.intervals else end
        readings, coverage = await meter_history.quarter_hours(self.influx, facility_id, first, last)
        # An event off the quarter-hour grid: its partly covered intervals are measured per minute.
        minutes = None
        if (first, last) != (start, end):
            minutes = await meter_history.minutes(self.influx, facility_id, start, end)
        result = settle(baseline, readings, target_kw, coverage, event=(start, end), minutes=minutes)
        if kind is RunKind.TRUE_UP and not changed(stored[-1].settlement if stored else None, result):
            return None

        async def once() -> int:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"settlement:{dr_event_id}:{facility_id}"
                )
                stored_now = await settlement_store.runs(conn, dr_event_id, facility_id)
                if kind is not RunKind.TRUE_UP and kind in {r.kind for r in stored_now}:
                    return 0  # another coordinator wrote this run first
                if kind is RunKind.TRUE_UP and stored_now and not changed(stored_now[-1].settlement, result):
                    return 0  # another coordinator already trued up to these values
                version = await settlement_store.write_run(
                    conn, dr_event_id, facility_id, kind, result, baseline, frozen, target_kw, now
                )
                return version

        version = await with_retry(once)
        if not version:
            return None
        SETTLEMENT_RUNS.labels(kind.value).inc()
        log.info(
            "dr_settlement_written",
            dr_event_id=str(dr_event_id),
            facility_id=facility_id,
            kind=kind.value,
            version=version,
            reduction_kwh=result.reduction_kwh,
            coverage_pct=round(result.coverage_pct, 2),
        )
        return version


__all__ = ["SettlementJob"]
