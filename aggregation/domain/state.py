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
from typing import NamedTuple

from aggregation.domain.rollup import (
    NS,
    WINDOW_SECONDS,
    WINDOWS,
    Partial,
    Rollup,
    Sample,
    combine,
    facility_from_meters,
    partial_of,
    slot_totals,
    to_rollup,
    window_start,
)

HOUR_NS = 3600 * NS


def hour_of(ts_ns: int) -> int:
    return ts_ns // HOUR_NS


class WindowKey(NamedTuple):  # a tuple: hashed and compared in C (dict keys on the hot path)
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
            times = self.times
            if not times or s.ts_ns > times[-1]:
                times.append(s.ts_ns)  # the usual case: the meter's newest sample
            else:
                bisect.insort(times, s.ts_ns)
        self.samples[s.ts_ns] = s
        return True

    def between(self, start_ns: int, end_ns: int) -> list[Sample]:
        lo = bisect.bisect_left(self.times, start_ns)
        hi = bisect.bisect_left(self.times, end_ns)
        return [self.samples[t] for t in self.times[lo:hi]]

    def before(self, ts_ns: int) -> Sample | None:
        """The last valid sample strictly before ``ts_ns`` (anomalous samples are skipped)."""
        i = bisect.bisect_left(self.times, ts_ns)
        while i > 0:
            s = self.samples[self.times[i - 1]]
            if s.valid:
                return s
            i -= 1
        return None

    def after(self, ts_ns: int) -> Sample | None:
        """The first valid sample strictly after ``ts_ns``."""
        i = bisect.bisect_right(self.times, ts_ns)
        while i < len(self.times):
            s = self.samples[self.times[i]]
            if s.valid:
                return s
            i += 1
        return None

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
    interval_s: float = 15.0  # must divide 60 so that facility slots never straddle minutes
    max_register_gap_s: float = 3600.0


MINUTE_NS = 60 * NS
QUARTER_NS = 900 * NS
_MISSING = object()


