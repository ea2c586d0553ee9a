"""Settings of the ingestion service (``ENERGY_INGESTION__*``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from energy.config_types import Count, Name, Seconds, SecretPolicy, SecretText, SettingsGroup
from schemas.topics import READINGS, READINGS_DLQ

Fraction = Annotated[float, Field(gt=0, le=100)]


class MeterTypeLimits(SettingsGroup):
    """Plausible ranges for one meter type; a reading outside them is kept but flagged as an anomaly."""

    max_power_of_rating: Fraction = 1.2  # active power above rated_kw x this -> power_above_rating
    allow_negative_power: bool = False  # main meters with on-site generation may export
    voltage_min_of_nominal: Fraction = 0.85
    voltage_max_of_nominal: Fraction = 1.15
    max_current_of_rated: Fraction = 1.5  # rated current = rated_kw * 1000 / nominal_voltage_v


def _default_limits() -> dict[str, MeterTypeLimits]:
    return {
        "main": MeterTypeLimits(allow_negative_power=True),
        "submeter": MeterTypeLimits(),
        "hvac": MeterTypeLimits(max_power_of_rating=1.3),
        "lighting": MeterTypeLimits(),
        "plug": MeterTypeLimits(),
    }


class IngestionSettings(SettingsGroup):
    @property
    def mqtt_session_id(self) -> str:
        """The MQTT client id of this replica (its persistent session)."""
        return f"{self.mqtt_client_id}-{self.mqtt_replica_id}" if self.mqtt_replica_id else self.mqtt_client_id

    def mqtt_subscription(self, topic_prefix: str) -> str:
        topic = f"{topic_prefix}/#"
        return f"$share/{self.mqtt_shared_group}/{topic}" if self.mqtt_shared_group else topic

    buffer_size: Count = 10_000  # readings held between MQTT/HTTP and Kafka; full -> MQTT unacked, HTTP 503
    producer_linger_ms: int = 5
    publish_timeout_s: Seconds = 5.0
    registry_refresh_s: Seconds = 30.0
    dedup_window: Count = 100_000  # reading ids remembered to drop exact repeats early
    dedup_enabled: bool = True
    publisher_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    publish_chunk_readings: Count = 2_000
    # A chunk waits this long for company before it goes to Kafka: each chunk costs a delivery call, a
    # produce request and a write of PUBACKs whatever its size (decision 1050).
    publisher_linger_ms: Annotated[float, Field(ge=0, le=100)] = 10.0
    max_message_bytes: Count = 4_000_000
    # A reading stamped further than this into the future is rejected (reason timestamp_in_future):
    # clocks drift, but a far-future time would poison lateness, registers and window arithmetic.
    future_tolerance_s: Seconds = 300.0
    mqtt_client_id: Name = "energy-ingestion"
    # Scale-out (decision 0210): each replica has its own persistent session, client id
    # "<mqtt_client_id>-<mqtt_replica_id>" (the pod name in Kubernetes), and the replicas share
    # one subscription "$share/<mqtt_shared_group>/<prefix>/#" so the broker hands each message
    # to one of them. None: the plain client id / a non-shared subscription (one replica only).
    mqtt_replica_id: Name | None = None
    mqtt_shared_group: Name | None = "ingestion"
    mqtt_qos: Annotated[int, Field(ge=0, le=1)] = 1
    readings_topic: Name = READINGS
    dlq_topic: Name = READINGS_DLQ
    # Production: AWS IoT Core forwards raw MQTT payloads to this Kafka topic (docs/decisions/0601); set it to
    # consume them there instead of (or beside) MQTT. None: no Kafka source.
    raw_topic: Name | None = None
    raw_group_id: Name = "ingestion-raw"
    mqtt_enabled: bool = True
    http_wait_s: Seconds = 10.0  # how long POST /v1/readings waits for Kafka acks before answering 503
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 2
    # Upserted at start in local/test only; never read in staging/production.
    dev_gateway_key: Annotated[SecretText, SecretPolicy(min_length=16, local_only=True)] = SecretStr(
        "dev-gateway-key-local"
    )
    limits: dict[str, MeterTypeLimits] = Field(default_factory=_default_limits)
