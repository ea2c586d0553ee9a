"""Which readings may change rollups, and which late ones must be announced.

No outage of ours may turn a reading "late": a reading parked in Mosquitto, the raw topic or
``meter-readings`` while Kafka, InfluxDB or this worker was down is as good as a prompt one.
So the only bound is what can still be stored: a reading whose time is older than the raw
retention (minus a margin for clock differences and the shard about to expire) is ``too_late``
and goes to the DLQ; every other reading updates its windows (the state reloads from InfluxDB,
so a wide bound costs a load, not memory). A reading stamped beyond the clock skew into the
future is refused too (``timestamp_in_future``): it cannot be a measurement, and window and
nanosecond arithmetic on it overflows.

The worker judges by its own clock at processing time, the same clock InfluxDB's retention
uses. A reading older than ``notify_after_s`` still updates its windows, and its 15-minute
window is announced (``meter.late_window``) so that whoever settled on the old values (M&V
settlement of a DR event) recomputes it. See docs/decisions/0202.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

TOO_LATE = "too_late"
IN_FUTURE = "timestamp_in_future"
NOTIFY_WINDOW_S = 900


@dataclass(frozen=True)
class LatenessPolicy:
    retention_s: float
    retention_margin_s: float
    future_tolerance_s: float
    notify_after_s: float

    def accepted_range(self, now: datetime) -> tuple[datetime, datetime]:
        """[oldest, newest] reading time that may change rollups at ``now`` (one comparison per reading)."""
        return (
            now - timedelta(seconds=self.retention_s - self.retention_margin_s),
            now + timedelta(seconds=self.future_tolerance_s),
        )

    def refusal(self, ts: datetime, now: datetime) -> str | None:
        """``too_late`` / ``timestamp_in_future`` for a reading that may not change rollups, else None."""
        oldest, newest = self.accepted_range(now)
        if ts > newest:
            return IN_FUTURE
        if ts < oldest:
            return TOO_LATE
        return None

    def detail(self, reason: str, ts: datetime, now: datetime) -> str:
        if reason == IN_FUTURE:
            return f"reading at {ts.isoformat()} is more than {self.future_tolerance_s:g}s after {now.isoformat()}"
        return (
            f"reading at {ts.isoformat()} is older than the raw retention ({self.retention_s:g}s, "
            f"margin {self.retention_margin_s:g}s) at {now.isoformat()}"
        )

    def is_late(self, ts: datetime, now: datetime) -> bool:
        return (now - ts).total_seconds() > self.notify_after_s


@dataclass(frozen=True)
class LateWindowNotice:
    facility_id: str
    window_start: datetime
    window_end: datetime
    late_readings: int
    max_lateness_s: float


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def late_windows(
    readings: Iterable[tuple[str, datetime]], now: datetime, policy: LatenessPolicy
) -> list[LateWindowNotice]:
    """The 15-minute windows of each facility that late readings of a batch changed.

    ``readings`` are (facility_id, ts) of the readings that were rolled up.
    """
    found: dict[tuple[str, int], tuple[int, float]] = {}
    cutoff = now - timedelta(seconds=policy.notify_after_s)
    for facility_id, ts in readings:
        if ts >= cutoff:
            continue
        seconds = int((ts - _EPOCH).total_seconds())
        key = (facility_id, seconds - seconds % NOTIFY_WINDOW_S)
        count, worst = found.get(key, (0, 0.0))
        found[key] = (count + 1, max(worst, (now - ts).total_seconds()))
    out = []
    for (facility_id, start), (count, worst) in sorted(found.items()):
        begin = _EPOCH + timedelta(seconds=start)
        out.append(LateWindowNotice(facility_id, begin, begin + timedelta(seconds=NOTIFY_WINDOW_S), count, worst))
    return out
