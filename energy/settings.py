"""One typed settings object for every service, read from ``ENERGY_*`` environment variables.

Nested groups use ``__`` as delimiter: ``ENERGY_POSTGRES__PORT=55432``. Every default points
at the local stack started by ``energy stack up``. Every value is validated strictly, so a
hostile or mistyped value fails at start with the variable's name instead of later, deep
inside a client library.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, Field, SecretStr, model_validator
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
    SecretPolicy,
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
    password: Annotated[SecretText, SecretPolicy(min_length=16)] = SecretStr("energy")
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
    password: Annotated[SecretText | None, SecretPolicy(min_length=16)] = None
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
    password: Annotated[SecretText | None, SecretPolicy(min_length=16, required=False)] = None
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
    password: Annotated[SecretText | None, SecretPolicy(min_length=16)] = None
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
    sasl_password: Annotated[SecretText | None, SecretPolicy(min_length=16)] = None
    ssl_ca_file: SafePath | None = None  # the system CAs when unset

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Self:
        if self.security_protocol == "SASL_SSL" and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(
                "security_protocol SASL_SSL needs sasl_username and sasl_password "
                "(ENERGY_KAFKA__SASL_USERNAME, ENERGY_KAFKA__SASL_PASSWORD)"
            )
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
    utility_bearer_token: Annotated[SecretText, SecretPolicy(min_length=32)] = SecretStr("local-utility-token")
    utility_hmac_secret: Annotated[SecretText, SecretPolicy(min_length=32)] = SecretStr("local-utility-hmac-secret")


class PrometheusSettings(SettingsGroup):
    """The local Prometheus that `energy stack up` starts (production runs its own)."""

    port: Port = 59090
    scrape_interval_s: Seconds = 5.0
    evaluation_interval_s: Seconds = 5.0


class LogSettings(SettingsGroup):
    level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"
    json_logs: bool = True
    # Local trace record: one JSON line per finished span (energy run sets one file per process).
    # Export to a collector uses the standard OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_* variables.
    traces_file: SafePath | None = None


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
    prometheus: PrometheusSettings = PrometheusSettings()
    endpoints: ServiceEndpoints = ServiceEndpoints()
    seed: SeedSettings = SeedSettings()
    log: LogSettings = LogSettings()
    ingestion: IngestionSettings = IngestionSettings()
    aggregation: AggregationSettings = AggregationSettings()
    forecast: ForecastSettings = ForecastSettings()
    dr: DrSettings = DrSettings()
    api: ApiSettings = ApiSettings()

    @model_validator(mode="after")
    def _secure_outside_a_laptop(self) -> Self:
        if self.environment in PRODUCTION_ENVIRONMENTS:
            problems = insecure_settings(self)
            if problems:
                # Not a ValueError: pydantic lets it through unwrapped, so the CLI prints one line per problem.
                raise InsecureSettingsError(self.environment, problems)
        return self


# --- secure defaults (docs/decisions/0009-secure-defaults.md) ----------------------------------

PRODUCTION_ENVIRONMENTS = ("staging", "production")


class InsecureSettingsError(Exception):
    """Staging/production settings that still hold a development secret or skip TLS."""

    def __init__(self, environment: str, problems: list[str]) -> None:
        self.environment = environment
        self.problems = problems
        super().__init__("\n".join(problems))


def variable_name(path: tuple[str, ...]) -> str:
    """``ENERGY_API__TOKEN_SECRET`` for ``("api", "token_secret")``."""
    return "ENERGY_" + "__".join(part.upper() for part in path)


def secret_fields(
    model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], SecretPolicy, Any]]:
    """Every secret setting: (path, policy, development default), found by its ``SecretPolicy``."""
    out: list[tuple[tuple[str, ...], SecretPolicy, Any]] = []
    for name, info in (model or Settings).model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(secret_fields(annotation, (*prefix, name)))
            continue
        policy = next((m for m in info.metadata if isinstance(m, SecretPolicy)), None)
        if policy is not None:
            out.append(((*prefix, name), policy, info.default))
    return out


def _value_at(settings: BaseModel, path: tuple[str, ...]) -> Any:
    obj: Any = settings
    for part in path:
        obj = getattr(obj, part)
    return obj


def insecure_settings(settings: Settings) -> list[str]:
    """Pure: what stops these settings from being used outside a laptop, one line per setting.

    A secret is refused when it equals any development default, is shorter than its policy's
    minimum, or is missing; a dependency is refused when its connection is not encrypted.
    """
    fields = secret_fields()
    dev_values = {d.get_secret_value() for _, _, d in fields if isinstance(d, SecretStr)}
    problems: list[str] = []
    for path, policy, _default in fields:
        if policy.local_only:
            continue
        name = variable_name(path)
        value = _value_at(settings, path)
        if value is None:
            if policy.required:
                problems.append(f"{name} is not set; {settings.environment} needs it from the secret store")
            continue
        secret = value.get_secret_value()
        if secret in dev_values:
            problems.append(f"{name} holds a development default from the repository; set the real secret")
        elif len(secret) < policy.min_length:
            problems.append(f"{name} is {len(secret)} characters long; at least {policy.min_length} are required")
    if settings.postgres.ssl_mode == "disable":
        problems.append("ENERGY_POSTGRES__SSL_MODE is disable; use require or verify-full (TLS to PostgreSQL)")
    if not settings.redis.tls:
        problems.append("ENERGY_REDIS__TLS is false; set it to true (TLS to Redis)")
    if settings.kafka.security_protocol != "SASL_SSL":
        problems.append(
            f"ENERGY_KAFKA__SECURITY_PROTOCOL is {settings.kafka.security_protocol}; use SASL_SSL (TLS and a user)"
        )
    if not settings.influx.url.startswith("https://"):
        problems.append("ENERGY_INFLUX__URL is not https; InfluxDB must be reached over TLS")
    if settings.ingestion.mqtt_enabled and not settings.mqtt.tls:
        problems.append("ENERGY_MQTT__TLS is false while ENERGY_INGESTION__MQTT_ENABLED is true; set it to true")
    for field in ("weather_primary_url", "weather_secondary_url"):
        if not getattr(settings.forecast, field).startswith("https://"):
            problems.append(f"ENERGY_FORECAST__{field.upper()} is not https; weather providers must use TLS")
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
