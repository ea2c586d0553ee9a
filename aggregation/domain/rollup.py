"""Tumbling-window rollups of one meter's samples and of a facility's meters.

Only valid samples enter the maths: a sample flagged with any anomaly by ingestion is kept
raw and counted (``anomaly_count``) but adds nothing to energy, average, min or max, and is
skipped by the register chain (docs/decisions/0201).

Energy from power integrates over the real sample spacing: each valid sample holds its power
until the meter's next valid sample, but for at most the nominal ``interval_s``; the whole
hold is booked in the window of the sample's timestamp. So a 5 s meter's samples each count
5 s (no triple counting), a missing sample leaves its time uncovered (``coverage < 1``)
instead of being guessed, windows add up exactly (the 15 minutes of a quarter sum to it), and
a late sample changes only its own windows and, when it is closer than ``interval_s`` to the
previous sample, that sample's. Coverage is covered time / window length, so sampling faster
than nominal cannot inflate it and energy does not depend on the sampling rate.

Energy from the cumulative register sums the increases between consecutive valid samples and
books each increase in the window of the later sample. An increase is counted only when the
previous sample is at most ``max_register_gap_s`` older (longer gaps are unknown energy) and
never negative (a register reset adds nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

NS = 1_000_000_000

WINDOWS: tuple[tuple[str, int], ...] = (("1m", 60), ("15m", 900), ("1h", 3600))
WINDOW_SECONDS: dict[str, int] = dict(WINDOWS)


@dataclass(frozen=True, slots=True)
class Sample:
    ts_ns: int
    power_kw: float
    register_kwh: float
    valid: bool = True  # False: the reading carries an anomaly flag; counted, not rolled up


class Rollup(NamedTuple):  # a tuple: built for every window written, cheaper than a frozen dataclass
    energy_kwh: float
    energy_register_kwh: float
    avg_kw: float
    min_kw: float
    max_kw: float
    sample_count: int
    coverage: float
    anomaly_count: int = 0

    def fields(self) -> dict[str, float | int]:
        return self._asdict()


def window_start(ts_ns: int, window_s: int) -> int:
    size = window_s * NS
    return ts_ns - ts_ns % size


@dataclass(frozen=True, slots=True)
class Partial:
    """Mergeable summary of one meter's samples in a window: windows compose from smaller ones."""

    energy_kwh: float
    covered_s: float
    count: int  # valid samples
    min_kw: float
    max_kw: float
    register_kwh: float
    anomalies: int = 0


def hold_s(s: Sample, nxt: Sample | None, interval_s: float) -> float:
    """How long a valid sample's power stands: until the next valid sample, at most ``interval_s``."""
    if nxt is None:
        return interval_s
    return min((nxt.ts_ns - s.ts_ns) / NS, interval_s)


def partial_of(
    samples: Sequence[Sample],
    prev: Sample | None,
    max_register_gap_s: float,
    after: Sample | None = None,
    interval_s: float = 15.0,
) -> Partial | None:
    """``samples``: time-sorted, all in the window; ``prev``/``after``: the meter's nearest valid
    samples before and after the window (register increase of the first, hold of the last)."""
    if not samples:
        return None
    valid = [s for s in samples if s.valid]
    anomalies = len(samples) - len(valid)
    if not valid:
        return Partial(0.0, 0.0, 0, float("inf"), float("-inf"), 0.0, anomalies)
    gap_ns = max_register_gap_s * NS
    register = energy = covered = 0.0
    lo = hi = valid[0].power_kw
    before = prev
    last = len(valid) - 1
    for i, s in enumerate(valid):
        p = s.power_kw
        held = hold_s(s, valid[i + 1] if i < last else after, interval_s)
        energy += p * held
        covered += held
        if p < lo:
            lo = p
        elif p > hi:
            hi = p
        if before is not None and s.ts_ns - before.ts_ns <= gap_ns and s.register_kwh > before.register_kwh:
            register += s.register_kwh - before.register_kwh
        before = s
    return Partial(energy / 3600.0, covered, len(valid), lo, hi, register, anomalies)


