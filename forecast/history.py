"""Facility history from InfluxDB: 15 min facility rollups (docs/decisions/0003-influxdb-schema.md), as
numpy arrays per facility, and a per-process cache so a quarter-hourly run re-reads only the newest hours."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from energy.adapters.influx import InfluxClient, quote_ident

CHUNK = 50  # facilities per query; every id is a bound parameter


@dataclass(frozen=True)
class Rollup:
    ts: datetime  # window start, UTC
    avg_kw: float
    coverage: float


@dataclass(frozen=True)
class RollupArrays:
    """One facility's rollups, sorted by time: window starts (epoch seconds), average kW, coverage."""

    ts: np.ndarray
    kw: np.ndarray
    coverage: np.ndarray

    @classmethod
    def empty(cls) -> RollupArrays:
        z = np.zeros(0, dtype=np.float64)
        return cls(z, z, z)

    @classmethod
    def of(cls, rollups: Sequence[Rollup]) -> RollupArrays:
        n = len(rollups)
        ts = np.fromiter((r.ts.timestamp() for r in rollups), dtype=np.float64, count=n)
        kw = np.fromiter((r.avg_kw for r in rollups), dtype=np.float64, count=n)
        cov = np.fromiter((r.coverage for r in rollups), dtype=np.float64, count=n)
        order = np.argsort(ts, kind="stable")
        return cls(ts[order], kw[order], cov[order])

    def between(self, start_s: float, end_s: float) -> RollupArrays:
        lo, hi = np.searchsorted(self.ts, [start_s, end_s], side="left")
        return RollupArrays(self.ts[lo:hi], self.kw[lo:hi], self.coverage[lo:hi])

    def __len__(self) -> int:
        return len(self.ts)


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def read_rollup_arrays(
    influx: InfluxClient,
    rp: str,
    facility_ids: Sequence[str],
    start: datetime,
    end: datetime,
    timeout_s: float | None = None,
    concurrency: int = 4,
    limit: asyncio.Semaphore | None = None,
) -> dict[str, RollupArrays]:
    """Rollups in [start, end) of every facility (empty when it has none), one query per CHUNK facilities,
    at most ``concurrency`` at once (InfluxDB serves one while this process parses another's answer), or
    as many as ``limit`` allows (a bound shared by concurrent reads)."""
    out: dict[str, RollupArrays] = {fid: RollupArrays.empty() for fid in facility_ids}
    sem = limit or asyncio.Semaphore(concurrency)

    async def one(chunk: Sequence[str]) -> None:
        params: dict[str, str] = {"w": "15m", "start": _rfc3339(start), "end": _rfc3339(end)}
        ors = []
        for j, fid in enumerate(chunk):
            params[f"f{j}"] = fid
            ors.append(f'"facility_id" = $f{j}')
        q = (
            f'SELECT "avg_kw", "coverage" FROM {quote_ident(rp)}."facility_rollups" '
            f'WHERE "window" = $w AND time >= $start AND time < $end AND ({" OR ".join(ors)}) GROUP BY "facility_id"'
        )
        async with sem:
            answer = await influx.query(q, params=params, epoch="s", timeout_s=timeout_s, msgpack=True)
        for series in answer:
            fid = series.tags.get("facility_id", "")
            if fid not in out or not series.values:
                continue
            rows = np.array(series.values, dtype=np.float64)  # None (a missing field) becomes NaN
            rows = rows[np.isfinite(rows[:, 1])]
            cov = np.where(np.isfinite(rows[:, 2]), rows[:, 2], 1.0)
            order = np.argsort(rows[:, 0], kind="stable")
            out[fid] = RollupArrays(rows[order, 0], rows[order, 1], cov[order])

    await asyncio.gather(*(one(facility_ids[i : i + CHUNK]) for i in range(0, len(facility_ids), CHUNK)))
    return out


