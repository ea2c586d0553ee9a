"""Rollup engine: readings in, InfluxDB raw points + every affected rollup out.

The state behind the rollups is the raw points in InfluxDB (written before the offsets are
committed); the in-memory :class:`FacilityState` is a bounded cache of them, loaded per
facility-hour on first use. So a rollup recomputed after a restart or for a late reading is
always computed from the full set of samples and overwrites the point, never adds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from aggregation import lines, metrics
from aggregation.config import AggregationSettings
from aggregation.decode import Reading
from aggregation.domain.rollup import Sample
from aggregation.domain.state import HOUR_NS, FacilityState, RollupParams, rollups_for
from energy.adapters.influx import InfluxClient, InfluxError, iter_rows, quote_ident
from energy.resilience import RetryPolicy

log = structlog.get_logger("aggregation.engine")

WRITE_RETRY = RetryPolicy(attempts=3, base_delay_s=0.1, max_delay_s=1.0)
# InfluxDB stores int64 nanoseconds; the loads ask for hours h-1..h+1 around a reading.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LOADABLE_NS = (INT64_MIN + 2 * HOUR_NS, INT64_MAX - 2 * HOUR_NS)


class UnrepresentableTimeError(ValueError):
    """A reading's time has no int64 nanosecond form with room for its neighbouring hours."""


@dataclass
class WritePlan:
    raw_lines: list[str] = field(default_factory=list)  # in the order of the readings
    rollup_lines: list[str] = field(default_factory=list)
    # Filled by write(): lines InfluxDB refused for good (4xx), by index, with its reason.
    rejected_raw: list[tuple[int, str]] = field(default_factory=list)
    rejected_rollups: list[tuple[int, str]] = field(default_factory=list)


def to_sample(r: Reading) -> Sample:
    return Sample(lines.ts_ns(r.ts), r.active_power_kw, r.energy_kwh, not r.anomalies)


