"""``energy seed`` history: the simulated fleet's past, rolled up by the aggregation's own rollup
maths (decision 0820).

Readings come from :mod:`sim.meters.history` (the live simulator's load profile, 15-minute interval
readings); their raw points are the aggregation's raw points (``aggregation.lines`` measurements and
fields) and their rollups are computed by :func:`aggregation.domain.batch.interval_rollups` (the
rollup rules of decision 0201 applied to whole columns, tested equal to the worker's state machine)
with the history's nominal interval (900 s): each reading stands for its whole quarter hour
(coverage 1, energy = mean power x 15 min). The live worker's nominal interval stays 15 s. Only 15m
and 1h rollups: a 15-minute reading has no minute resolution. Why not through the readings topic:
decision 0820 (measured too slow for a seed).

Idempotent: each facility seeded is recorded in ``fleet_history`` and never seeded again; every
facility's history ends where the fleet's first seed ended it (on the hour, before live data
begins), so no window ever mixes history and live readings.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aggregation import lines
from aggregation.domain.batch import MeterColumns, interval_rollups
from energy.adapters.influx import InfluxClient
from energy.adapters.postgres import create_pool
from energy.fleet import Facility, build_fleet
from energy.progress import progress
from energy.resilience import RetryPolicy
from energy.seed import refuse_outside_development
from energy.settings import Settings
from schemas.readings import Anomaly
from sim.meters.history import INTERVAL_S, MeterHistory, facility_history, span

DEFAULT_DAYS = 60


@dataclass(frozen=True)
class HistoryResult:
    facilities: int  # seeded by this run
    already: int  # seeded before (left as they are)
    readings: int
    start: datetime | None
    end: datetime | None
    seconds: float

    def line(self) -> str:
        if not self.facilities:
            return f"history: all {self.already} facilities already have their history (nothing written)"
        assert self.start is not None and self.end is not None
        return (
            f"history: {self.readings} readings ({INTERVAL_S // 60}-min intervals) for {self.facilities} facilities, "
            f"{self.start:%Y-%m-%d %H:%M}Z..{self.end:%Y-%m-%d %H:%M}Z, rolled up in {self.seconds:.1f} s"
            + (f"; {self.already} already had theirs" if self.already else "")
        )


def meter_columns(history: MeterHistory) -> MeterColumns:
    return MeterColumns(
        history.meter_id, history.ts_s, history.active_power_kw, history.energy_kwh, ~history.above_rating
    )


def _text(values: npt.NDArray[Any] | list[Any]) -> pa.Array:
    """Numbers as line-protocol text: floats in their shortest round-trip form (as ``repr``; arrow
    formats a million in a fraction of the time Python takes)."""
    return pc.cast(pa.array(values), pa.string())


def _join(*parts: str | pa.Array) -> list[str]:
    return pc.binary_join_element_wise(*parts, "").to_pylist()  # type: ignore[no-any-return]


def raw_lines(facility_id: str, history: MeterHistory) -> list[str]:
    """The meter's readings as the aggregation's raw points (:func:`aggregation.lines.raw_line`)."""
    if not len(history):
        return []
    flags = np.where(history.above_rating, Anomaly.POWER_ABOVE_RATING.value, "")
    return _join(
        f"{lines.RAW_MEASUREMENT},facility_id={facility_id},meter_id={history.meter_id} active_power_kw=",
        _text(history.active_power_kw),
        ',anomalies="',
        pa.array(flags.tolist()),
        '",current_a=',
        _text(history.current_a),
        ",energy_kwh=",
        _text(history.energy_kwh),
        ",reactive_power_kvar=",
        _text(history.reactive_power_kvar),
        ',reading_id="',
        history_reading_ids(history.meter_id, history.ts_s),
        '",seq=',
        _text(history.seq),
        "i,voltage_v=",
        _text(history.voltage_v),
        " ",
        _text(history.ts_s * 1_000_000_000),
    )


def history_reading_ids(meter_id: str, ts_s: npt.NDArray[np.int64]) -> pa.Array:
    """Deterministic reading ids, so a second seed writes the very same raw points: RFC 9562 version
    8 UUIDs of 64 bits of the meter id's hash and the reading time's 12 decimal digits."""
    key = int.from_bytes(hashlib.sha256(meter_id.encode()).digest()[:8], "big")
    prefix = f"{key >> 32:08x}-{(key >> 16) & 0xFFFF:04x}-8{key & 0xFFF:03x}-8000-"
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(_text(ts_s), 12, "0"), "")


def rollup_lines(facility_id: str, window: str, frame: pd.DataFrame) -> list[str]:
    """Rollup rows of one window, all of meters or all of the facility (``meter_id`` None), as the
    aggregation's rollup points (:func:`aggregation.lines.rollup_line`)."""
    if frame.empty:
        return []
    meters = frame["meter_id"]
    if meters.isna().all():
        head: list[str | pa.Array] = [f"{lines.FACILITY_ROLLUPS},facility_id={facility_id},window={window}"]
    else:
        head = [
            f"{lines.METER_ROLLUPS},facility_id={facility_id},meter_id=",
            pa.array(meters.astype(str).tolist()),
            f",window={window}",
        ]
    return _join(
        *head,
        " anomaly_count=",
        _text(frame["anomaly_count"].to_numpy(dtype=np.int64)),
        "i,avg_kw=",
        _text(frame["avg_kw"].to_numpy(dtype=np.float64)),
        ",coverage=",
        _text(frame["coverage"].to_numpy(dtype=np.float64)),
        ",energy_kwh=",
        _text(frame["energy_kwh"].to_numpy(dtype=np.float64)),
        ",energy_register_kwh=",
        _text(frame["energy_register_kwh"].to_numpy(dtype=np.float64)),
        ",max_kw=",
        _text(frame["max_kw"].to_numpy(dtype=np.float64)),
        ",min_kw=",
        _text(frame["min_kw"].to_numpy(dtype=np.float64)),
        ",sample_count=",
        _text(frame["sample_count"].to_numpy(dtype=np.int64)),
        "i ",
        _text(frame["start"].to_numpy(dtype=np.int64) * 1_000_000_000),
    )