def combine(parts: Iterable[Partial | None]) -> Partial | None:
    """The summary of consecutive windows from theirs (None: a window without samples).

    One pass, adding in the order given, as ``sum``/``min``/``max`` over the parts would."""
    energy = covered = register = 0.0
    count = anomalies = 0
    lo, hi = float("inf"), float("-inf")
    present = False
    for p in parts:
        if p is None:
            continue
        present = True
        energy += p.energy_kwh
        covered += p.covered_s
        count += p.count
        if p.min_kw < lo:
            lo = p.min_kw
        if p.max_kw > hi:
            hi = p.max_kw
        register += p.register_kwh
        anomalies += p.anomalies
    if not present:
        return None
    return Partial(energy, covered, count, lo, hi, register, anomalies)


def to_rollup(p: Partial, window_s: int) -> Rollup | None:
    """None for a window with anomalous samples only: nothing valid to roll up (they stay raw)."""
    if p.count == 0:
        return None
    return Rollup(
        energy_kwh=p.energy_kwh,
        energy_register_kwh=p.register_kwh,
        avg_kw=p.energy_kwh * 3600.0 / p.covered_s,  # time-weighted
        min_kw=p.min_kw,
        max_kw=p.max_kw,
        sample_count=p.count,
        coverage=min(1.0, p.covered_s / window_s),
        anomaly_count=p.anomalies,
    )


def meter_rollup(
    samples: Sequence[Sample],
    prev: Sample | None,
    window_s: int,
    interval_s: float,
    max_register_gap_s: float,
    after: Sample | None = None,
) -> Rollup:
    """Rollup of the (time-sorted) samples of one meter inside one window, at least one valid.

    ``prev`` / ``after`` are the meter's last valid sample before and first after the window.
    """
    p = partial_of(samples, prev, max_register_gap_s, after, interval_s)
    got = None if p is None else to_rollup(p, window_s)
    if got is None:
        raise ValueError("a rollup needs at least one valid sample")
    return got


def slot_totals(meter_samples: Iterable[Sequence[Sample]], interval_s: float) -> dict[int, float]:
    """The facility total power per ``interval_s`` slot: the sum over meters of each meter's mean
    valid power in the slot (a meter sampling faster than ``interval_s`` counts once per slot)."""
    slot_ns = int(interval_s * NS)
    totals: dict[int, float] = {}
    for samples in meter_samples:
        sums: dict[int, tuple[float, int]] = {}
        for s in samples:
            if s.valid:
                slot = s.ts_ns // slot_ns
                total, n = sums.get(slot, (0.0, 0))
                sums[slot] = (total + s.power_kw, n + 1)
        for slot, (total, n) in sums.items():
            totals[slot] = totals.get(slot, 0.0) + total / n
    return totals


def facility_from_meters(meter_rollups: Sequence[Rollup], min_total_kw: float, max_total_kw: float) -> Rollup:
    energy = register = avg = coverage = 0.0
    samples = anomalies = 0
    for r in meter_rollups:  # one pass, adding in the meters' order
        energy += r.energy_kwh
        register += r.energy_register_kwh
        avg += r.avg_kw
        samples += r.sample_count
        coverage += r.coverage
        anomalies += r.anomaly_count
    return Rollup(
        energy_kwh=energy,
        energy_register_kwh=register,
        avg_kw=avg,
        min_kw=min_total_kw,
        max_kw=max_total_kw,
        sample_count=samples,
        coverage=coverage / len(meter_rollups),
        anomaly_count=anomalies,
    )


def facility_rollup(
    meter_rollups: Sequence[Rollup], meter_samples: Iterable[Sequence[Sample]], interval_s: float
) -> Rollup:
    """Facility rollup of one window from its meters' rollups and samples in that window.

    Sums for energy, average power, sample and anomaly counts; coverage is the mean over the
    meters that reported in the window; min/max are of the facility total per ``interval_s``
    slot (see :func:`slot_totals`).
    """
    if not meter_rollups:
        raise ValueError("a facility rollup needs at least one meter rollup")
    totals = slot_totals(meter_samples, interval_s).values()
    return facility_from_meters(meter_rollups, min(totals), max(totals))
