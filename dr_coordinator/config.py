"""Settings of the demand-response coordinator (``ENERGY_DR__*``)."""

from __future__ import annotations

from energy.config_types import Count, Seconds, SettingsGroup


class DrSettings(SettingsGroup):
    bms_connect_timeout_s: Seconds = 2.0
    bms_total_timeout_s: Seconds = 5.0
    bms_breaker_fail_max: Count = 3
    bms_breaker_reset_s: Seconds = 30.0
    bms_concurrency_per_facility: Count = 4
    dispatch_lead_s: Seconds = 60.0
    max_event_duration_s: Seconds = 3600.0 * 1.0 * 12
    webhook_queue_size: Count = 1_000
    webhook_rate_per_s: Seconds = 20.0
    webhook_burst: Count = 40
