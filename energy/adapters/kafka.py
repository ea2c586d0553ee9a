"""aiokafka producer/consumer factories and the one way we put an event on a topic.

The local broker (Tansu) does not support idempotent producers or transactions, so
correctness never depends on them: consumers are at-least-once and sinks are idempotent.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from energy.adapters.tls import client_ssl_context
from energy.observability import tracing
from energy.settings import KafkaSettings
from schemas.envelope import Envelope


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the broker's transport security (TLS, SASL/SCRAM)."""
    if settings.security_protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    opts: dict[str, Any] = {
        "security_protocol": settings.security_protocol,
        "ssl_context": client_ssl_context(settings.ssl_ca_file),
    }
    if settings.security_protocol == "SASL_SSL":
        assert settings.sasl_username is not None and settings.sasl_password is not None  # settings validate it
        opts |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    return opts


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
        "max_batch_size": 1_048_576,
        "request_timeout_ms": int(settings.request_timeout_s * 1000),
        "compression_type": None,
        **security_options(settings),
    }
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


def make_consumer(settings: KafkaSettings, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": int(settings.request_timeout_s * 1000) + 30_000,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "max_poll_records": 5_000,
        **security_options(settings),
    }
    opts.update(overrides)
    return AIOKafkaConsumer(*topics, **opts)


def event_headers(event: Envelope[Any], trace: tracing.TraceContext | None = None) -> list[tuple[str, bytes]]:
    return tracing.kafka_headers(trace, {"event_type": event.event_type, "schema_version": str(event.schema_version)})


async def send_event(
    producer: AIOKafkaProducer,
    topic: str,
    key: str | None,
    event: Envelope[Any],
    trace: tracing.TraceContext | None = None,
) -> Any:
    """Send and wait for the broker's ack; the caller bounds it with a timeout."""
    return await producer.send_and_wait(
        topic, event.to_bytes(), key=key.encode() if key else None, headers=event_headers(event, trace)
    )
