"""Production transport security: every client speaks TLS (verified against a CA) and
authenticates when its settings say so -- against real servers configured that way.

Kafka: the local broker (Tansu) has no usable TLS/SASL listener here, so its options are checked
as the aiokafka and Faust arguments they become (both built from the same settings).
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import redis.exceptions
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from aggregation.faust_worker import broker_credentials
from energy.adapters.influx import InfluxClient, InfluxError
from energy.adapters.kafka import security_options
from energy.adapters.mqtt import make_mqtt_client
from energy.adapters.postgres import create_pool
from energy.adapters.redis import make_redis
from energy.settings import KafkaSettings, Settings
from energy.stack.servers import PostgresServer, Server
from tests.foundation.secure_servers import (
    PASSWORD,
    Pki,
    TlsInfluxServer,
    TlsMosquittoServer,
    TlsRedisServer,
    copy_pki,
    make_pki,
)

on_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    return make_pki(tmp_path / "other", name="someone-else").ca


# --- Kafka (MSK: SASL/SCRAM over TLS) ---------------------------------------------------------


def test_kafka_plaintext_is_the_local_default_and_sends_no_credentials() -> None:
    assert security_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(KafkaSettings()) is None


def test_kafka_sasl_ssl_gives_aiokafka_and_faust_the_same_verified_scram_connection(pki: Pki) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_username="aggregation",
        sasl_password=SecretStr(PASSWORD),
        ssl_ca_file=pki.ca,
    )
    plain = security_options(kafka)
    via_faust = dict(credentials_to_aiokafka_auth(broker_credentials(kafka)))
    for opts in (plain, via_faust):
        assert opts["security_protocol"] == "SASL_SSL"
        assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
        assert opts["sasl_plain_username"] == "aggregation" and opts["sasl_plain_password"] == PASSWORD
        context = opts["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert any("test-ca" in str(c.get("subject")) for c in context.get_ca_certs())


def test_kafka_tls_without_sasl(pki: Pki) -> None:
    opts = security_options(KafkaSettings(security_protocol="SSL", ssl_ca_file=pki.ca))
    assert opts["security_protocol"] == "SSL" and "sasl_mechanism" not in opts
    assert (
        dict(credentials_to_aiokafka_auth(broker_credentials(KafkaSettings(security_protocol="SSL"))))[
            "security_protocol"
        ]
        == "SSL"
    )


def test_kafka_sasl_without_credentials_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGY_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="sasl_username and sasl_password"):
        Settings()


# --- PostgreSQL (RDS: verify-full) ------------------------------------------------------------


async def ssl_in_use(pool: Any) -> bool:
    return bool(await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))


@on_loop
async def test_postgres_verify_full_encrypts_and_checks_the_server_certificate(
    settings: Settings, private_server: Callable[..., Server], pki: Pki, other_ca: Path, tmp_path: Path
) -> None:
    # PostgreSQL runs as its own user: its key lives under the stack folder, which it can traverse.
    folder = settings.stack.data_dir / "private" / f"pg-tls-{tmp_path.name[-12:]}"
    try:
        own = copy_pki(pki, folder, owner="postgres")
        server = private_server(
            PostgresServer, extra_options=f"-c ssl=on -c ssl_cert_file={own.cert} -c ssl_key_file={own.key}"
        )
        await check_postgres_tls(settings, server.port, pki, other_ca)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def check_postgres_tls(settings: Settings, port: int, pki: Pki, other_ca: Path) -> None:
    pg = settings.postgres.model_copy(update={"port": port})

    verified = await create_pool(pg.model_copy(update={"ssl_mode": "verify-full", "ssl_root_cert": pki.ca}))
    plain = await create_pool(pg)
    try:
        assert await ssl_in_use(verified)
        assert not await ssl_in_use(plain)  # ssl_mode disable (the local default)
    finally:
        await verified.close()
        await plain.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await create_pool(pg.model_copy(update={"ssl_mode": "verify-full", "ssl_root_cert": other_ca}))


# --- Redis (ElastiCache: TLS + AUTH token) ------------------------------------------------------


@on_loop
async def test_redis_tls_with_auth_token(
    settings: Settings, private_server: Callable[..., Server], pki: Pki, other_ca: Path
) -> None:
    server = private_server(TlsRedisServer, pki=pki)
    secure = settings.redis.model_copy(
        update={
            "port": server.port,
            "tls": True,
            "tls_ca_file": pki.ca,
            "password": SecretStr(PASSWORD),
            "timeout_s": 2.0,
        }
    )
    client = make_redis(secure)
    try:
        assert await client.ping()
        await client.set("tls-check", "1")
        assert await client.get("tls-check") == b"1"
    finally:
        await client.aclose()

    for wrong, error in [
        ({"password": SecretStr("wrong")}, redis.exceptions.AuthenticationError),
        ({"password": None}, redis.exceptions.AuthenticationError),
        ({"tls_ca_file": other_ca}, redis.exceptions.ConnectionError),
        ({"tls": False}, redis.exceptions.ConnectionError),
    ]:
        bad = make_redis(secure.model_copy(update=wrong))
        try:
            with pytest.raises(error):
                await bad.ping()
        finally:
            await bad.aclose()


# --- MQTT (a broker with TLS and passwords) -----------------------------------------------------


@on_loop
async def test_mqtt_tls_with_password_round_trip(
    settings: Settings, private_server: Callable[..., Server], pki: Pki, other_ca: Path
) -> None:
    server = private_server(TlsMosquittoServer, pki=pki)
    secure = settings.mqtt.model_copy(
        update={
            "port": server.port,
            "tls": True,
            "tls_ca_file": pki.ca,
            "username": "ingestion",
            "password": SecretStr(PASSWORD),
        }
    )
    async with make_mqtt_client(secure, identifier="tls-sub") as sub, make_mqtt_client(secure) as pub:
        await sub.subscribe("meters/tls/#", qos=1)
        await pub.publish("meters/tls/m1", b"reading", qos=1)
        async for message in sub.messages:
            assert message.payload == b"reading"
            break

    for wrong in ({"password": SecretStr("wrong")}, {"username": None, "password": None}, {"tls_ca_file": other_ca}):
        with pytest.raises(aiomqtt.MqttError):
            async with make_mqtt_client(secure.model_copy(update=wrong)):
                pass


# --- InfluxDB (Timestream for InfluxDB: https + user) -------------------------------------------


@on_loop
async def test_influx_https_with_user_and_password(
    settings: Settings, private_server: Callable[..., Server], pki: Pki, other_ca: Path
) -> None:
    server = private_server(TlsInfluxServer, pki=pki)
    secure = settings.influx.model_copy(
        update={
            "url": f"https://127.0.0.1:{server.port}",
            "username": "energy",
            "password": SecretStr(PASSWORD),
            "tls_ca_file": pki.ca,
        }
    )
    async with InfluxClient(secure, breaker_name="influx-tls-test") as client:
        rows = await client.query("SHOW DATABASES")
        assert "energy" in str(rows)

    async with InfluxClient(
        secure.model_copy(update={"password": SecretStr("wrong")}), breaker_name="influx-tls-test-wrong"
    ) as wrong_password:
        with pytest.raises(InfluxError, match=r"401|authorization failed"):
            await wrong_password.query("SHOW DATABASES")
    async with InfluxClient(
        secure.model_copy(update={"tls_ca_file": other_ca}), breaker_name="influx-tls-test-ca"
    ) as wrong_ca:
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await wrong_ca.query("SHOW DATABASES")
