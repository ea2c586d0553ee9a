"""Reconciliation job, while an event is active: measure what each facility achieves against its
baseline (underperformance alerts) and re-command zones that drifted from their DR state."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from dr_coordinator.adapters import measurement
from dr_coordinator.adapters.store import add_outbox, with_retry
from dr_coordinator.config import DrSettings
from dr_coordinator.domain import baselines
from dr_coordinator.domain.commands import command_id, idempotency_key
from dr_coordinator.entrypoints.worker import endpoint_url
from dr_coordinator.metrics import ACHIEVED_KW, DRIFT_CORRECTIONS, UNDERPERFORMING
from dr_coordinator.ports import BmsGateway, BmsRejectedError, BmsUnavailableError
from energy.adapters.influx import InfluxClient
from energy.observability import tracing
from schemas.dr import BmsAction, BmsCommand, BmsCommandIssuedEvent
from schemas.topics import BMS_COMMANDS

log = structlog.get_logger("dr.reconciliation")
MAX_CORRECTIONS_PER_ZONE = 3


class ReconciliationJob:
    def __init__(
        self,
        pool: Any,
        settings: DrSettings,
        clock: Callable[[], datetime],
        influx: InfluxClient | None,
        gateway: BmsGateway | None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.influx = influx
        self.gateway = gateway
        self._last_reconcile: dict[uuid.UUID, datetime] = {}

    async def watch_active(self, dr_event_id: uuid.UUID) -> None:
        """While an event is active: measure achieved reduction, alert underperformance, re-command drift."""
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


__all__ = ["MAX_CORRECTIONS_PER_ZONE", "ReconciliationJob"]
