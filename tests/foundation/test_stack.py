"""The local stack: real servers start idempotently, answer, report clearly, and stop cleanly."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from energy.stack import (
    InfluxServer,
    KafkaServer,
    MissingPackageError,
    MosquittoServer,
    PortTakenError,
    PostgresServer,
    RedisServer,
    Server,
    Stack,
)
from energy.stack.process import pid_alive
from energy.stack.servers import HOST

ALL = [PostgresServer, RedisServer, MosquittoServer, InfluxServer, KafkaServer]


def test_shared_stack_answers_on_every_port(stack: Stack) -> None:
    rows = stack.status()
    assert [r.name for r in rows] == ["postgres", "redis", "mosquitto", "influxdb", "kafka", "prometheus"]
    for row in rows:
        assert row.running and row.answers, row
        assert row.port >= 50000  # non-default ports, never a user's own 5432/6379/1883/8086/9092


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_private_server_starts_is_idempotent_and_stops_leaving_no_process(
    cls: type[Server], private_server: Callable[..., Server]
) -> None:
    server = private_server(cls)
    assert server.answers()
    pid = server.pid()
    assert server.start() == "already running"
    assert server.pid() == pid
    assert server.stop() == "stopped"
    assert not pid_alive(pid)
    assert not server.answers()
    assert server.stop() == "not running"


def test_a_taken_port_gives_a_clear_error(private_server: Callable[..., Server], port: int, settings) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((HOST, port))
        squatter.listen()
        server = RedisServer(root=settings.stack.data_dir / "private" / f"squat-{port}", port=port)
        with pytest.raises(PortTakenError, match=f"port {HOST}:{port} is taken"):
            server.start()


def test_a_missing_package_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, settings, port: int) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    server = RedisServer(root=settings.stack.data_dir / "private" / f"missing-{port}", port=port)
    monkeypatch.setattr("energy.stack.servers._which", lambda *names: None)
    with pytest.raises(MissingPackageError, match="install the Debian package 'redis-server'"):
        server.start()


def test_influx_has_database_and_retention_policies(stack: Stack) -> None:
    influx = stack.server("influxdb")
    assert isinstance(influx, InfluxServer)
    body = influx.query('SHOW RETENTION POLICIES ON "energy"')
    assert '"raw_90d","2160h0m0s"' in body.replace("[", "").replace("]", "")
    assert '"rollups_2y","17520h0m0s"' in body.replace("[", "").replace("]", "")


async def test_kafka_topics_exist_with_their_partition_counts(stack: Stack, settings) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas.topics import TOPICS

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for topic in TOPICS.values():
            partitions = await producer.partitions_for(topic.name)
            assert len(partitions) == topic.partitions, topic.name
    finally:
        await producer.stop()


def test_paused_server_stops_answering_and_resumes(private_server: Callable[..., Server]) -> None:
    server = private_server(RedisServer)
    server.pause()
    assert not server.answers()
    server.resume()
    assert server.answers()


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    from energy.stack.process import _ephemeral_range, free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= p < _ephemeral_range()[0] for p in ports)
