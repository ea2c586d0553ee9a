"""Tumbling-window rollups of one meter's samples and of a facility's meters.

Energy from power uses the rectangle rule with the nominal interval: each sample stands for
the ``interval_s`` seconds that start at its timestamp, so ``energy_kwh = sum(p_i) * interval_s / 3600``.
It depends only on the samples inside the window, so a late sample changes only its own
windows and the value never depends on batch boundaries; missing samples show up as
``coverage < 1`` instead of being guessed.

Energy from the cumulative register sums the increases between consecutive samples and
books each increase in the window of the later sample. An increase is counted only when the
previous sample is at most ``max_register_gap_s`` older (longer gaps are unknown energy) and
never negative (a register reset or the ``energy_register_decreased`` anomaly adds nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NS = 1_000_000_000

WINDOWS: tuple[tuple[str, int], ...] = (("1m", 60), ("15m", 900), ("1h", 3600))
WINDOW_SECONDS: dict[str, int] = dict(WINDOWS)


@dataclass(frozen=True, slots=True)
class Sample:
    ts_ns: int
    power_kw: float
    register_kwh: float


@dataclass(frozen=True, slots=True)
class Rollup:
    energy_kwh: float
    energy_register_kwh: float
    avg_kw: float
    min_kw: float
    max_kw: float
    sample_count: int
    coverage: float

    def fields(self) -> dict[str, float | int]:
        return {
            "energy_kwh": self.energy_kwh,
            "energy_register_kwh": self.energy_register_kwh,
            "avg_kw": self.avg_kw,
            "min_kw": self.min_kw,
            "max_kw": self.max_kw,
            "sample_count": self.sample_count,
            "coverage": self.coverage,
        }


def window_start(ts_ns: int, window_s: int) -> int:
    size = window_s * NS
    return ts_ns - ts_ns % size


def expected_samples(window_s: int, interval_s: float) -> float:
    return window_s / interval_s


def register_increase(prev: Sample | None, cur: Sample, max_gap_s: float) -> float:
    if prev is None or cur.ts_ns - prev.ts_ns > max_gap_s * NS:
        return 0.0
    return max(0.0, cur.register_kwh - prev.register_kwh)


def meter_rollup(
    samples: Sequence[Sample], prev: Sample | None, window_s: int, interval_s: float, max_register_gap_s: float
) -> Rollup:
    """Rollup of the (time-sorted, non-empty) samples of one meter inside one window.

    ``prev`` is the meter's last sample before the window, for the register increase of the
    first sample.
    """
    if not samples:
        raise ValueError("a rollup needs at least one sample")
    powers = [s.power_kw for s in samples]
    total_power = sum(powers)
    register = 0.0
    before = prev
    for s in samples:
        register += register_increase(before, s, max_register_gap_s)
        before = s
    count = len(samples)
    return Rollup(
        energy_kwh=total_power * interval_s / 3600.0,
        energy_register_kwh=register,
        avg_kw=total_power / count,
        min_kw=min(powers),
        max_kw=max(powers),
        sample_count=count,
        coverage=min(1.0, count / expected_samples(window_s, interval_s)),
    )


def facility_rollup(
    meter_rollups: Sequence[Rollup], meter_samples: Iterable[Sequence[Sample]], interval_s: float
) -> Rollup:
    """Facility rollup of one window from its meters' rollups and samples in that window.

    Sums for energy, average power and sample count; coverage is the mean over the meters
    that reported in the window; min/max are of the facility total, i.e. the sum of the
    meters' power per ``interval_s`` slot.
    """
    if not meter_rollups:
        raise ValueError("a facility rollup needs at least one meter rollup")
    slot_ns = int(interval_s * NS)
    totals: dict[int, float] = {}
    for samples in meter_samples:
        for s in samples:
            slot = s.ts_ns // slot_ns
            totals[slot] = totals.get(slot, 0.0) + s.power_kw
    ordered = [totals[k] for k in sorted(totals)]
    return Rollup(
        energy_kwh=sum(r.energy_kwh for r in meter_rollups),
        energy_register_kwh=sum(r.energy_register_kwh for r in meter_rollups),
        avg_kw=sum(r.avg_kw for r in meter_rollups),
        min_kw=min(ordered),
        max_kw=max(ordered),
        sample_count=sum(r.sample_count for r in meter_rollups),
        coverage=sum(r.coverage for r in meter_rollups) / len(meter_rollups),
    )
