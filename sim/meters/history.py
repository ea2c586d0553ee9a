"""The simulated fleet's past: interval readings of every meter, from the same load profile as the
live meter simulator (pure, deterministic; decision 0820).

One reading per meter every ``INTERVAL_S`` (15 min): the meter's mean power over
``[ts, ts + 15 min)`` as an interval meter (AMI) reports it, computed by
:func:`sim.meters.profile.meter_kw_from` at the middle of the interval, with the facility's own
opening hours, weekends and public holidays (:func:`~sim.meters.profile.occupancy`), the weather
simulator's temperature at the facility, +-3 % noise, and a few faults. Everything is a function of
the meter and the span through seeded generators, so the same span always gives the same readings,
bit for bit (a second seed writes the very same points).

Faults (each meter-day independently, :func:`day_faults`):
- outage (``OUTAGE_DAY_RATE``): the meter is silent for 1 to 4 hours (no readings; its register
  keeps counting, so the first reading after shows the energy of the gap);
- spike (``SPIKE_DAY_RATE``): one reading at three times the meter's rating, flagged
  ``power_above_rating`` as ingestion flags it (decision 0100): stored raw, counted, never rolled up.

Computed as arrays (numpy) per facility: the default fleet's 60 days are 1.15 million readings.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from energy.fleet import Facility
from sim.meters.profile import electrical, initial_register, is_holiday, meter_kw_from, occupancy, outdoor_temp_c

INTERVAL_S = 900
NOISE = 0.03
VOLTAGE_NOISE = 0.02
OUTAGE_DAY_RATE = 0.02
SPIKE_DAY_RATE = 0.01
SPIKE_OF_RATING = 3.0


@dataclass(frozen=True)
class DayFaults:
    outage: tuple[datetime, datetime] | None  # [start, end) UTC without readings
    spike_at: datetime | None  # the one reading flagged above rating


@dataclass(frozen=True)
class MeterHistory:
    """One meter's readings, as columns (one row per reading, time-sorted)."""

    meter_id: str
    ts_s: npt.NDArray[np.int64]  # UTC epoch seconds, on the 15-min grid
    active_power_kw: npt.NDArray[np.float64]
    reactive_power_kvar: npt.NDArray[np.float64]
    voltage_v: npt.NDArray[np.float64]
    current_a: npt.NDArray[np.float64]
    energy_kwh: npt.NDArray[np.float64]  # cumulative register
    seq: npt.NDArray[np.int64]
    above_rating: npt.NDArray[np.bool_]  # the spike fault: flagged power_above_rating

    def __len__(self) -> int:
        return len(self.ts_s)


def span(end: datetime, days: int) -> tuple[datetime, datetime]:
    """``days`` of history ending at ``end`` floored to the hour (UTC)."""
    end = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return end - timedelta(days=days), end


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256(":".join(parts).encode()).digest()[:8], "big")


def day_faults(meter_id: str, day: date) -> DayFaults:
    """The faults of one meter on one UTC day (a function of both only)."""
    rng = random.Random(_seed("faults", meter_id, day.isoformat()))
    midnight = datetime.combine(day, datetime.min.time(), UTC)
    slots = 86_400 // INTERVAL_S
    outage = None
    if rng.random() < OUTAGE_DAY_RATE:
        first = rng.randrange(slots)
        length = rng.randint(3600 // INTERVAL_S, 4 * 3600 // INTERVAL_S)
        step = timedelta(seconds=INTERVAL_S)
        outage = (midnight + first * step, midnight + (first + length) * step)
    spike_at = None
    if rng.random() < SPIKE_DAY_RATE:
        spike_at = midnight + timedelta(seconds=rng.randrange(slots) * INTERVAL_S)
    return DayFaults(outage, spike_at)


def grid(start: datetime, end: datetime) -> npt.NDArray[np.int64]:
    """Reading times (epoch seconds) in [start, end) on the 15-min grid; ``start`` must be on it."""
    first = int(start.timestamp())
    if first % INTERVAL_S:
        raise ValueError(f"history start {start.isoformat()} is not on the {INTERVAL_S // 60}-min grid")
    return np.arange(first, int(end.timestamp()), INTERVAL_S, dtype=np.int64)


def building(
    facility: Facility, times: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Occupancy and outdoor temperature at the middle of each interval (shared by the facility's meters)."""
    tz = ZoneInfo(facility.timezone)
    occ = np.empty(len(times))
    temp = np.empty(len(times))
    for i, t in enumerate(times.tolist()):
        mid = datetime.fromtimestamp(t + INTERVAL_S / 2, UTC)
        local = mid.astimezone(tz)
        occ[i] = occupancy(facility.kind, local, is_holiday(facility, local.date()))
        temp[i] = outdoor_temp_c(facility, mid)
    return occ, temp


def facility_history(facility: Facility, start: datetime, end: datetime) -> list[MeterHistory]:
    """Every meter's readings with ``start <= ts < end``. Each register starts at the value the live
    simulator starts from, so the live meter's first reading shows a register reset (not counted as
    energy, decision 0201), never a spurious increase."""
    times = grid(start, end)
    occ, temp = building(facility, times)
    days = [date(1970, 1, 1) + timedelta(days=int(d)) for d in np.unique(times // 86_400)]
    out = []
    for meter in facility.meters:
        rng = np.random.default_rng(_seed("history", meter.meter_id, str(int(times[0]) if len(times) else 0)))
        noise = rng.uniform(-NOISE, NOISE, len(times))
        volt_noise = rng.uniform(-VOLTAGE_NOISE, VOLTAGE_NOISE, len(times))
        e = electrical(meter_kw_from(meter, occ, temp, 1.0, noise), volt_noise)
        kw = e.active_power_kw
        # The register counts every interval, reported or not.
        register = np.round(initial_register(meter.meter_id) + np.cumsum(kw * INTERVAL_S / 3600.0), 4)
        keep = np.ones(len(times), dtype=bool)
        spike = np.zeros(len(times), dtype=bool)
        for day in days:
            f = day_faults(meter.meter_id, day)
            if f.outage is not None:
                keep &= ~((times >= int(f.outage[0].timestamp())) & (times < int(f.outage[1].timestamp())))
            if f.spike_at is not None:
                spike |= times == int(f.spike_at.timestamp())
        power = np.where(spike, round(meter.rated_kw * SPIKE_OF_RATING, 3), kw)
        out.append(
            MeterHistory(
                meter.meter_id,
                times[keep],
                power[keep],
                e.reactive_power_kvar[keep],
                e.voltage_v[keep],
                e.current_a[keep],
                register[keep],
                np.arange(int(keep.sum()), dtype=np.int64),
                spike[keep],
            )
        )
    return out
