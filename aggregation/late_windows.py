"""The lateness policy from the settings, and ``meter.late_window`` events (docs/decisions/0202)."""

from __future__ import annotations

from datetime import datetime

from aggregation.domain.lateness import LatenessPolicy, LateWindowNotice
from energy.settings import Settings
from schemas.readings import LateWindow, LateWindowEvent

SOURCE = "aggregation"


def late_window_event(notice: LateWindowNotice, now: datetime) -> LateWindowEvent:
    payload = LateWindow(
        facility_id=notice.facility_id,
        window_start=notice.window_start,
        window_end=notice.window_end,
        late_readings=notice.late_readings,
        max_lateness_s=notice.max_lateness_s,
    )
    event: LateWindowEvent = LateWindowEvent.wrap(payload, source=SOURCE, occurred_at=now)
    return event


def lateness_policy(settings: Settings) -> LatenessPolicy:
    cfg = settings.aggregation
    return LatenessPolicy(
        retention_s=settings.influx.raw_retention_s,
        retention_margin_s=cfg.retention_margin_s,
        future_tolerance_s=cfg.future_tolerance_s,
        notify_after_s=cfg.allowed_lateness_s,
    )
