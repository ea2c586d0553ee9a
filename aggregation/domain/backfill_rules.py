"""Which ranges a backfill may replay through the rollup worker (pure; decision 0950).

The worker rolls readings up at its nominal sample spacing (``aggregation.expected_interval_s``, 15 s):
each sample holds its power for at most that long. Seeded history (decision 0820) is one reading per
meter every 15 minutes, written straight to InfluxDB with rollups integrated over 15 minutes. Replayed
through the worker, each such reading would count as 15 s of energy: a 60x undercount that overwrites
correct rollups. A backfill over a facility's seeded span with another spacing is therefore refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SeededSpan:
    """A facility's seeded history: ``[start, end)`` at one reading per meter every ``interval_s``."""

    facility_id: str
    start: datetime
    end: datetime
    interval_s: float


def backfill_refusal(span: SeededSpan | None, start: datetime, end: datetime, worker_interval_s: float) -> str | None:
    """Why ``[start, end)`` must not be backfilled, or None when it may be."""
    if span is None or span.interval_s == worker_interval_s or end <= span.start or start >= span.end:
        return None
    ratio = span.interval_s / worker_interval_s
    return (
        f"{span.facility_id} has seeded history {span.start.isoformat()}..{span.end.isoformat()} at one reading "
        f"every {span.interval_s:g} s, written straight to InfluxDB; the rollup worker would count each reading "
        f"as {worker_interval_s:g} s ({ratio:g}x less energy) and overwrite its correct rollups. Backfill only "
        f"from {span.end.isoformat()} on (docs/runbooks/aggregation.md)"
    )
