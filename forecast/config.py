"""Settings of the forecast service (``ENERGY_FORECAST__*``)."""

from __future__ import annotations

from energy.config_types import HttpUrl, SafePath, Seconds, SettingsGroup
from energy.settings_paths import PROJECT_ROOT


class ForecastSettings(SettingsGroup):
    model_dir: SafePath = PROJECT_ROOT / "artifacts" / "models"
    schedule_interval_s: Seconds = 900.0
    weather_primary_url: HttpUrl = "http://127.0.0.1:58103/weatherapi"
    weather_secondary_url: HttpUrl = "http://127.0.0.1:58103/openmeteo"
    weather_timeout_s: Seconds = 3.0
