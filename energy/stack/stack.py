"""The whole local stack, built from settings: ``energy stack up|down|status|reset``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from energy.settings import Settings
from energy.settings_paths import PROJECT_ROOT
from energy.stack.servers import (
    InfluxServer,
    KafkaServer,
    MosquittoServer,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    Server,
)

ALERT_RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"


def scrape_targets(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Every process of `energy run` that serves /metrics, as (job, host:port)."""
    from energy.runner import PROCESSES

    ep = settings.endpoints
    return tuple(
        (f"energy-{spec.name}", f"127.0.0.1:{getattr(ep, spec.port_field)}") for spec in PROCESSES if spec.metrics
    )


@dataclass
class ServerStatus:
    name: str
    port: int
    pid: int | None
    running: bool
    answers: bool


class Stack:
    def __init__(self, settings: Settings) -> None:
        from schemas.topics import TOPICS

        root = settings.stack.data_dir
        s = settings
        self.root = root
        self.servers: list[Server] = [
            PostgresServer(
                root=root,
                port=s.postgres.port,
                user=s.postgres.user,
                password=s.postgres.password.get_secret_value(),
                database=s.postgres.database,
            ),
            RedisServer(root=root, port=s.redis.port),
            MosquittoServer(root=root, port=s.mqtt.port),
            InfluxServer(
                root=root,
                port=int(s.influx.url.rsplit(":", 1)[1].split("/")[0]),
                database=s.influx.database,
                retention_policies=(
                    (s.influx.raw_retention_policy, s.influx.raw_retention, True),
                    (s.influx.rollup_retention_policy, s.influx.rollup_retention, False),
                ),
            ),
            KafkaServer(
                root=root,
                port=int(s.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1]),
                topics=tuple((t.name, t.partitions) for t in TOPICS.values()),
            ),
            PrometheusServer(
                root=root,
                port=s.prometheus.port,
                targets=scrape_targets(s),
                rule_files=(ALERT_RULES,),
                scrape_interval_s=s.prometheus.scrape_interval_s,
                evaluation_interval_s=s.prometheus.evaluation_interval_s,
                runbook_base=f"http://127.0.0.1:{s.endpoints.api_port}/runbooks",
            ),
        ]

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def up(self, echo: bool = True) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            outcome = server.start()
            if echo:
                print(f"  {server.name:<10} {server.host}:{server.port:<6} {outcome}", flush=True)

    def down(self, echo: bool = True) -> None:
        for server in reversed(self.servers):
            outcome = server.stop()
            if echo:
                print(f"  {server.name:<10} {outcome}", flush=True)

    def status(self) -> list[ServerStatus]:
        return [ServerStatus(s.name, s.port, s.pid(), s.running(), s.answers()) for s in self.servers]

    def reset(self) -> None:
        self.down(echo=False)
        if self.root.exists():
            shutil.rmtree(self.root)
