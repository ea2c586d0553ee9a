"""Allowed lateness: how long after its measurement a reading may still change rollups.

Lateness is measured against the reading's own ``received_at`` (stamped by ingestion), not
against the aggregation worker's clock or stream position, so the verdict is the same on
every replay and after every restart, and a backlog caused by our own outage is not late.
"""

from __future__ import annotations

from datetime import datetime


def lateness_s(ts: datetime, received_at: datetime) -> float:
    return (received_at - ts).total_seconds()


def is_too_late(ts: datetime, received_at: datetime, allowed_lateness_s: float) -> bool:
    return lateness_s(ts, received_at) > allowed_lateness_s
