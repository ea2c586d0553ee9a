"""Settings of the REST API (``ENERGY_API__*``)."""

from __future__ import annotations

from pydantic import SecretStr

from energy.config_types import Count, Seconds, SecretText, SettingsGroup


class ApiSettings(SettingsGroup):
    current_cache_ttl_s: Seconds = 10.0
    token_ttl_s: Seconds = 3600.0
    token_secret: SecretText = SecretStr("local-dev-token-secret-change-me")
    rate_limit_per_s: Seconds = 50.0
    rate_limit_burst: Count = 200
