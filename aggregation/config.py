"""Settings of the aggregation worker (``ENERGY_AGGREGATION__*``)."""

from __future__ import annotations

from energy.config_types import Count, Seconds, SettingsGroup


class AggregationSettings(SettingsGroup):
    allowed_lateness_s: Seconds = 3600.0
    batch_max_readings: Count = 5_000
    batch_max_wait_s: Seconds = 1.0
    influx_breaker_fail_max: Count = 5
    influx_breaker_reset_s: Seconds = 10.0
