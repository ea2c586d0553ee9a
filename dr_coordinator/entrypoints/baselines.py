"""Baselines job: a facility's interval baseline for an event window, in the facility's local time,
by the method and rules its program asks for (decision 0430). History (>= 60 local days of
15-minute rollups) from InfluxDB; calendar, earlier event days, temperatures and the forecast from
PostgreSQL. Computed before dispatch and frozen in the transaction that starts it (planning job)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog

from dr_coordinator.adapters import meter_history
from dr_coordinator.adapters.store import postgres_transient
from dr_coordinator.domain import interval_baselines as ib
from dr_coordinator.domain.planner import ForecastInfo
from dr_coordinator.metrics import BASELINE_FLAGS
from energy.adapters.influx import InfluxClient
from energy.resilience import RetryPolicy, guarded_call

log = structlog.get_logger("dr.baselines")
NO_EVENT = uuid.UUID(int=0)
DEFAULT_CELL_DEG = 0.25
# A loaded PostgreSQL cancels a history query at its statement timeout now and then; without a retry the
# facility lost its frozen baseline for good (seen at load 11 in the saga e2e test). Bounded: planning
# runs within the dispatch lead, and the forecast fallback below still covers a real outage.
HISTORY_RETRY = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=1.0)


class BaselineJob:
    def __init__(self, pool: Any, influx: InfluxClient | None, weather_cell_deg: float = DEFAULT_CELL_DEG) -> None:
        self.pool = pool
        self.influx = influx
        self.weather_cell_deg = weather_cell_deg
        # Computed while planning, taken by the dispatch transaction that freezes them.
        self._computed: dict[tuple[uuid.UUID, str], ib.Baseline] = {}

    async def interval_baseline(
        self,
        dr_event_id: uuid.UUID,
        facility_id: str,
        start: datetime,
        end: datetime,
        method: str,
        rules_json: Any = None,
    ) -> ib.Baseline:
        """The program's baseline; raises on I/O failure (the caller decides the fallback)."""
        try:
            rules = ib.rules_for(method, _json(rules_json))
        except ValueError as exc:
            log.warning("dr_baseline_rules_invalid", facility_id=facility_id, error=str(exc)[:300])
            rules = ib.rules_for(method, None)
        # Every PostgreSQL read on one connection: each acquire/release of the pool costs a round trip
        # of its own (the connection's reset), which doubled the planning round trips per facility.
        async with self.pool.acquire() as conn:
            cal = await meter_history.calendar(conn, facility_id)
            lo = meter_history.history_start(start, cal.tz)
            event_days = await meter_history.event_days(conn, facility_id, cal.tz, dr_event_id, lo, start)
            temps = None
            if ib.Method.REGRESSION in (rules.method, rules.fallback):
                temps = await meter_history.temperatures(conn, cal, self.weather_cell_deg, lo, end)
            fc = await meter_history.forecast_quarters(conn, facility_id, start - timedelta(hours=1), end)
        readings: dict[datetime, float] = {}
        if self.influx is not None and rules.method is not ib.Method.FORECAST:
            readings, _ = await meter_history.quarter_hours(self.influx, facility_id, lo, start)
        years = {lo.year, start.year, end.year}
        ctx = ib.EventContext(start, end, cal.tz, event_days, ib.holiday_dates(cal.country, cal.subdivision, years))
        # CPU-bound (tens of ms per facility): off the event loop so BMS commands keep flowing.
        b = await asyncio.to_thread(ib.compute, rules, readings, ctx, temperature_c=temps, forecast_kw=fc)
        if b.flag:
            BASELINE_FLAGS.labels(rules.method.value, b.flag).inc()
            log.info(
                "dr_baseline_flagged",
                facility_id=facility_id,
                method=rules.method.value,
                flag=b.flag,
                used=b.method.value,
                days=len(b.days_used),
            )
        return b

    async def baseline(
        self,
        facility_id: str,
        start: datetime,
        end: datetime,
        method: str,
        fc: ForecastInfo,
        rules_json: Any = None,
        dr_event_id: uuid.UUID = NO_EVENT,
    ) -> tuple[float | None, str]:
        """Mean kW of the interval baseline over the event (for planning) and its method; the
        forecast's expected kW when no baseline can be computed."""
        try:
            b = await guarded_call(
                "postgres-dr-baseline",
                lambda: self.interval_baseline(dr_event_id, facility_id, start, end, method, rules_json),
                timeout_s=None,  # each query is bounded by the pool's statement timeout
                retry=HISTORY_RETRY,
                is_transient=postgres_transient,
            )
        except Exception as exc:
            log.warning("dr_baseline_history_unavailable", facility_id=facility_id, error=str(exc)[:300])
        else:
            values = [v for v in b.kw if v is not None]
            if values and len(values) == len(b.kw):
                self._computed[(dr_event_id, facility_id)] = b
                return sum(values) / len(values), b.method.value
        if fc.expected_kw is not None:
            return fc.expected_kw, "forecast"
        return None, "none"

    def take(self, dr_event_id: uuid.UUID, facility_id: str) -> ib.Baseline | None:
        """The baseline computed while planning this facility, handed over once for freezing."""
        return self._computed.pop((dr_event_id, facility_id), None)

    def forget(self, dr_event_id: uuid.UUID) -> None:
        for key in [k for k in self._computed if k[0] == dr_event_id]:
            del self._computed[key]


def _json(value: Any) -> dict[str, object] | None:
    if value is None:
        return None
    if isinstance(value, str):
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else None
    return dict(value)


__all__ = ["BaselineJob"]
