"""InfluxQL for the API: current load, ranges and export slices (schema: docs/decisions/0003).

Every user value reaches InfluxDB as a bound parameter (``$name``); identifiers (database,
retention policies, measurements) come from settings and pass :func:`quote_ident`.
Times travel as integer nanoseconds (``epoch=ns``) so nothing is lost to float or string
conversion and CSV timestamps are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from energy.adapters.influx import InfluxClient, Series, quote_ident
from energy.observability.metrics import Counter
from energy.settings import InfluxSettings
from schemas.api import Granularity

INFLUX_QUERIES = Counter("energy_api_influx_queries_total", "InfluxDB queries made by the API", ["purpose"])

RAW_FIELDS = ("active_power_kw", "reactive_power_kvar", "voltage_v", "current_a", "energy_kwh")
ROLLUP_FIELDS = ("avg_kw", "min_kw", "max_kw", "energy_kwh", "energy_register_kwh", "sample_count", "coverage")
WINDOW_SECONDS = {Granularity.ONE_MINUTE: 60, Granularity.FIFTEEN_MINUTES: 900, Granularity.ONE_HOUR: 3600}


@dataclass(frozen=True)
class Measurements:
    """Fully qualified, validated measurement names."""

    readings: str
    facility_rollups: str
    meter_rollups: str

    @classmethod
    def from_settings(cls, s: InfluxSettings) -> Measurements:
        db = quote_ident(s.database)
        raw = f"{db}.{quote_ident(s.raw_retention_policy)}"
        roll = f"{db}.{quote_ident(s.rollup_retention_policy)}"
        return cls(f'{raw}."readings"', f'{roll}."facility_rollups"', f'{roll}."meter_rollups"')


def to_ns(ts: datetime) -> int:
    ts = ts.astimezone(UTC)
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000


def from_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def iso_ns(ns: int) -> str:
    """ISO-8601 UTC with 'Z', exact to the nanosecond, without trailing zeros."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        return f"{base}.{f'{frac:09d}'.rstrip('0')}Z"
    return f"{base}Z"


def _fields(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


# --- current load -------------------------------------------------------------------------


def current_query(m: Measurements, lookback_s: int) -> str:
    """Two statements, one round trip: each meter's latest power, and the latest 1m rollup."""
    lb = f"{int(lookback_s)}s"
    return (
        f'SELECT last("active_power_kw") AS "kw" FROM {m.readings} '
        f'WHERE "facility_id" = $fid AND time > now() - {lb} GROUP BY "meter_id"; '
        f"SELECT {_fields(ROLLUP_FIELDS)} FROM {m.facility_rollups} "
        f'WHERE "facility_id" = $fid AND "window" = \'1m\' AND time > now() - {lb} ORDER BY time DESC LIMIT 1'
    )


def current_from_series(facility_id: str, series: Sequence[Series], fetched_at: datetime) -> dict[str, Any]:
    """The cached value of ``GET /api/facilities/{id}/current`` (JSON-ready)."""
    total = 0.0
    meters = 0
    newest: int | None = None
    rollup: dict[str, Any] | None = None
    for s in series:
        if s.name == "readings":
            for row in s.rows():
                if row.get("kw") is None:
                    continue
                total += float(row["kw"])
                meters += 1
                newest = row["time"] if newest is None else max(newest, row["time"])
        elif s.name == "facility_rollups" and s.values:
            row = s.rows()[0]
            rollup = rollup_row(row, "1m")
    return {
        "facility_id": facility_id,
        "as_of": from_ns(newest).isoformat() if newest is not None else None,
        "current_kw": round(total, 6) if meters else None,
        "meters_reporting": meters,
        "rollup_1m": rollup,
        "fetched_at": fetched_at.isoformat(),
    }


def rollup_row(row: dict[str, Any], window: str) -> dict[str, Any]:
    sc = row.get("sample_count")
    return {
        "window_start": from_ns(int(row["time"])).isoformat(),
        "window": window,
        "avg_kw": row.get("avg_kw"),
        "min_kw": row.get("min_kw"),
        "max_kw": row.get("max_kw"),
        "energy_kwh": row.get("energy_kwh"),
        "sample_count": int(sc) if sc is not None else None,
        "coverage": row.get("coverage"),
    }


async def fetch_current(
    influx: InfluxClient, m: Measurements, facility_id: str, lookback_s: int, timeout_s: float, now: datetime
) -> dict[str, Any]:
    INFLUX_QUERIES.labels("current").inc()
    series = await influx.query(current_query(m, lookback_s), {"fid": facility_id}, epoch="ns", timeout_s=timeout_s)
    return current_from_series(facility_id, series, now)


# --- ranges and slices --------------------------------------------------------------------


def range_query(m: Measurements, granularity: Granularity, meter: bool) -> str:
    """Rows of one facility (optionally one meter) in [start, end), oldest first, paged."""
    meter_clause = ' AND "meter_id" = $mid' if meter else ""
    if granularity is Granularity.RAW:
        return (
            f'SELECT "meter_id", {_fields(RAW_FIELDS)} FROM {m.readings} '
            f'WHERE "facility_id" = $fid{meter_clause} AND time >= $start AND time < $end '
            "ORDER BY time ASC LIMIT $limit OFFSET $offset"
        )
    target = m.meter_rollups if meter else m.facility_rollups
    return (
        f"SELECT {_fields(ROLLUP_FIELDS)} FROM {target} "
        f'WHERE "facility_id" = $fid{meter_clause} AND "window" = $window AND time >= $start AND time < $end '
        "ORDER BY time ASC LIMIT $limit OFFSET $offset"
    )


def range_params(
    facility_id: str,
    meter_id: str | None,
    granularity: Granularity,
    start: datetime,
    end: datetime,
    limit: int,
    offset: int = 0,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "fid": facility_id,
        "start": to_ns(start),
        "end": to_ns(end),
        "limit": limit,
        "offset": offset,
    }
    if meter_id is not None:
        params["mid"] = meter_id
    if granularity is not Granularity.RAW:
        params["window"] = granularity.value
    return params


async def fetch_range(
    influx: InfluxClient,
    m: Measurements,
    facility_id: str,
    meter_id: str | None,
    granularity: Granularity,
    start: datetime,
    end: datetime,
    limit: int,
    offset: int,
    timeout_s: float,
    purpose: str = "range",
) -> list[dict[str, Any]]:
    INFLUX_QUERIES.labels(purpose).inc()
    series = await influx.query(
        range_query(m, granularity, meter_id is not None),
        range_params(facility_id, meter_id, granularity, start, end, limit, offset),
        epoch="ns",
        timeout_s=timeout_s,
    )
    rows: list[dict[str, Any]] = []
    for s in series:
        rows.extend(s.rows())
    return rows


def time_slices(start: datetime, end: datetime, slice_s: int) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive half-open slices of at most ``slice_s`` seconds."""
    out = []
    step = timedelta(seconds=slice_s)
    t = start
    while t < end:
        nxt = min(end, t + step)
        out.append((t, nxt))
        t = nxt
    return out