def facility_lines(
    facility: Facility, start: datetime, end: datetime, max_register_gap_s: float
) -> tuple[int, list[str], list[str]]:
    """The facility's history: (readings, raw points, 15m and 1h meter and facility rollups).
    No 1-minute rollups: a 15-minute reading has no minute resolution."""
    meters = facility_history(facility, start, end)
    raw = [line for m in meters for line in raw_lines(facility.facility_id, m)]
    rollups: list[str] = []
    for window, (per_meter, per_facility) in interval_rollups(
        [meter_columns(m) for m in meters], max_register_gap_s
    ).items():
        rollups += rollup_lines(facility.facility_id, window, per_meter)
        rollups += rollup_lines(facility.facility_id, window, per_facility)
    return sum(len(m) for m in meters), raw, rollups


async def seed_history(
    settings: Settings,
    days: int = DEFAULT_DAYS,
    facilities: int | None = None,
    meters_per_facility: int | None = None,
    now: datetime | None = None,
    fleet: Sequence[Facility] | None = None,
) -> HistoryResult:
    """Write ``days`` of history for every facility of the fleet (default: the seeded one, which the
    simulators build too) that has none yet."""
    refuse_outside_development(settings)
    t0 = time.monotonic()
    if fleet is None:
        fleet = build_fleet(
            facilities or settings.seed.facilities, meters_per_facility or settings.seed.meters_per_facility
        )
    pool = await create_pool(settings.postgres, min_size=1, max_size=2)
    try:
        rows = await pool.fetch(
            "SELECT facility_id, end_at FROM fleet_history WHERE facility_id = ANY($1::text[])",
            [f.facility_id for f in fleet],
        )
        done = {r["facility_id"] for r in rows}
        # Facilities seeded later end where the fleet's history ends: live data follows from there.
        end_at = max((r["end_at"] for r in rows), default=None)
        start, end = span(end_at or now or datetime.now(UTC), days)
        todo = [f for f in fleet if f.facility_id not in done]
        if not todo:
            return HistoryResult(0, len(fleet), 0, None, None, time.monotonic() - t0)
        gap_s = settings.aggregation.max_register_gap_s
        written = 0
        # A bulk load: bigger requests than the worker's, so a longer timeout (on a loaded machine a
        # 5,000-line write can take seconds); transient failures retried by the one retry policy.
        bulk = settings.influx.model_copy(update={"write_timeout_s": max(settings.influx.write_timeout_s, 30.0)})
        async with InfluxClient(bulk, breaker_name="influxdb-seed", fail_max=10) as influx:
            writer = _Writer(influx, settings)
            with progress(total=len(todo), desc="seeding history", unit="facility") as bar:
                # The next facility is computed in a thread while this one's lines are written.
                nxt = asyncio.create_task(asyncio.to_thread(facility_lines, todo[0], start, end, gap_s))
                for i, facility in enumerate(todo):
                    n, raw, rollups = await nxt
                    if i + 1 < len(todo):
                        nxt = asyncio.create_task(asyncio.to_thread(facility_lines, todo[i + 1], start, end, gap_s))
                    await writer.write(raw, rollups)
                    await pool.execute(
                        """INSERT INTO fleet_history (facility_id, start_at, end_at, interval_s, readings)
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (facility_id) DO NOTHING""",
                        facility.facility_id,
                        start,
                        end,
                        INTERVAL_S,
                        n,
                    )
                    written += n
                    bar.update(1)
        return HistoryResult(len(todo), len(fleet) - len(todo), written, start, end, time.monotonic() - t0)
    finally:
        await pool.close()


BULK_LINES_PER_WRITE = 5_000
BULK_CONCURRENCY = 3  # InfluxDB shares two cores with everything else here; more only queues
BULK_RETRY = RetryPolicy(attempts=5, base_delay_s=0.5, max_delay_s=5.0)


class _Writer:
    """Line protocol to InfluxDB, a few requests at a time, transient errors retried (identical
    points overwrite, so a retried write never adds)."""

    def __init__(self, influx: InfluxClient, settings: Settings) -> None:
        self.influx = influx
        self.raw_rp = settings.influx.raw_retention_policy
        self.rollup_rp = settings.influx.rollup_retention_policy
        self.size = BULK_LINES_PER_WRITE
        self.sem = asyncio.Semaphore(BULK_CONCURRENCY)

    async def write(self, raw: list[str], rollups: list[str]) -> None:
        await asyncio.gather(*self._batches(raw, self.raw_rp), *self._batches(rollups, self.rollup_rp))

    def _batches(self, items: list[str], rp: str) -> list[Coroutine[Any, Any, None]]:
        return [self._one(items[i : i + self.size], rp) for i in range(0, len(items), self.size)]

    async def _one(self, batch: list[str], rp: str) -> None:
        async with self.sem:
            await self.influx.write_lines(batch, retention_policy=rp, retry=BULK_RETRY)