class RollupEngine:
    def __init__(self, influx: InfluxClient, raw_rp: str, rollup_rp: str, settings: AggregationSettings) -> None:
        self.influx = influx
        self.raw_rp = raw_rp
        self.rollup_rp = rollup_rp
        self.settings = settings
        self.params = RollupParams(settings.expected_interval_s, settings.max_register_gap_s)
        self.states: dict[str, FacilityState] = {}
        self._sem = asyncio.Semaphore(settings.influx_concurrency)

    def reset(self) -> None:
        """Forget the cache (after a rebalance another worker may have written these facilities)."""
        self.states.clear()
        metrics.STATE_SAMPLES.set(0)

    def _state(self, facility_id: str) -> FacilityState:
        st = self.states.get(facility_id)
        if st is None:
            st = self.states[facility_id] = FacilityState(facility_id, self.params)
        return st

    async def _load(self, state: FacilityState, hours: list[int]) -> None:
        if not hours:
            return
        q = (
            "SELECT active_power_kw, energy_kwh, anomalies "
            f"FROM {quote_ident(self.raw_rp)}.{quote_ident(lines.RAW_MEASUREMENT)} "
            "WHERE facility_id = $f AND time >= $a AND time < $b GROUP BY meter_id"
        )
        lo, hi = hours[0] * HOUR_NS, (hours[-1] + 1) * HOUR_NS
        params = {"f": state.facility_id, "a": max(lo, INT64_MIN), "b": min(hi, INT64_MAX)}
        async with self._sem:
            series = await self.influx.query(q, params, epoch="ns")
        samples = (
            (
                row["meter_id"],
                # Anomalous readings are stored raw with their flags; they are counted, not rolled up.
                Sample(
                    int(row["time"]),
                    float(row["active_power_kw"]),
                    float(row["energy_kwh"]),
                    not row.get("anomalies"),
                ),
            )
            for row in iter_rows(series)
            if row.get("active_power_kw") is not None and row.get("energy_kwh") is not None
        )
        state.load(hours, samples)

    async def prepare(
        self, readings: Sequence[Reading], before_load: Callable[[], Awaitable[None]] | None = None
    ) -> WritePlan:
        """Load what the batch needs, merge it, and return every line to write. Safe to retry.

        ``before_load`` is awaited before any load from InfluxDB: the worker passes "the previous
        batch is written", so a reload never misses points still being written (decision 0810).
        """
        by_facility: dict[str, list[tuple[Reading, int]]] = {}
        raw_lines = []
        low, high = LOADABLE_NS
        for r, reading_id in zip(readings, lines.reading_ids(readings), strict=True):
            t = lines.ts_ns(r.ts)
            if not low <= t <= high:
                raise UnrepresentableTimeError(
                    f"reading {r.reading_id} at {r.ts.isoformat()}: out of int64 nanoseconds"
                )
            by_facility.setdefault(r.facility_id, []).append((r, t))
            raw_lines.append(lines.raw_line(r, t, reading_id))
        # Hold the state objects: a rebalance may reset() the cache while we await the loads.
        states = {facility_id: self._state(facility_id) for facility_id in by_facility}
        missing = {
            f: states[f].missing_hours(states[f].hours_needed(t for _, t in rs)) for f, rs in by_facility.items()
        }
        if before_load is not None and any(missing.values()):
            await before_load()
        await asyncio.gather(*(self._load(states[f], hours) for f, hours in missing.items()))
        plan = WritePlan(raw_lines=raw_lines)
        for facility_id, rs in by_facility.items():
            st = states[facility_id]
            touched: set[tuple[str, int]] = set()
            try:
                for r, t in rs:
                    touched |= st.merge(r.meter_id, Sample(t, r.active_power_kw, r.energy_kwh, not r.anomalies))
                plan.rollup_lines.extend(lines.rollup_line(row) for row in rollups_for(st, touched))
            except Exception:
                # A failed merge may have left part of the batch in the cache without its raw
                # points being written: forget the facility (it reloads from InfluxDB).
                self.states.pop(facility_id, None)
                raise
        return plan

    def evict(self) -> None:
        keep = self.settings.state_hours_per_facility
        total = 0
        for st in self.states.values():
            st.evict_hours(keep)
            total += st.sample_count()
        metrics.STATE_SAMPLES.set(total)

    async def _write_isolating(self, lines_: list[str], offset: int, rp: str) -> list[tuple[int, str]]:
        """Write; if InfluxDB refuses the request (4xx, e.g. a field type conflict), bisect to find
        the refused lines and return them (index, reason). Transient errors propagate."""
        try:
            async with self._sem:
                await self.influx.write_lines(lines_, retention_policy=rp, retry=WRITE_RETRY)
            return []
        except InfluxError as exc:
            if len(lines_) == 1:
                return [(offset, str(exc)[:500])]
            mid = len(lines_) // 2
            left = await self._write_isolating(lines_[:mid], offset, rp)
            return left + await self._write_isolating(lines_[mid:], offset + mid, rp)

    async def _write_all(self, items: list[str], rp: str) -> list[tuple[int, str]]:
        n = self.settings.influx_lines_per_write
        parts = await asyncio.gather(*(self._write_isolating(items[i : i + n], i, rp) for i in range(0, len(items), n)))
        return [bad for part in parts for bad in part]

    async def write(self, plan: WritePlan) -> None:
        """Raw points and rollups concurrently: both are idempotent, and a crash between them is
        repaired by the replay (the rollups are recomputed from raw points + replayed readings)."""
        plan.rejected_raw, plan.rejected_rollups = await asyncio.gather(
            self._write_all(plan.raw_lines, self.raw_rp), self._write_all(plan.rollup_lines, self.rollup_rp)
        )
        metrics.POINTS_WRITTEN.labels("raw").inc(len(plan.raw_lines) - len(plan.rejected_raw))
        metrics.POINTS_WRITTEN.labels("rollup").inc(len(plan.rollup_lines) - len(plan.rejected_rollups))
        if plan.rejected_rollups:
            metrics.POINTS_REJECTED.labels("rollup").inc(len(plan.rejected_rollups))
            log.error("rollups_rejected", count=len(plan.rejected_rollups), first=plan.rejected_rollups[0][1])
        if plan.rejected_raw:
            metrics.POINTS_REJECTED.labels("raw").inc(len(plan.rejected_raw))

    async def process(self, readings: Sequence[Reading]) -> WritePlan:
        plan = await self.prepare(readings)
        await self.write(plan)
        self.evict()
        return plan
