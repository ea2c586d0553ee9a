"""One typed settings object for every service, read from ``ENERGY_*`` environment variables.

Nested groups use ``__`` as delimiter: ``ENERGY_POSTGRES__PORT=55432``. Every default points
at the local stack started by ``energy stack up``. Every value is validated strictly, so a
hostile or mistyped value fails at start with the variable's name instead of later, deep
inside a client library.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aggregation.config import AggregationSettings
from api.config import ApiSettings
from dr_coordinator.config import DrSettings
from energy.config_types import (
    Count,
    Host,
    HttpUrl,
    Name,
    Port,
    SafePath,
    Seconds,
    SecretText,
    SettingsGroup,
    validate_host,
)
from energy.settings_paths import PROJECT_ROOT
from forecast.config import ForecastSettings
from ingestion.config import IngestionSettings


class StackSettings(SettingsGroup):
    data_dir: SafePath = PROJECT_ROOT / ".stack"
    bind_host: Host = "127.0.0.1"


class PostgresSettings(SettingsGroup):
    host: Host = "127.0.0.1"
    port: Port = 55432
    user: Name = "energy"
    password: SecretText = SecretStr("energy")
    database: Name = "energy"
    pool_min: Count = 1
    pool_max: Count = 10
    connect_timeout_s: Seconds = 2.0
    command_timeout_s: Seconds = 2.0
    # TLS to the server (RDS: verify-full with the RDS CA bundle). "require" encrypts without
    # checking the certificate, like libpq's sslmode=require.
    ssl_mode: Literal["disable", "require", "verify-full"] = "disable"
    ssl_root_cert: SafePath | None = None  # CA bundle for verify-full; the system CAs when unset

    def dsn(self) -> str:
        pw = self.password.get_secret_value()
        from urllib.parse import quote

        return f"postgresql://{self.user}:{quote(pw, safe='')}@{self.host}:{self.port}/{self.database}"


class RedisSettings(SettingsGroup):
    host: Host = "127.0.0.1"
    port: Port = 56379
    db: Annotated[int, Field(ge=0, le=15)] = 0
    timeout_s: Seconds = 0.1
    # ElastiCache: TLS in transit and an AUTH token (or an RBAC user and its password).
    username: Name | None = None
    password: SecretText | None = None
    tls: bool = False
    tls_ca_file: SafePath | None = None  # the system CAs when unset

    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class MqttSettings(SettingsGroup):
    host: Host = "127.0.0.1"
    port: Port = 51883
    topic_prefix: Name = "meters"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Seconds = 5.0
    # A production broker: username/password over TLS (AWS IoT Core uses client certificates).
    username: Name | None = None
    password: SecretText | None = None
    tls: bool = False
    tls_ca_file: SafePath | None = None
    tls_cert_file: SafePath | None = None  # client certificate (mutual TLS)
    tls_key_file: SafePath | None = None


class InfluxSettings(SettingsGroup):
    url: HttpUrl = "http://127.0.0.1:58086"
    database: Name = "energy"
    raw_retention_policy: Name = "raw_90d"
    raw_retention: Annotated[str, Field(pattern=r"^\d+[dhw]$")] = "90d"
    rollup_retention_policy: Name = "rollups_2y"
    rollup_retention: Annotated[str, Field(pattern=r"^\d+[dhw]$")] = "730d"
    write_timeout_s: Seconds = 5.0
    query_timeout_s: Seconds = 5.0
    # Timestream for InfluxDB / InfluxDB with auth-enabled: v1 API user (HTTP basic auth over https).
    username: Name | None = None
    password: SecretText | None = None
    tls_ca_file: SafePath | None = None  # for https URLs; the system CAs when unset

    @property
    def raw_retention_s(self) -> float:
        """How long raw points live: readings older than this cannot be stored (InfluxDB drops them)."""
        return float(int(self.raw_retention[:-1]) * {"h": 3600, "d": 86_400, "w": 604_800}[self.raw_retention[-1]])


class KafkaSettings(SettingsGroup):
    bootstrap_servers: Annotated[str, AfterValidator(lambda v: ",".join(validate_host(h) for h in v.split(",")))] = (
        "127.0.0.1:59092"
    )
    client_id: Name = "energy"
    request_timeout_s: Seconds = 5.0
    produce_timeout_s: Seconds = 5.0
    default_partitions: Annotated[int, Field(ge=1, le=256)] = 6
    # MSK: SASL/SCRAM over TLS (Terraform: infra/terraform/modules/msk). PLAINTEXT is local only.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: Name | None = None
    sasl_password: SecretText | None = None
    ssl_ca_file: SafePath | None = None  # the system CAs when unset

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Self:
        if self.security_protocol == "SASL_SSL" and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError("security_protocol SASL_SSL needs sasl_username and sasl_password")
        return self


class ServiceEndpoints(SettingsGroup):
    """Where each of our own processes listens (HTTP API, health and metrics)."""

    api_host: Host = "127.0.0.1"
    api_port: Port = 58000
    ingestion_port: Port = 58001
    aggregation_port: Port = 58002
    forecast_port: Port = 58003
    dr_coordinator_port: Port = 58004
    bms_sim_port: Port = 58101
    utility_sim_port: Port = 58102
    weather_sim_port: Port = 58103
    meter_sim_port: Port = 58104


class SeedSettings(SettingsGroup):
    facilities: Annotated[int, Field(ge=1, le=10_000)] = 20
    meters_per_facility: Annotated[int, Field(ge=1, le=1000)] = 10
    utility_id: Name = "util-sim"
    utility_bearer_token: SecretText = SecretStr("local-utility-token")
    utility_hmac_secret: SecretText = SecretStr("local-utility-hmac-secret")


class LogSettings(SettingsGroup):
    level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"
    json_logs: bool = True


class Settings(BaseSettings):
    """Everything configurable, in one place. Build it once per process via :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="ENERGY_", env_nested_delimiter="__", extra="ignore", frozen=True)

    environment: Annotated[str, Field(pattern=r"^(local|test|staging|production)$")] = "local"
    stack: StackSettings = StackSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    kafka: KafkaSettings = KafkaSettings()
    endpoints: ServiceEndpoints = ServiceEndpoints()
    seed: SeedSettings = SeedSettings()
    log: LogSettings = LogSettings()
    ingestion: IngestionSettings = IngestionSettings()
    aggregation: AggregationSettings = AggregationSettings()
    forecast: ForecastSettings = ForecastSettings()
    dr: DrSettings = DrSettings()
    api: ApiSettings = ApiSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
