"""Settings of the REST API (``ENERGY_API__*``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import AwareDatetime, Field, SecretStr, model_validator

from energy.config_types import Count, Name, Seconds, SecretPolicy, SecretText, SettingsGroup


class ApiSettings(SettingsGroup):
    current_cache_ttl_s: Seconds = 10.0
    # Bearer tokens (docs/decisions/0009-secure-defaults.md): short-lived, HS256, signed with the
    # current key and carrying its id (`kid`); during a rotation window the previous key still
    # verifies tokens it signed, until token_previous_until.
    token_ttl_s: Seconds = 900.0
    token_secret: Annotated[SecretText, SecretPolicy(min_length=32)] = SecretStr("local-dev-token-secret-change-me")
    token_key_id: Name = "dev"
    token_previous_secret: Annotated[SecretText | None, SecretPolicy(min_length=32, required=False)] = None
    token_previous_key_id: Name | None = None
    token_previous_until: AwareDatetime | None = None
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

    @model_validator(mode="after")
    def _rotation_window_is_complete(self) -> Self:
        previous = (self.token_previous_secret, self.token_previous_key_id, self.token_previous_until)
        if any(v is not None for v in previous) and any(v is None for v in previous):
            raise ValueError(
                "token_previous_secret, token_previous_key_id and token_previous_until go together (a rotation window)"
            )
        if self.token_previous_key_id is not None and self.token_previous_key_id == self.token_key_id:
            raise ValueError("token_previous_key_id must differ from token_key_id")
        return self

    def previous_key_valid(self, now: datetime) -> bool:
        return self.token_previous_until is not None and now < self.token_previous_until
