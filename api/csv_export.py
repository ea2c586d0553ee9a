"""CSV for analysts, shared by the API's export routes and ``energy export``.

Every time appears twice: in UTC (``..._utc``, ending in ``Z``) and in the facility's own zone
(``..._local``, ISO-8601 with its offset, so DST is unambiguous). Each column has one fixed
precision, so the strings sort and parse alike: microseconds for raw readings (what the reading
schema carries), whole seconds for rollup windows and DR events. Units are in the header names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from api.timeseries import RAW_FIELDS, WINDOW_SECONDS, time_slices
from schemas.api import Granularity

RAW_HEADER = ["timestamp_utc", "timestamp_local", "facility_id", "meter_id", *RAW_FIELDS]
ROLLUP_HEADER = [
    "window_start_utc",
    "window_start_local",
    "facility_id",
    "window",
    "avg_kw",
    "min_kw",
    "max_kw",
    "energy_kwh",
    "energy_register_kwh",
    "sample_count",
    "coverage_ratio",
]
ROLLUP_SOURCE = ["avg_kw", "min_kw", "max_kw", "energy_kwh", "energy_register_kwh", "sample_count", "coverage"]
RAW_SLICE_S = 6 * 3600
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cell(value: Any) -> str:
    """Numbers exactly as stored (repr round-trips floats), empty for missing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return buf.getvalue()


def _from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def utc_text(ts: datetime | int, timespec: str = "seconds") -> str:
    """``2026-03-29T01:00:00Z`` (or with ``.ffffff`` for ``timespec="microseconds"``)."""
    moment = _from_ns(ts) if isinstance(ts, int) else ts.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def local_text(ts: datetime | int, zone: ZoneInfo, timespec: str = "seconds") -> str:
    """The same moment in ``zone`` with its UTC offset, e.g. ``2026-03-29T03:00:00+02:00``."""
    moment = _from_ns(ts) if isinstance(ts, int) else ts.astimezone(UTC)
    return moment.astimezone(zone).isoformat(timespec=timespec)


def _float(value: Any) -> float | None:
    # InfluxDB's JSON writes integral floats without a decimal point; the CSV keeps the field's type.
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def csv_row(granularity: Granularity, facility_id: str, zone: ZoneInfo, r: dict[str, Any]) -> list[Any]:
    ns = int(r["time"])
    if granularity is Granularity.RAW:
        return [
            utc_text(ns, "microseconds"),
            local_text(ns, zone, "microseconds"),
            facility_id,
            r.get("meter_id"),
            *(_float(r.get(f)) for f in RAW_FIELDS),
        ]
    values = [_int(r.get(f)) if f == "sample_count" else _float(r.get(f)) for f in ROLLUP_SOURCE]
    return [utc_text(ns), local_text(ns, zone), facility_id, granularity.value, *values]


PageReader = Callable[[str, datetime, datetime, int], Awaitable[list[dict[str, Any]]]]


@dataclass
class ReadingsExport:
    """Readings or rollups of several facilities, read page by page so memory stays flat.

    :meth:`prefetch` reads the first page before anything is sent, so an outage at the start is a
    clean error rather than a truncated file; :meth:`chunks` then yields CSV text."""

    read: PageReader  # (facility_id, slice start, slice end, offset) -> rows
    facilities: list[str]
    zones: dict[str, ZoneInfo]
    granularity: Granularity
    start: datetime
    end: datetime
    page_rows: int
    on_rows: Callable[[int], None] = lambda n: None
    _first: list[dict[str, Any]] | None = field(default=None, init=False)

    @property
    def header(self) -> list[str]:
        return RAW_HEADER if self.granularity is Granularity.RAW else ROLLUP_HEADER

    def slices(self) -> list[tuple[datetime, datetime]]:
        if self.granularity is Granularity.RAW:
            slice_s = RAW_SLICE_S
        else:
            slice_s = WINDOW_SECONDS[self.granularity] * self.page_rows
        return time_slices(self.start, self.end, slice_s)

    async def prefetch(self) -> None:
        s, e = self.slices()[0]
        self._first = await self.read(self.facilities[0], s, e, 0)

    async def chunks(self) -> AsyncIterator[str]:
        slices = self.slices()
        yield csv_text([self.header])
        for fid in self.facilities:
            zone = self.zones[fid]
            for s, e in slices:
                offset = 0
                while True:
                    if self._first is not None and (fid, s, offset) == (self.facilities[0], slices[0][0], 0):
                        rows, self._first = self._first, None
                    else:
                        rows = await self.read(fid, s, e, offset)
                    if rows:
                        self.on_rows(len(rows))
                        yield csv_text(csv_row(self.granularity, fid, zone, r) for r in rows)
                    if len(rows) < self.page_rows:
                        break
                    offset += self.page_rows


def zone_of(name: str | None) -> ZoneInfo:
    """A facility's zone; UTC for a name the zone database does not know (rows written before
    zones were validated), so one bad row never fails a whole export."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ValueError, KeyError, OSError):
        return ZoneInfo("UTC")
