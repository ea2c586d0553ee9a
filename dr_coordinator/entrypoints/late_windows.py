"""Late-data listener: ``meter.late_window`` events (the aggregation rewrote a facility's 15-minute
rollup window with readings older than its lateness bound, decision 0202) re-run the settlement
of every ended event of that facility whose window overlaps, at once and whatever the event's age
(decision 0431). The scheduled re-runs of the settlement job remain the fallback when Kafka is
unavailable.

A record that is not a valid ``meter.late_window`` is counted, logged with its raw bytes and
skipped: one bad record never stops the listener. Offsets are committed after the batch's
re-settlements, so a crash re-reads them (a re-run with unchanged values writes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError

from dr_coordinator.entrypoints.settlement import SettlementJob
from dr_coordinator.metrics import LATE_WINDOWS
from energy.adapters.kafka import make_consumer
from energy.resilience import RetryPolicy, keep_trying
from energy.settings import Settings
from schemas.readings import LateWindowEvent
from schemas.registry import decode_as

log = structlog.get_logger("dr.late_windows")
RECONNECT = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=30.0)

# Dispatched facilities of ended events overlapping a late window.
_AFFECTED = """
    SELECT e.dr_event_id, e.start_at, e.end_at, ef.facility_id, ef.target_kw, u.baseline_method, u.baseline_rules
    FROM dr_events e JOIN utilities u USING (utility_id) JOIN dr_event_facilities ef USING (dr_event_id)
    WHERE ef.facility_id = $1 AND e.start_at < $3 AND e.end_at > $2 AND e.end_at <= $4
      AND ($5::text[] IS NULL OR e.utility_id = ANY($5::text[]))
      AND (EXISTS (SELECT 1 FROM dr_baselines b WHERE b.dr_event_id = e.dr_event_id AND b.facility_id = ef.facility_id)
           OR EXISTS (SELECT 1 FROM dr_event_log l WHERE l.dr_event_id = e.dr_event_id
                        AND l.facility_id = ef.facility_id AND l.entry_type = 'plan'))
"""


class LateWindowListener:
    def __init__(
        self,
        settings: Settings,
        pool: Any,
        settlement: SettlementJob,
        clock: Callable[[], datetime],
        utility_ids: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.settlement = settlement
        self.clock = clock
        self.utility_ids = utility_ids
        self.started = asyncio.Event()

    async def handle(self, raw: bytes) -> int:
        """Re-settle what one record touches; returns the versions written."""
        try:
            event = decode_as(raw, LateWindowEvent)
        except (ValueError, ValidationError) as exc:
            LATE_WINDOWS.labels("invalid").inc()
            log.warning("dr_late_window_invalid", reason=str(exc)[:300], raw=raw[:500].decode("utf-8", "replace"))
            return 0
        w = event.payload
        rows = await self.pool.fetch(
            _AFFECTED, w.facility_id, w.window_start, w.window_end, self.clock(), self.utility_ids
        )
        LATE_WINDOWS.labels("matched" if rows else "no_event").inc()
        written = 0
        for r in rows:
            try:
                version = await self.settlement.settle_facility(
                    r["dr_event_id"],
                    r["facility_id"],
                    r["start_at"],
                    r["end_at"],
                    r["target_kw"],
                    r["baseline_method"],
                    r["baseline_rules"],
                )
            except Exception as exc:  # the scheduled re-run is the fallback; the next record goes on
                LATE_WINDOWS.labels("settle_failed").inc()
                log.warning(
                    "dr_late_window_settle_failed",
                    dr_event_id=str(r["dr_event_id"]),
                    facility_id=r["facility_id"],
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                continue
            if version:
                written += 1
                log.info(
                    "dr_late_window_resettled",
                    dr_event_id=str(r["dr_event_id"]),
                    facility_id=r["facility_id"],
                    version=version,
                    window_start=w.window_start.isoformat(),
                )
        return written

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; a failed session restarts from the committed offsets with the retry policy."""
        await keep_trying(
            "kafka-late-windows",
            lambda: self._consume(stop),
            policy=RECONNECT,
            on_error=_consumer_failed,
            stop=stop,
            fresh_after_s=RECONNECT.max_delay_s,
        )

    async def _consume(self, stop: asyncio.Event) -> None:
        dr = self.settings.dr
        consumer = make_consumer(
            self.settings.kafka, dr.late_windows_topic, group_id=dr.late_windows_group, max_poll_records=500
        )
        await asyncio.wait_for(consumer.start(), self.settings.kafka.request_timeout_s * 2)
        self.started.set()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                if not batches:
                    continue
                offsets = {}
                for tp, records in batches.items():
                    for record in records:
                        await self.handle(bytes(record.value or b""))
                    offsets[tp] = records[-1].offset + 1
                await asyncio.wait_for(consumer.commit(offsets), self.settings.kafka.request_timeout_s * 2)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)


__all__ = ["LateWindowListener"]


def _consumer_failed(exc: BaseException) -> None:
    LATE_WINDOWS.labels("consumer_error").inc()
    log.warning("dr_late_windows_consumer_failed", error=f"{type(exc).__name__}: {exc}"[:300])
