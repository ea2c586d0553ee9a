"""Settings of the forecast service (``ENERGY_FORECAST__*``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from energy.config_types import HttpUrl, Name, SafePath, Seconds, SecretPolicy, SecretText, SettingsGroup
from energy.settings_paths import PROJECT_ROOT


class ForecastSettings(SettingsGroup):
    model_dir: SafePath = PROJECT_ROOT / "artifacts" / "models"
    schedule_interval_s: Seconds = 900.0
    weather_primary_url: HttpUrl = "http://127.0.0.1:58103/weatherapi"
    weather_secondary_url: HttpUrl = "http://127.0.0.1:58103/openmeteo"
    weather_timeout_s: Seconds = 3.0
    weather_api_key: Annotated[SecretText, SecretPolicy(min_length=16)] = SecretStr("local-sim-key")
    weather_retry_attempts: int = Field(default=3, ge=1, le=10)
    weather_retry_max_delay_s: Seconds = 2.0
    weather_rate_per_s: float = Field(default=5.0, gt=0, le=1000)
    weather_burst: int = Field(default=10, ge=1, le=1000)
    weather_breaker_fail_max: int = Field(default=5, ge=1, le=100)
    weather_breaker_reset_s: Seconds = 30.0
    weather_cell_deg: float = Field(default=0.25, gt=0, le=5)
    weather_cache_ttl_s: Seconds = 1800.0  # a fresh cached forecast is used without calling a provider
    weather_cache_max_age_s: float = Field(default=86400.0, gt=0)  # older cached forecasts are not used
    weather_concurrency: int = Field(default=8, ge=1, le=100)
    model_name: Name = "platform"
    # history read per facility: a week for the seasonal-naive reference, then up to a week of backtest
    history_days: int = Field(default=14, ge=2, le=60)
    stale_after_s: Seconds = 3600.0  # newest rollup older than this -> degraded_stale_data
    facility_concurrency: int = Field(default=4, ge=1, le=64)
    write_batch: int = Field(default=50, ge=1, le=10_000)