@dataclass
class FacilityState:
    """Samples of one facility's meters plus cached window summaries.

    Minute summaries (:class:`Partial`) are computed from samples; 15-minute ones combine 15
    minutes and hourly ones combine 4 quarters, so a reading costs a few dozen operations
    whatever the window. Every cache entry a merged sample can change is dropped on merge
    and recomputed on demand.
    """

    facility_id: str
    params: RollupParams = field(default_factory=RollupParams)
    meters: dict[str, MeterSeries] = field(default_factory=dict)
    loaded_hours: set[int] = field(default_factory=set)
    # (window, meter_id, start_ns) -> Partial | None ; (window, start_ns) -> (min, max) | None
    _parts: dict[tuple[str, str, int], Partial | None] = field(default_factory=dict)
    _fac_minmax: dict[tuple[str, int], tuple[float, float] | None] = field(default_factory=dict)
    _dirty: set[tuple[str, int]] = field(default_factory=set)

    @staticmethod
    def hours_needed(ts_ns: Iterable[int]) -> set[int]:
        out: set[int] = set()
        for h in {hour_of(t) for t in ts_ns}:
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

    def merge(self, meter_id: str, s: Sample) -> set[tuple[str, int]]:
        """Merge one sample (its hour must be loaded); returns the (meter, minute start) pairs to rewrite.

        A duplicate changes no value but still reports its minutes: after a crash between the
        raw write and the rollup write, the replayed reading is already in the loaded state and
        its rollups must still be written. The minute of the meter's next valid sample is
        reported too, since its register increase starts from this sample, and the minute of
        the previous valid one when this sample is closer to it than ``interval_s`` (its hold
        ends here now).
        """
        if hour_of(s.ts_ns) not in self.loaded_hours:
            raise ValueError(f"hour {hour_of(s.ts_ns)} of {self.facility_id} is not loaded")
        series = self.meters.get(meter_id)
        if series is None:
            series = self.meters[meter_id] = MeterSeries()
        series.upsert(s)
        touched = {(meter_id, s.ts_ns - s.ts_ns % MINUTE_NS)}
        nxt = None if series.times[-1] == s.ts_ns else series.after(s.ts_ns)
        if nxt is not None and nxt.ts_ns - s.ts_ns <= self.params.max_register_gap_s * NS:
            touched.add((meter_id, nxt.ts_ns - nxt.ts_ns % MINUTE_NS))
        prev = series.before(s.ts_ns)
        if prev is not None and s.ts_ns - prev.ts_ns < self.params.interval_s * NS:
            touched.add((meter_id, prev.ts_ns - prev.ts_ns % MINUTE_NS))
        self._dirty |= touched
        return touched

    def _flush_dirty(self) -> None:
        """Drop every cached summary a merged sample may have changed (once per batch, not per sample)."""
        for meter_id, minute in self._dirty:
            quarter, hour = minute - minute % QUARTER_NS, minute - minute % HOUR_NS
            for key in (("1m", minute), ("15m", quarter), ("1h", hour)):
                self._parts.pop((key[0], meter_id, key[1]), None)
                self._fac_minmax.pop(key, None)
        self._dirty.clear()

    def meter_part(self, window: str, meter_id: str, start: int) -> Partial | None:
        if self._dirty:
            self._flush_dirty()
        key = (window, meter_id, start)
        got = self._parts.get(key, _MISSING)
        if got is not _MISSING:
            return got  # type: ignore[return-value]
        part: Partial | None
        if window == "1m":
            series = self.meters.get(meter_id)
            part = None
            if series is not None:
                end = start + MINUTE_NS
                samples = series.between(start, end)
                if samples:
                    part = partial_of(
                        samples,
                        series.before(start),
                        self.params.max_register_gap_s,
                        series.after(end - 1),
                        self.params.interval_s,
                    )
        else:
            lower, step, n = ("1m", MINUTE_NS, 15) if window == "15m" else ("15m", QUARTER_NS, 4)
            parts = self._parts
            subs: list[Partial | None] = []
            for i in range(n):
                sub_start = start + i * step
                sub_key = (lower, meter_id, sub_start)
                subs.append(parts[sub_key] if sub_key in parts else self.meter_part(lower, meter_id, sub_start))
            part = combine(subs)
        self._parts[key] = part
        return part

    def facility_minmax(self, window: str, start: int) -> tuple[float, float] | None:
        if self._dirty:
            self._flush_dirty()
        key = (window, start)
        got = self._fac_minmax.get(key, _MISSING)
        if got is not _MISSING:
            return got  # type: ignore[return-value]
        result: tuple[float, float] | None
        if window == "1m":
            totals = slot_totals(
                (series.between(start, start + MINUTE_NS) for series in self.meters.values()), self.params.interval_s
            ).values()
            result = (min(totals), max(totals)) if totals else None
        else:
            lower, step, n = ("1m", MINUTE_NS, 15) if window == "15m" else ("15m", QUARTER_NS, 4)
            cached = self._fac_minmax
            lo, hi = float("inf"), float("-inf")
            present = False
            for i in range(n):
                sub_key = (lower, start + i * step)
                mm = cached[sub_key] if sub_key in cached else self.facility_minmax(*sub_key)
                if mm is not None:
                    present = True
                    if mm[0] < lo:
                        lo = mm[0]
                    if mm[1] > hi:
                        hi = mm[1]
            result = (lo, hi) if present else None
        self._fac_minmax[key] = result
        return result

    def meter_window(self, meter_id: str, key: WindowKey) -> Rollup | None:
        part = self.meter_part(key.window, meter_id, key.start_ns)
        if part is None:
            return None
        return to_rollup(part, WINDOW_SECONDS[key.window])

    def facility_window(
        self, key: WindowKey, meter_ids: Iterable[str] | None = None
    ) -> tuple[Rollup, dict[str, Rollup]] | None:
        """The facility rollup of one window and the meter rollups it was built from
        (``meter_ids``: ``sorted(self.meters)``, when the caller has it)."""
        per_meter: dict[str, Rollup] = {}
        for meter_id in sorted(self.meters) if meter_ids is None else meter_ids:
            got = self.meter_window(meter_id, key)
            if got is not None:
                per_meter[meter_id] = got
        minmax = self.facility_minmax(key.window, key.start_ns)
        if not per_meter or minmax is None:
            return None
        return facility_from_meters(list(per_meter.values()), *minmax), per_meter

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
        gone = set(dropped)
        self._parts = {k: v for k, v in self._parts.items() if hour_of(k[2]) not in gone}
        self._fac_minmax = {k: v for k, v in self._fac_minmax.items() if hour_of(k[1]) not in gone}
        self.meters = {m: s for m, s in self.meters.items() if len(s)}
        return dropped

    def sample_count(self) -> int:
        return sum(len(s) for s in self.meters.values())


class RollupRow(NamedTuple):
    """One rollup point to write: facility-level when ``meter_id`` is None."""

    facility_id: str
    meter_id: str | None
    key: WindowKey
    rollup: Rollup


def rollups_for(state: FacilityState, touched: Iterable[tuple[str, int]]) -> list[RollupRow]:
    """Meter rollups of every window containing a touched (meter, minute) and facility rollups of those windows."""
    by_window: dict[WindowKey, set[str]] = {}
    for meter_id, minute in touched:
        for name, secs in WINDOWS:
            by_window.setdefault(WindowKey(name, window_start(minute, secs)), set()).add(meter_id)
    rows: list[RollupRow] = []
    meter_ids = sorted(state.meters)
    for key in sorted(by_window, key=lambda k: (k.start_ns, k.window)):
        got = state.facility_window(key, meter_ids)
        if got is None:
            continue
        fac, per_meter = got
        for meter_id in sorted(by_window[key]):
            if meter_id in per_meter:
                rows.append(RollupRow(state.facility_id, meter_id, key, per_meter[meter_id]))
        rows.append(RollupRow(state.facility_id, None, key, fac))
    return rows
