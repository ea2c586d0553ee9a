"""PostgreSQL rows of frozen baselines and versioned settlement runs (migration 0430)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dr_coordinator.domain.interval_baselines import Adjustment, Baseline, Interval, Method
from dr_coordinator.domain.report import IntervalReading
from dr_coordinator.domain.settlement import FacilitySettlement, RunKind, SettlementInterval


async def freeze_baseline(conn: Any, dr_event_id: uuid.UUID, facility_id: str, b: Baseline, now: datetime) -> bool:
    """Store the baseline once; a second dispatch attempt never replaces a frozen baseline."""
    tz = b.intervals[0].local_start.tzinfo if b.intervals else None
    status = await conn.execute(
        """INSERT INTO dr_baselines (dr_event_id, facility_id, method, interval_minutes, timezone, intervals,
                                     detail, frozen_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8)
           ON CONFLICT (dr_event_id, facility_id) DO NOTHING""",
        dr_event_id,
        facility_id,
        b.method.value,
        _minutes(b),
        str(tz) if tz else "UTC",
        json.dumps(
            [
                {
                    "start": iv.start.isoformat(),
                    "end": iv.end.isoformat(),
                    "local_start": iv.local_start.isoformat(),
                    "kw": kw,
                    "unadjusted_kw": un,
                }
                for iv, kw, un in zip(b.intervals, b.kw, b.unadjusted_kw, strict=True)
            ]
        ),
        json.dumps(b.as_dict()),
        now,
    )
    return str(status).endswith(" 1")


def _minutes(b: Baseline) -> int:
    if not b.intervals:
        return 15
    return round((b.intervals[0].end - b.intervals[0].start) / timedelta(minutes=1))


async def frozen_baseline(conn: Any, dr_event_id: uuid.UUID, facility_id: str) -> Baseline | None:
    row = await conn.fetchrow(
        "SELECT method, timezone, intervals, detail FROM dr_baselines WHERE dr_event_id = $1 AND facility_id = $2",
        dr_event_id,
        facility_id,
    )
    if row is None:
        return None
    tz = ZoneInfo(row["timezone"])
    ivs = json.loads(row["intervals"]) if isinstance(row["intervals"], str) else row["intervals"]
    detail = json.loads(row["detail"]) if isinstance(row["detail"], str) else row["detail"]
    intervals = tuple(
        Interval(
            datetime.fromisoformat(i["start"]).astimezone(UTC),
            datetime.fromisoformat(i["end"]).astimezone(UTC),
            datetime.fromisoformat(i["start"]).astimezone(tz),
        )
        for i in ivs
    )
    return Baseline(
        method=Method(row["method"]),
        intervals=intervals,
        kw=tuple(i["kw"] for i in ivs),
        unadjusted_kw=tuple(i["unadjusted_kw"] for i in ivs),
        adjustment=Adjustment(detail.get("adjustment", "none")),
        adjustment_value=float(detail.get("adjustment_value", 0.0)),
        adjustment_capped=bool(detail.get("adjustment_capped", False)),
        days_used=tuple(date.fromisoformat(d) for d in detail.get("days_used", [])),
        flag=detail.get("flag"),
        fallback=Method(detail["fallback"]) if detail.get("fallback") else None,
        settlement_grade=bool(detail.get("settlement_grade", True)),
        replaced=Method(detail["replaced"]) if detail.get("replaced") else None,
    )


@dataclass(frozen=True)
class StoredRun:
    version: int
    kind: RunKind
    computed_at: datetime
    settlement: FacilitySettlement


async def runs(conn: Any, dr_event_id: uuid.UUID, facility_id: str) -> list[StoredRun]:
    heads = await conn.fetch(
        """SELECT version, kind, computed_at, baseline_kwh, metered_kwh, reduction_kwh, mean_reduction_kw,
                  performance_pct, coverage_pct
           FROM dr_settlement_runs WHERE dr_event_id = $1 AND facility_id = $2 ORDER BY version""",
        dr_event_id,
        facility_id,
    )
    rows = await conn.fetch(
        """SELECT * FROM dr_settlement_intervals WHERE dr_event_id = $1 AND facility_id = $2
           ORDER BY version, interval_start""",
        dr_event_id,
        facility_id,
    )
    by_version: dict[int, list[SettlementInterval]] = {}
    for r in rows:
        by_version.setdefault(r["version"], []).append(
            SettlementInterval(
                r["interval_start"],
                r["interval_end"],
                datetime.fromisoformat(r["local_start"]),
                r["baseline_kw"],
                r["metered_kw"],
                r["reduction_kw"],
                r["target_kw"],
                r["performance_pct"],
                r["coverage_pct"],
            )
        )
    return [
        StoredRun(
            h["version"],
            RunKind(h["kind"]),
            h["computed_at"],
            FacilitySettlement(
                tuple(by_version.get(h["version"], [])),
                h["baseline_kwh"],
                h["metered_kwh"],
                h["reduction_kwh"],
                h["mean_reduction_kw"],
                h["performance_pct"],
                h["coverage_pct"],
            ),
        )
        for h in heads
    ]


async def write_run(
    conn: Any,
    dr_event_id: uuid.UUID,
    facility_id: str,
    kind: RunKind,
    s: FacilitySettlement,
    baseline: Baseline,
    frozen: bool,
    target_kw: float | None,
    now: datetime,
) -> int:
    """Append the next version (caller's transaction; the primary key refuses a racing duplicate)."""
    version = (
        await conn.fetchval(
            "SELECT COALESCE(max(version), 0) FROM dr_settlement_runs WHERE dr_event_id = $1 AND facility_id = $2",
            dr_event_id,
            facility_id,
        )
        + 1
    )
    await conn.execute(
        """INSERT INTO dr_settlement_runs (dr_event_id, facility_id, version, kind, computed_at, baseline_method,
                   baseline_frozen, target_kw, baseline_kwh, metered_kwh, reduction_kwh, mean_reduction_kw,
                   performance_pct, coverage_pct, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb)""",
        dr_event_id,
        facility_id,
        version,
        kind.value,
        now,
        baseline.method.value,
        frozen,
        target_kw,
        s.baseline_kwh,
        s.metered_kwh,
        s.reduction_kwh,
        s.mean_reduction_kw,
        s.performance_pct,
        s.coverage_pct,
        json.dumps({"baseline": baseline.as_dict()}),
    )
    await conn.executemany(
        """INSERT INTO dr_settlement_intervals (dr_event_id, facility_id, version, interval_start, interval_end,
                   local_start, baseline_kw, metered_kw, reduction_kw, target_kw, performance_pct, coverage_pct)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        [
            (
                dr_event_id,
                facility_id,
                version,
                r.start,
                r.end,
                r.local_start.isoformat(),
                r.baseline_kw,
                r.metered_kw,
                r.reduction_kw,
                r.target_kw,
                r.performance_pct,
                r.coverage_pct,
            )
            for r in s.intervals
        ],
    )
    return int(version)


async def report_intervals(conn: Any, dr_event_id: uuid.UUID) -> dict[str, tuple[int, list[IntervalReading]]]:
    """Per facility: the latest settlement version and its per-interval report values (USAGE kWh,
    DEMAND kW, BASELINE kW), as the OpenADR report builder takes them."""
    rows = await conn.fetch(
        """SELECT i.facility_id, i.version, i.interval_start, i.interval_end, i.metered_kw, i.baseline_kw
           FROM dr_settlement_intervals i
           JOIN (SELECT facility_id, max(version) AS version FROM dr_settlement_runs WHERE dr_event_id = $1
                 GROUP BY facility_id) latest USING (facility_id, version)
           WHERE i.dr_event_id = $1 ORDER BY i.facility_id, i.interval_start""",
        dr_event_id,
    )
    out: dict[str, tuple[int, list[IntervalReading]]] = {}
    for r in rows:
        hours = (r["interval_end"] - r["interval_start"]) / timedelta(hours=1)
        usage = None if r["metered_kw"] is None else r["metered_kw"] * hours
        out.setdefault(r["facility_id"], (r["version"], []))[1].append(
            IntervalReading(r["interval_start"], r["interval_end"], usage, r["metered_kw"], r["baseline_kw"])
        )
    return out


def interval_source(pool: Any) -> Callable[[Any, list[str]], Awaitable[dict[str, tuple[int, list[IntervalReading]]]]]:
    """The VTN reporting job's source of per-interval values: the latest settlement of each facility."""

    async def source(ev: Any, facility_ids: list[str]) -> dict[str, tuple[int, list[IntervalReading]]]:
        async with pool.acquire() as conn:
            return await report_intervals(conn, ev["dr_event_id"])

    return source


__all__ = [
    "StoredRun",
    "freeze_baseline",
    "frozen_baseline",
    "interval_source",
    "report_intervals",
    "runs",
    "write_run",
]
