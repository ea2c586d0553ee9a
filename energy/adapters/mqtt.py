"""aiomqtt client factory: the broker's address, credentials and TLS from settings."""

from __future__ import annotations

from typing import Any

import aiomqtt

from energy.adapters.tls import client_ssl_context
from energy.settings import MqttSettings


def make_mqtt_client(settings: MqttSettings, **options: Any) -> aiomqtt.Client:
    """``options``: per-client aiomqtt arguments (identifier, clean_session, logger...)."""
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        tls_context=(
            client_ssl_context(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
            if settings.tls
            else None
        ),
        keepalive=settings.keepalive_s,
        timeout=settings.connect_timeout_s,
        **options,
    )