async def read_rollups(
    influx: InfluxClient,
    rp: str,
    facility_ids: Sequence[str],
    start: datetime,
    end: datetime,
    timeout_s: float | None = None,
) -> dict[str, list[Rollup]]:
    """The same as :func:`read_rollup_arrays`, one :class:`Rollup` per window (training data)."""
    arrays = await read_rollup_arrays(influx, rp, facility_ids, start, end, timeout_s)
    return {
        fid: [
            Rollup(datetime.fromtimestamp(t, UTC), float(k), float(c))
            for t, k, c in zip(a.ts.tolist(), a.kw.tolist(), a.coverage.tolist(), strict=True)
        ]
        for fid, a in arrays.items()
    }


@dataclass
class _Cached:
    rollups: RollupArrays
    covered_from: float  # epoch s: every rollup in [covered_from, covered_to) was read
    covered_to: float
    full_read_at: float


class HistoryCache:
    """Rollups read by earlier runs of this process. A run re-reads only the newest ``reread`` of each
    facility's window (rollups still arriving late, or rewritten by late readings, land there); once per
    ``refresh`` (plus a per-facility stagger of up to the same again, so a fleet first read in one run is not
    all refreshed in one run later) the whole window is read again, which picks up older windows rewritten
    by a backfill. Facilities not asked for within ``refresh`` are forgotten."""

    def __init__(self, reread: timedelta = timedelta(hours=2), refresh: timedelta = timedelta(hours=24)) -> None:
        self.reread_s = reread.total_seconds()
        self.refresh_s = refresh.total_seconds()
        self._entries: dict[str, _Cached] = {}
        self.points_read = 0  # rollups fetched from InfluxDB by this cache (for tests and benchmarks)

    def _refresh_after(self, facility_id: str) -> float:
        return self.refresh_s * (1.0 + (zlib.crc32(facility_id.encode()) % 96) / 96)

    async def read(
        self,
        influx: InfluxClient,
        rp: str,
        starts: Mapping[str, datetime],
        end: datetime,
        limit: asyncio.Semaphore | None = None,
    ) -> dict[str, RollupArrays]:
        """Rollups in [starts[facility], end) of every facility; ``limit``: queries in flight, shared by
        concurrent reads (default: 4 per read)."""
        end_s = end.timestamp()
        groups: dict[tuple[float, bool], list[str]] = {}
        for fid, start in starts.items():
            start_s = start.timestamp()
            c = self._entries.get(fid)
            fresh = (
                c is not None
                and c.covered_from <= start_s
                and c.covered_to <= end_s
                and end_s - c.full_read_at < self._refresh_after(fid)
            )
            if fresh and c is not None:
                groups.setdefault((max(start_s, c.covered_to - self.reread_s), True), []).append(fid)
            else:
                groups.setdefault((start_s, False), []).append(fid)
        for (from_s, tail), ids in groups.items():
            got = await read_rollup_arrays(influx, rp, ids, datetime.fromtimestamp(from_s, UTC), end, limit=limit)
            for fid in ids:
                new = got[fid]
                self.points_read += len(new)
                c = self._entries.get(fid)
                if tail and c is not None:
                    keep_from = max(c.covered_from, starts[fid].timestamp())  # older windows are not kept
                    kept = c.rollups.between(keep_from, from_s)
                    merged = RollupArrays(
                        np.concatenate([kept.ts, new.ts]),
                        np.concatenate([kept.kw, new.kw]),
                        np.concatenate([kept.coverage, new.coverage]),
                    )
                    self._entries[fid] = _Cached(merged, keep_from, end_s, c.full_read_at)
                else:
                    self._entries[fid] = _Cached(new, from_s, end_s, end_s)
        for fid in [f for f, c in self._entries.items() if end_s - c.covered_to > self.refresh_s]:
            del self._entries[fid]
        return {fid: self._entries[fid].rollups.between(start.timestamp(), end_s) for fid, start in starts.items()}
