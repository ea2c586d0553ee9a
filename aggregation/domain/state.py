"""The samples a worker keeps per facility, by hour, and which windows a change affects.

The state is a cache of the raw points in InfluxDB (which survive restarts): an hour of a
facility is *loaded* from InfluxDB before any sample of it is merged or any window that
needs it is computed. Computing a window may need the hour before (the register increase
of the first sample) and merging a sample may change the window of the next sample (which
may lie in the next hour), so :meth:`FacilityState.hours_needed` asks for h-1, h and h+1.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from aggregation.domain.rollup import NS, WINDOWS, Rollup, Sample, facility_rollup, meter_rollup, window_start

HOUR_NS = 3600 * NS


def hour_of(ts_ns: int) -> int:
    return ts_ns // HOUR_NS


@dataclass(frozen=True, slots=True)
class WindowKey:
    window: str  # "1m", "15m", "1h"
    start_ns: int


@dataclass
class MeterSeries:
    times: list[int] = field(default_factory=list)  # sorted
    samples: dict[int, Sample] = field(default_factory=dict)

    def upsert(self, s: Sample) -> bool:
        """Insert or replace; returns whether anything changed (a duplicate changes nothing)."""
        old = self.samples.get(s.ts_ns)
        if old == s:
            return False
        if old is None:
            bisect.insort(self.times, s.ts_ns)
        self.samples[s.ts_ns] = s
        return True

    def between(self, start_ns: int, end_ns: int) -> list[Sample]:
        lo = bisect.bisect_left(self.times, start_ns)
        hi = bisect.bisect_left(self.times, end_ns)
        return [self.samples[t] for t in self.times[lo:hi]]

    def before(self, ts_ns: int) -> Sample | None:
        i = bisect.bisect_left(self.times, ts_ns)
        return self.samples[self.times[i - 1]] if i > 0 else None

    def after(self, ts_ns: int) -> Sample | None:
        i = bisect.bisect_right(self.times, ts_ns)
        return self.samples[self.times[i]] if i < len(self.times) else None

    def drop_hour(self, hour: int) -> None:
        lo = bisect.bisect_left(self.times, hour * HOUR_NS)
        hi = bisect.bisect_left(self.times, (hour + 1) * HOUR_NS)
        for t in self.times[lo:hi]:
            del self.samples[t]
        del self.times[lo:hi]

    def __len__(self) -> int:
        return len(self.times)


@dataclass(frozen=True)
class RollupParams:
    interval_s: float = 15.0
    max_register_gap_s: float = 3600.0


@dataclass
class FacilityState:
    facility_id: str
    params: RollupParams = field(default_factory=RollupParams)
    meters: dict[str, MeterSeries] = field(default_factory=dict)
    loaded_hours: set[int] = field(default_factory=set)

    @staticmethod
    def hours_needed(ts_ns: Iterable[int]) -> set[int]:
        out: set[int] = set()
        for t in ts_ns:
            h = hour_of(t)
            out.update((h - 1, h, h + 1))
        return out

    def missing_hours(self, hours: Iterable[int]) -> list[int]:
        return sorted(set(hours) - self.loaded_hours)

    def load(self, hours: Iterable[int], samples: Iterable[tuple[str, Sample]]) -> None:
        """Mark ``hours`` loaded with the samples stored for them (samples in other hours are ignored)."""
        wanted = set(hours) - self.loaded_hours
        for meter_id, s in samples:
            if hour_of(s.ts_ns) in wanted:
                self.meters.setdefault(meter_id, MeterSeries()).upsert(s)
        self.loaded_hours |= wanted

    def merge(self, meter_id: str, s: Sample) -> set[tuple[str, WindowKey]]:
        """Merge one sample (its hours must be loaded); returns the (meter, window) pairs to (re)write.

        A duplicate changes no value but still reports its windows: after a crash between the
        raw write and the rollup write, the replayed reading is already in the loaded state and
        its rollups must still be written.
        """
        if hour_of(s.ts_ns) not in self.loaded_hours:
            raise ValueError(f"hour {hour_of(s.ts_ns)} of {self.facility_id} is not loaded")
        series = self.meters.setdefault(meter_id, MeterSeries())
        series.upsert(s)
        affected = {(meter_id, WindowKey(name, window_start(s.ts_ns, secs))) for name, secs in WINDOWS}
        nxt = series.after(s.ts_ns)
        if nxt is not None and nxt.ts_ns - s.ts_ns <= self.params.max_register_gap_s * NS:
            affected |= {(meter_id, WindowKey(name, window_start(nxt.ts_ns, secs))) for name, secs in WINDOWS}
        return affected

    def meter_window(self, meter_id: str, key: WindowKey) -> tuple[Rollup, list[Sample]] | None:
        series = self.meters.get(meter_id)
        if series is None:
            return None
        secs = dict(WINDOWS)[key.window]
        samples = series.between(key.start_ns, key.start_ns + secs * NS)
        if not samples:
            return None
        prev = series.before(key.start_ns)
        p = self.params
        return meter_rollup(samples, prev, secs, p.interval_s, p.max_register_gap_s), samples

    def facility_window(self, key: WindowKey) -> tuple[Rollup, dict[str, Rollup]] | None:
        """The facility rollup of one window and the meter rollups it was built from."""
        per_meter: dict[str, Rollup] = {}
        samples: list[list[Sample]] = []
        for meter_id in sorted(self.meters):
            got = self.meter_window(meter_id, key)
            if got is not None:
                per_meter[meter_id] = got[0]
                samples.append(got[1])
        if not per_meter:
            return None
        return facility_rollup(list(per_meter.values()), samples, self.params.interval_s), per_meter

    def evict_hours(self, keep: int) -> list[int]:
        """Forget all but the ``keep`` newest loaded hours (they reload from InfluxDB on demand)."""
        if len(self.loaded_hours) <= keep:
            return []
        ordered = sorted(self.loaded_hours)
        dropped = ordered[: len(ordered) - keep]
        for h in dropped:
            for series in self.meters.values():
                series.drop_hour(h)
            self.loaded_hours.discard(h)
        self.meters = {m: s for m, s in self.meters.items() if len(s)}
        return dropped

    def sample_count(self) -> int:
        return sum(len(s) for s in self.meters.values())


@dataclass(frozen=True)
class RollupRow:
    """One rollup point to write: facility-level when ``meter_id`` is None."""

    facility_id: str
    meter_id: str | None
    key: WindowKey
    rollup: Rollup


def rollups_for(state: FacilityState, affected: Iterable[tuple[str, WindowKey]]) -> list[RollupRow]:
    """Meter rollups of the affected (meter, window) pairs and facility rollups of their windows."""
    by_window: dict[WindowKey, set[str]] = {}
    for meter_id, key in affected:
        by_window.setdefault(key, set()).add(meter_id)
    rows: list[RollupRow] = []
    for key in sorted(by_window, key=lambda k: (k.start_ns, k.window)):
        got = state.facility_window(key)
        if got is None:
            continue
        fac, per_meter = got
        for meter_id in sorted(by_window[key]):
            if meter_id in per_meter:
                rows.append(RollupRow(state.facility_id, meter_id, key, per_meter[meter_id]))
        rows.append(RollupRow(state.facility_id, None, key, fac))
    return rows
