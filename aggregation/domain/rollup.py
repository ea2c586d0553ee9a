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


@dataclass(frozen=True, slots=True)
class Partial:
    """Mergeable summary of one meter's samples in a window: windows compose from smaller ones."""

    power_sum: float
    count: int
    min_kw: float
    max_kw: float
    register_kwh: float


def partial_of(samples: Sequence[Sample], prev: Sample | None, max_register_gap_s: float) -> Partial | None:
    if not samples:
        return None
    gap_ns = max_register_gap_s * NS
    register = 0.0
    power = 0.0
    lo = hi = samples[0].power_kw
    before = prev
    for s in samples:
        p = s.power_kw
        power += p
        if p < lo:
            lo = p
        elif p > hi:
            hi = p
        if before is not None and s.ts_ns - before.ts_ns <= gap_ns and s.register_kwh > before.register_kwh:
            register += s.register_kwh - before.register_kwh
        before = s
    return Partial(power, len(samples), lo, hi, register)


def combine(parts: Iterable[Partial | None]) -> Partial | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return Partial(
        sum(p.power_sum for p in present),
        sum(p.count for p in present),
        min(p.min_kw for p in present),
        max(p.max_kw for p in present),
        sum(p.register_kwh for p in present),
    )


def to_rollup(p: Partial, window_s: int, interval_s: float) -> Rollup:
    return Rollup(
        energy_kwh=p.power_sum * interval_s / 3600.0,
        energy_register_kwh=p.register_kwh,
        avg_kw=p.power_sum / p.count,
        min_kw=p.min_kw,
        max_kw=p.max_kw,
        sample_count=p.count,
        coverage=min(1.0, p.count / expected_samples(window_s, interval_s)),
    )


def meter_rollup(
    samples: Sequence[Sample], prev: Sample | None, window_s: int, interval_s: float, max_register_gap_s: float
) -> Rollup:
    """Rollup of the (time-sorted, non-empty) samples of one meter inside one window.

    ``prev`` is the meter's last sample before the window, for the register increase of the
    first sample.
    """
    p = partial_of(samples, prev, max_register_gap_s)
    if p is None:
        raise ValueError("a rollup needs at least one sample")
    return to_rollup(p, window_s, interval_s)


def slot_totals(meter_samples: Iterable[Sequence[Sample]], interval_s: float) -> dict[int, float]:
    """The facility total power per ``interval_s`` slot (sum of the meters' samples in it)."""
    slot_ns = int(interval_s * NS)
    totals: dict[int, float] = {}
    for samples in meter_samples:
        for s in samples:
            slot = s.ts_ns // slot_ns
            totals[slot] = totals.get(slot, 0.0) + s.power_kw
    return totals


def facility_from_meters(meter_rollups: Sequence[Rollup], min_total_kw: float, max_total_kw: float) -> Rollup:
    return Rollup(
        energy_kwh=sum(r.energy_kwh for r in meter_rollups),
        energy_register_kwh=sum(r.energy_register_kwh for r in meter_rollups),
        avg_kw=sum(r.avg_kw for r in meter_rollups),
        min_kw=min_total_kw,
        max_kw=max_total_kw,
        sample_count=sum(r.sample_count for r in meter_rollups),
        coverage=sum(r.coverage for r in meter_rollups) / len(meter_rollups),
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
    totals = slot_totals(meter_samples, interval_s).values()
    return facility_from_meters(meter_rollups, min(totals), max(totals))
