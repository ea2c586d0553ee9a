"""Settings of the ingestion service (``ENERGY_INGESTION__*``)."""

from __future__ import annotations

from energy.config_types import Count, Seconds, SettingsGroup


class IngestionSettings(SettingsGroup):
    buffer_size: Count = 10_000
    producer_linger_ms: int = 5
    publish_timeout_s: Seconds = 5.0
    registry_refresh_s: Seconds = 30.0
    dedup_window: Count = 100_000
