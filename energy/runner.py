"""``energy run``: start every service and simulator as background processes (pid files in
``.stack/run``), wait until each answers ``/healthz``, print where to look, then start the training of
the first forecast model on the seeded history in the background (``energy first-model``, decision 0951).

A process is listed here once; it is started only when its module exists, so the system
grows as services land. Running it twice is harmless: live processes are left alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from energy.settings import Settings, get_settings
from energy.stack.process import pid_alive, read_pid, spawn_detached, terminate, terminate_group, wait_until


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str  # started only if this module exists
    args: tuple[str, ...]  # arguments to the `energy` CLI
    port_field: str  # ServiceEndpoints field with its HTTP port
    what: str
    path: str = "/"
    metrics: bool = False  # serves Prometheus /metrics (scraped by the local Prometheus)


PROCESSES: tuple[ProcessSpec, ...] = (
    ProcessSpec("weather-sim", "sim.weather", ("sim", "weather"), "weather_sim_port", "weather provider simulator"),
    ProcessSpec("bms-sim", "sim.bms", ("sim", "bms"), "bms_sim_port", "BMS SOAP simulator (WSDL)", "/bms/fac-001?wsdl"),
    ProcessSpec(
        "utility-sim", "sim.utility", ("sim", "utility"), "utility_sim_port", "utility OpenADR 3 VTN simulator"
    ),
    ProcessSpec(
        "ingestion", "ingestion.service", ("ingestion", "run"), "ingestion_port", "MQTT/HTTP ingestion", metrics=True
    ),
    ProcessSpec(
        "aggregation", "aggregation.worker", ("aggregation", "run"), "aggregation_port", "rollup worker", metrics=True
    ),
    ProcessSpec("forecast", "forecast.service", ("forecast", "run"), "forecast_port", "forecast service", metrics=True),
    ProcessSpec(
        "dr-coordinator",
        "dr_coordinator.service",
        ("dr", "run"),
        "dr_coordinator_port",
        "DR saga coordinator",
        metrics=True,
    ),
    ProcessSpec("api", "api.app", ("api", "run"), "api_port", "REST API and dashboard", metrics=True),
    ProcessSpec("meter-sim", "sim.meters", ("sim", "meters"), "meter_sim_port", "meter simulator (MQTT)"),
)


def _run_dir(settings: Settings) -> Path:
    d = settings.stack.data_dir / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _enabled(spec: ProcessSpec) -> bool:
    try:
        return importlib.util.find_spec(spec.module) is not None
    except ModuleNotFoundError:
        return False


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _probe(port: int, pid_file: Path) -> Callable[[], bool]:
    return lambda: _answers(port) or not pid_alive(read_pid(pid_file))


def _energy_argv(args: tuple[str, ...]) -> list[str]:
    exe = Path(sys.executable).with_name("energy")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "energy.cli", *args]


FIRST_MODEL = "first-model"  # the background job: pid file and log in the run folder


def run_all(only: list[str] | None = None, wait_s: float = 90.0, first_model: bool = True) -> int:
    from energy.first_model import MODEL_DIR_VARIABLE, local_model_dir

    settings = get_settings()
    run_dir = _run_dir(settings)
    # the forecast service and the first-model job share one model folder, outside the repository
    model_env = {MODEL_DIR_VARIABLE: str(local_model_dir(settings))}
    started: list[tuple[ProcessSpec, str]] = []
    for spec in PROCESSES:
        if only and spec.name not in only:
            continue
        if not _enabled(spec):
            continue
        pid_file = run_dir / f"{spec.name}.pid"
        if pid_alive(read_pid(pid_file)):
            started.append((spec, "already running"))
            continue
        env = {"ENERGY_LOG__TRACES_FILE": str(run_dir / f"{spec.name}.traces.jsonl"), **os.environ, **model_env}
        spawn_detached(_energy_argv(spec.args), run_dir / f"{spec.name}.log", pid_file, env=env)
        started.append((spec, "started"))
    failed = []
    for spec, _ in started:
        port = getattr(settings.endpoints, spec.port_field)
        pid_file = run_dir / f"{spec.name}.pid"
        ok = wait_until(_probe(port, pid_file), wait_s, 0.3) and _answers(port)
        if not ok:
            failed.append(spec.name)
    print(f"\n{'process':<16} {'state':<16} {'url':<40} what")
    for spec, state in started:
        port = getattr(settings.endpoints, spec.port_field)
        shown = "NOT ANSWERING" if spec.name in failed else state
        print(f"{spec.name:<16} {shown:<16} {'http://127.0.0.1:' + str(port) + spec.path:<40} {spec.what}")
    ep = settings.endpoints
    print(
        f"\nDashboard:     http://127.0.0.1:{ep.api_port}/\n"
        f"OpenAPI:       http://127.0.0.1:{ep.api_port}/openapi.json\n"
        f"API docs:      http://127.0.0.1:{ep.api_port}/docs (offline Swagger UI) and /redoc\n"
        f"Metrics:       http://127.0.0.1:<port>/metrics on every process above\n"
        f"Prometheus:    http://127.0.0.1:{settings.prometheus.port}/alerts (scrapes every process above)\n"
        f"Logs:          {run_dir}/<process>.log (JSON lines)\n"
        f"Traces:        {run_dir}/<process>.traces.jsonl (OpenTelemetry spans, JSON lines)\n"
        f"Servers:       energy stack status\n"
        f"Stop:          make stop"
    )
    if failed:
        print(f"\nerror: not answering: {', '.join(failed)}; see their logs in {run_dir}", file=sys.stderr)
        return 1
    if first_model and any(spec.name == "forecast" for spec, _ in started):
        _start_first_model(run_dir, model_env)
    return 0


def _start_first_model(run_dir: Path, model_env: dict[str, str]) -> None:
    """The first forecast model trains on the seeded history in the background (``make run`` does not wait);
    until it is CURRENT the service serves the shipped model or seasonal naive, flagged."""
    pid_file, log = run_dir / f"{FIRST_MODEL}.pid", run_dir / f"{FIRST_MODEL}.log"
    if pid_alive(read_pid(pid_file)):
        state = "still training"
    else:
        spawn_detached(_energy_argv((FIRST_MODEL,)), log, pid_file, env={**os.environ, **model_env})
        state = "started"
    print(
        f"\nForecast:      first model on the seeded history: {state} in the background "
        f"(progress: tail -f {log}; energy status)"
    )


def _first_model_status(run_dir: Path) -> str:
    """One line on the background training: running with its latest progress, or its last message."""
    pid, log = read_pid(run_dir / f"{FIRST_MODEL}.pid"), run_dir / f"{FIRST_MODEL}.log"
    if pid is None or not log.exists():
        return "not started"
    tail = log.read_bytes()[-4000:].decode(errors="replace").replace("\r", "\n").splitlines()
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    return f"{'training' if pid_alive(pid) else 'finished'}: {last}"


def stop_all() -> int:
    settings = get_settings()
    run_dir = _run_dir(settings)
    job_pid = read_pid(run_dir / f"{FIRST_MODEL}.pid")
    if pid_alive(job_pid):
        assert job_pid is not None
        terminate_group(job_pid, timeout_s=20)  # the job and the training it started
        print(f"  {FIRST_MODEL:<16} stopped")
    (run_dir / f"{FIRST_MODEL}.pid").unlink(missing_ok=True)
    for spec in reversed(PROCESSES):
        pid_file = run_dir / f"{spec.name}.pid"
        pid = read_pid(pid_file)
        if pid_alive(pid):
            assert pid is not None
            terminate(pid, timeout_s=20)
            print(f"  {spec.name:<16} stopped")
        pid_file.unlink(missing_ok=True)
    return 0


def print_status() -> int:
    settings = get_settings()
    run_dir = _run_dir(settings)
    print(f"{'process':<16} {'pid':<8} {'running':<8} healthz")
    for spec in PROCESSES:
        if not _enabled(spec):
            continue
        pid = read_pid(run_dir / f"{spec.name}.pid")
        port = getattr(settings.endpoints, spec.port_field)
        print(
            f"{spec.name:<16} {pid or '-':<8} {'yes' if pid_alive(pid) else 'no':<8} {'ok' if _answers(port) else '-'}"
        )
    print(f"{FIRST_MODEL:<16} {_first_model_status(run_dir)}")
    print_alerts(settings)
    return 0


def print_alerts(settings: Settings) -> None:
    """What the local Prometheus says is pending or firing, one line each."""
    from energy.stack import Stack
    from energy.stack.servers import PrometheusServer

    prometheus = Stack(settings).server("prometheus")
    assert isinstance(prometheus, PrometheusServer)
    try:
        alerts = prometheus.alerts()
    except OSError:
        print(f"\nalerts: Prometheus does not answer on 127.0.0.1:{prometheus.port} (energy stack up starts it)")
        return
    if not alerts:
        print("\nalerts: none pending or firing")
        return
    print(f"\n{'alert':<34} {'state':<8} {'severity':<9} summary")
    for alert in sorted(alerts, key=lambda a: (a["state"] != "firing", a["labels"]["alertname"])):
        labels, notes = alert["labels"], alert.get("annotations", {})
        print(
            f"{labels['alertname']:<34} {alert['state']:<8} {labels.get('severity', '-'):<9} {notes.get('summary', '')}"
        )
