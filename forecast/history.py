"""Facility history from InfluxDB: 15 min facility rollups (docs/decisions/0003-influxdb-schema.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from energy.adapters.influx import InfluxClient, quote_ident
from forecast.prepare import Rollup

CHUNK = 50  # facilities per query; every id is a bound parameter


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def read_rollups(
    influx: InfluxClient,
    rp: str,
    facility_ids: Sequence[str],
    start: datetime,
    end: datetime,
    timeout_s: float | None = None,
) -> dict[str, list[Rollup]]:
    out: dict[str, list[Rollup]] = {fid: [] for fid in facility_ids}
    for i in range(0, len(facility_ids), CHUNK):
        chunk = facility_ids[i : i + CHUNK]
        params: dict[str, str] = {"w": "15m", "start": _rfc3339(start), "end": _rfc3339(end)}
        ors = []
        for j, fid in enumerate(chunk):
            params[f"f{j}"] = fid
            ors.append(f'"facility_id" = $f{j}')
        q = (
            f'SELECT "avg_kw", "coverage" FROM {quote_ident(rp)}."facility_rollups" '
            f'WHERE "window" = $w AND time >= $start AND time < $end AND ({" OR ".join(ors)}) GROUP BY "facility_id"'
        )
        for series in await influx.query(q, params=params, epoch="s", timeout_s=timeout_s):
            fid = series.tags.get("facility_id", "")
            if fid not in out:
                continue
            for ts, avg_kw, coverage in series.values:
                if avg_kw is None:
                    continue
                out[fid].append(
                    Rollup(
                        datetime.fromtimestamp(ts, UTC), float(avg_kw), float(coverage if coverage is not None else 1.0)
                    )
                )
    return out
