"""Baselines job: the utility's baseline for a facility over an event window (history from
InfluxDB via the method the utility asks for), falling back to the forecast when history is missing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from dr_coordinator.adapters import measurement
from dr_coordinator.domain import baselines as baseline_rules
from dr_coordinator.domain.planner import ForecastInfo
from energy.adapters.influx import InfluxClient

log = structlog.get_logger("dr.baselines")


class BaselineJob:
    def __init__(self, pool: Any, influx: InfluxClient | None) -> None:
        self.pool = pool
        self.influx = influx

    async def baseline(
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
                fn = baseline_rules.pjm_high4of5 if method == "pjm_high4of5" else baseline_rules.caiso_10in10
                b = fn(days, start.date(), day_of)
                return b.kw, b.method
            except baseline_rules.InsufficientHistoryError:
                pass
            except Exception as exc:
                log.warning("dr_baseline_history_unavailable", facility_id=facility_id, error=str(exc)[:300])
        if fc.expected_kw is not None:
            return fc.expected_kw, "forecast"
        return None, "none"


__all__ = ["BaselineJob"]
