"""Settings of the REST API (``ENERGY_API__*``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from energy.config_types import Count, Seconds, SecretText, SettingsGroup


class ApiSettings(SettingsGroup):
    current_cache_ttl_s: Seconds = 10.0
    token_ttl_s: Seconds = 3600.0
    token_secret: SecretText = SecretStr("local-dev-token-secret-change-me")
    rate_limit_per_s: Seconds = 50.0
    rate_limit_burst: Count = 200
    # Stale-while-revalidate: a cached current value older than the TTL but younger than this is
    # served at once while one background query refreshes it.
    current_stale_max_s: Seconds = 60.0
    # How far back "current" looks for each meter's latest reading.
    current_lookback_s: Annotated[int, Field(ge=60, le=86_400)] = 900
    # Redis keeps a current value this long, so it can be served as last known while InfluxDB is down.
    current_keep_s: Annotated[int, Field(ge=60, le=30 * 86_400)] = 86_400
    current_query_timeout_s: Seconds = 2.0
    range_query_timeout_s: Seconds = 5.0
    # Identical range queries (e.g. every viewer of a facility's dashboard) share one InfluxDB query
    # and its rendered answer for this long.
    range_cache_ttl_s: Seconds = 5.0
    export_query_timeout_s: Seconds = 30.0
    export_page_rows: Annotated[int, Field(ge=100, le=100_000)] = 10_000
    export_max_facilities: Annotated[int, Field(ge=1, le=1000)] = 50
    range_max_rows: Annotated[int, Field(ge=10, le=100_000)] = 10_000
    principal_cache_ttl_s: Seconds = 5.0
    login_rate_per_s: Seconds = 2.0
    login_burst: Count = 10
    # Failed authentications per client address (bad tokens, guessed API keys).
    auth_failure_rate_per_s: Seconds = 5.0
    auth_failure_burst: Count = 100
