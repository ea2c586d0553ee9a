"""docker-compose.yml (cannot run here: no Docker engine) parses, runs the production engines
(Apache Kafka in KRaft mode, InfluxDB, PostgreSQL, Redis, Mosquitto) on the local-stack
ports of energy/settings.py, and starts every service with ENERGY_* variables that are real
Settings fields with valid values."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
import yaml

from energy.runner import PROCESSES
from energy.settings import Settings
from tests.infra.conftest import ROOT
from tests.infra.settings_env import field_path, settings_from, value_at

# The compose file is static: compare it with the defaults, whatever ENERGY_* variables this run has.
with mock.patch.dict(os.environ, {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_")}, clear=True):
    DEFAULTS = Settings()
SERVICES = ("api", "ingestion", "aggregation", "forecast", "dr-coordinator")
# compose service -> (host port in settings, container port)
ENGINES = {
    "postgres": (DEFAULTS.postgres.port, 5432),
    "redis": (DEFAULTS.redis.port, 6379),
    "mosquitto": (DEFAULTS.mqtt.port, 1883),
    "influxdb": (int(DEFAULTS.influx.url.rsplit(":", 1)[1]), 8086),
    "kafka": (int(DEFAULTS.kafka.bootstrap_servers.rsplit(":", 1)[1]), 59092),
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for spec in service.get("ports", []):
        host_ip, host_port, container_port = spec.split(":")
        out.append((host_ip, int(host_port), int(container_port)))
    return out


def test_compose_runs_every_engine_and_every_service(compose: dict[str, Any]) -> None:
    assert set(ENGINES) | set(SERVICES) <= set(compose["services"])
    images = {name: compose["services"][name]["image"] for name in ENGINES}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["influxdb"].startswith("influxdb:1.8") or images["influxdb"].startswith("influxdb:2")
    assert images["postgres"].startswith("postgres:15")
    assert images["redis"].startswith("redis:7")
    assert images["mosquitto"].startswith("eclipse-mosquitto:2")


def test_kafka_runs_in_kraft_mode_without_zookeeper(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert not any("ZOOKEEPER" in k for k in env)
    assert "zookeeper" not in compose["services"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from schemas/topics.py
    assert "schemas.topics import TOPICS" in " ".join(compose["services"]["kafka-topics"]["command"])


def test_engines_publish_the_local_stack_ports_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, (host_port, container_port) in ENGINES.items():
        published = _published(compose["services"][name])
        assert ("127.0.0.1", host_port, container_port) in published, f"{name}: {published}"
        assert all(ip == "127.0.0.1" for ip, _, _ in published), name
    kafka_env = compose["services"]["kafka"]["environment"]
    assert f"EXTERNAL://127.0.0.1:{ENGINES['kafka'][0]}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


def test_influxdb_backup_rpc_port_matches_the_native_stack_convention(compose: dict[str, Any]) -> None:
    http_port = ENGINES["influxdb"][0]
    assert ("127.0.0.1", http_port + 2, 8088) in _published(compose["services"]["influxdb"])


def test_influxdb_init_creates_the_retention_policies_of_the_settings() -> None:
    iql = (ROOT / "docker" / "influxdb" / "init.iql").read_text()
    influx = DEFAULTS.influx
    assert f'CREATE DATABASE "{influx.database}"' in iql
    assert f'"{influx.raw_retention_policy}" ON "{influx.database}" DURATION {influx.raw_retention}' in iql
    assert f'"{influx.rollup_retention_policy}" ON "{influx.database}" DURATION {influx.rollup_retention}' in iql
    raw_line = next(line for line in iql.splitlines() if influx.raw_retention_policy in line)
    assert raw_line.rstrip().endswith("DEFAULT")


def test_services_use_the_runner_commands_and_settings_ports(compose: dict[str, Any]) -> None:
    for proc in PROCESSES:
        if proc.name not in SERVICES:
            continue
        service = compose["services"][proc.name]
        assert service["command"] == ["energy", *proc.args], proc.name
        port = getattr(DEFAULTS.endpoints, proc.port_field)
        assert _published(service) == [("127.0.0.1", port, port)], proc.name
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_service_variables_are_settings_fields_pointing_at_compose_services(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert all(k.startswith("ENERGY_") for k in env)
        for variable in env:
            field_path(variable)
        settings = settings_from(env)
        for variable, raw in env.items():
            value = value_at(settings, field_path(variable))
            shown = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            assert shown.lower() == raw.lower(), (variable, raw, shown)
        assert settings.postgres.host in compose["services"]
        assert settings.redis.host in compose["services"]
        assert settings.mqtt.host in compose["services"]
        assert settings.kafka.bootstrap_servers.split(":")[0] in compose["services"]
        assert settings.influx.url.split("//")[1].split(":")[0] in compose["services"]
        assert settings.stack.bind_host == "0.0.0.0"


def test_image_installs_the_project_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile
    assert "pip install ." in dockerfile
    assert "USER 10001" in dockerfile
    for package in ("energy", "schemas", "ingestion", "aggregation", "forecast", "dr_coordinator", "api"):
        assert f"COPY {package} {package}" in dockerfile, package
    conf = (ROOT / "docker" / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 1883" in conf and "persistence true" in conf


def test_services_have_healthchecks_on_their_healthz(compose: dict[str, Any]) -> None:
    for proc in PROCESSES:
        if proc.name in SERVICES:
            port = getattr(DEFAULTS.endpoints, proc.port_field)
            check = " ".join(compose["services"][proc.name]["healthcheck"]["test"])
            assert f"http://127.0.0.1:{port}/healthz" in check, proc.name
