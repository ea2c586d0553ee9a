"""``energy deploy rehearse``: every container of an overlay started as a local process under
its pod's constraints, probed until ready, then stopped the way the kubelet stops it.

Per container: a private mount namespace with a read-only root and only the declared volumes
writable (:mod:`energy.deploy.sandbox`), the pod's uid/gid and capabilities, the manifest's
environment pointed at the local stack (:mod:`energy.deploy.local`). It waits for the readiness
probe's path and port within the startup probe's budget; then runs the preStop hook, sends
SIGTERM and expects exit status 0 within ``terminationGracePeriodSeconds`` (counted from the
start of preStop, like the kubelet). Every failure names the container and carries the tail of
its output.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy.deploy.local import LocalStack, localize
from energy.deploy.manifest import POD_IP, ContainerSpec, ImageSpec, RehearsalError, containers_of, parse_dockerfile
from energy.deploy.sandbox import Tools, image_roots, script
from energy.settings import Settings
from energy.settings_paths import PROJECT_ROOT

DEPLOY_DIR = PROJECT_ROOT / "deploy"
DEFAULT_STORE = DEPLOY_DIR / "rehearsal" / "test-secrets.yaml"
# Where the Dockerfile puts things, and where they are on this machine.
IMAGE_VENV_BIN = "/opt/venv/bin"
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JOB_DEADLINE_S = 600.0


@dataclass
class Outcome:
    container: str
    workload: str
    ok: bool = False
    ready_after_s: float | None = None
    stopped_after_s: float | None = None
    exit_code: int | None = None
    error: str | None = None
    changed_env: tuple[str, ...] = ()
    run_dir: Path | None = None
    ports: Mapping[str, int] = field(default_factory=dict)  # as moved onto this machine

    def line(self) -> str:
        if self.ok:
            return (
                f"ok    {self.container:<16} ready after {self.ready_after_s:.1f}s, "
                f"exited {self.exit_code} {self.stopped_after_s:.1f}s after preStop+SIGTERM"
            )
        return f"FAIL  {self.container:<16} {self.error}"


@dataclass
class Report:
    overlay: str
    port_offset: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    def failures(self) -> list[str]:
        return [f"{o.container} ({o.workload}): {o.error}" for o in self.outcomes if not o.ok]


# --- inputs ----------------------------------------------------------------------------------


def render(overlay: str) -> list[dict[str, Any]]:
    import yaml

    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise RehearsalError("kubectl is not installed (Debian package kubectl; scripts/bootstrap.sh installs it)")
    path = DEPLOY_DIR / "overlays" / overlay
    if not path.is_dir():
        raise RehearsalError(f"no overlay {overlay!r} in {DEPLOY_DIR / 'overlays'}")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RehearsalError(f"kubectl kustomize {path} failed: {out.stderr.strip()[-1000:]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def load_store(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RehearsalError(f"{path}: the test secret store must map remote keys to values")
    return data


def image() -> ImageSpec:
    return parse_dockerfile((PROJECT_ROOT / "Dockerfile").read_text())


def machine_mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point not in points:
            points.append(point)
    return points


def local_stack(settings: Settings, extra: Mapping[str, str] | None = None) -> LocalStack:
    return LocalStack(
        postgres=(settings.postgres.host, settings.postgres.port),
        redis=(settings.redis.host, settings.redis.port),
        mqtt=(settings.mqtt.host, settings.mqtt.port),
        influx_url=settings.influx.url,
        kafka_bootstrap=settings.kafka.bootstrap_servers,
        weather_urls=(settings.forecast.weather_primary_url, settings.forecast.weather_secondary_url),
        extra=dict(extra or {}),
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((POD_IP, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port_offset(ports: Sequence[int]) -> int:
    """An offset that moves every declared port below the kernel's ephemeral range (where an
    outgoing connection could take it) onto ports free now."""
    if not ports:
        return 0
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 10_000 - min(ports), ephemeral_low - 1 - max(ports)
    for _ in range(200):
        offset = random.randint(low, high)
        if all(_port_free(p + offset) for p in set(ports)):
            return offset
    raise RehearsalError("no free block of ports below the ephemeral range for the containers")


def cluster_settings_problems(spec: ContainerSpec) -> list[str]:
    """What the process would refuse at start with the environment the cluster gives it: every
    ENERGY_* variable a Settings field, the values valid, staging/production's secret and
    transport checks passed (with the test store's secrets)."""
    from energy.deploy.compose import environment_problems

    return environment_problems({k: v for k, v in spec.env.items() if k.startswith("ENERGY_")})


def _process_env(spec: ContainerSpec) -> dict[str, str]:
    env = dict(spec.env)
    path = env.get("PATH", "$PATH").replace(IMAGE_VENV_BIN, str(Path(sys.executable).parent))
    env["PATH"] = path.replace("$PATH", BASE_IMAGE_PATH).replace("${PATH}", BASE_IMAGE_PATH)
    # The image has the project installed; here the project tree is the installed code.
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.setdefault("HOME", "/home/energy")  # the image's user has no home folder either
    return env


# --- one container ---------------------------------------------------------------------------


class Container:
    def __init__(self, spec: ContainerSpec, image_spec: ImageSpec, run_dir: Path, tools: Tools) -> None:
        self.spec = spec
        self.image = image_spec
        self.run_dir = run_dir
        self.tools = tools
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def stderr_path(self) -> Path:
        return self.run_dir / "stderr.log"

    def tail(self, lines: int = 12) -> str:
        text = ""
        for name in ("stderr.log", "stdout.log"):
            with_path = self.run_dir / name
            if with_path.exists():
                text += with_path.read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def start(self, mounts: Sequence[str]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        volume_dirs = {}
        for mount in self.spec.mounts:
            host = self.run_dir / "volumes" / mount.volume
            host.mkdir(parents=True, exist_ok=True)
            os.chmod(host, 0o777)  # noqa: S103 -- an emptyDir is world-writable; fsGroup owns it when set
            if self.spec.fs_group is not None:
                os.chown(host, 0, self.spec.fs_group)
                os.chmod(host, 0o2777)  # noqa: S103 -- emptyDir with fsGroup: setgid, world-writable
            volume_dirs[mount.path] = str(host)
        for root in image_roots(self.image):
            Path(root).mkdir(parents=True, exist_ok=True)  # an empty mount point for the image layer
        text = script(self.spec, self.image, volume_dirs, mounts, self.tools)
        (self.run_dir / "start.sh").write_text(text)
        unshare = shutil.which("unshare")
        if not unshare:
            raise RehearsalError("unshare (util-linux) is not installed")
        self.started = time.monotonic()
        with (self.run_dir / "stdout.log").open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [unshare, "--mount", "--propagation", "private", "--", self.tools.sh, "-c", text],
                env=_process_env(self.spec),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def exited(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def probe_ok(self) -> bool:
        probe = self.spec.readiness or self.spec.startup
        assert probe is not None
        url = f"http://{POD_IP}:{probe.port}{probe.path}"
        try:
            with urllib.request.urlopen(url, timeout=probe.timeout_s) as resp:
                return 200 <= int(resp.status) < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self) -> float:
        """Seconds until ready; RehearsalError if it exits first or the probes' budget runs out."""
        spec = self.spec
        if spec.workload.startswith(("Job/", "CronJob/")):
            return self._wait_job()
        if spec.readiness is None and spec.startup is None:
            raise RehearsalError("declares no readiness probe: nothing tells when it is ready")
        budget = sum(p.budget_s for p in (spec.startup, spec.readiness) if p is not None)
        deadline = self.started + budget
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise RehearsalError(f"exited with status {code} before it was ready:\n{self.tail()}")
            if self.probe_ok():
                return time.monotonic() - self.started
            time.sleep(0.3)
        raise RehearsalError(f"not ready within its probes' budget of {budget:.0f}s:\n{self.tail()}")

    def _wait_job(self) -> float:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=JOB_DEADLINE_S)
        except subprocess.TimeoutExpired as exc:
            raise RehearsalError(f"job did not finish within {JOB_DEADLINE_S:.0f}s") from exc
        if code != 0:
            raise RehearsalError(f"job exited with status {code}:\n{self.tail()}")
        return time.monotonic() - self.started

    def stop(self) -> tuple[int, float]:
        """preStop, SIGTERM, and the exit within the grace period: (status, seconds)."""
        assert self.proc is not None
        t0 = time.monotonic()
        deadline = t0 + self.spec.grace_s
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        if self.spec.pre_stop:
            self._pre_stop(deadline - time.monotonic())
        with_signal = self.proc.poll() is None
        if with_signal:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise RehearsalError(
                f"did not exit within terminationGracePeriodSeconds={self.spec.grace_s:.0f} (killed):\n{self.tail()}"
            ) from None
        return code, time.monotonic() - t0

    def _pre_stop(self, timeout_s: float) -> None:
        # The hook runs in the container: same mount namespace, user and environment.
        assert self.proc is not None and self.spec.pre_stop is not None
        nsenter = shutil.which("nsenter") or "nsenter"
        argv = [nsenter, f"--target={self.proc.pid}", "--mount", f"--wd={self.spec.workdir}", "--"]
        if self.spec.run_as_user is not None:
            gid = self.spec.run_as_group or self.spec.run_as_user
            argv += [self.tools.setpriv, f"--reuid={self.spec.run_as_user}", f"--regid={gid}", "--clear-groups"]
        argv += ["--", *self.spec.pre_stop]
        try:
            done = subprocess.run(argv, env=_process_env(self.spec), capture_output=True, timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            return  # the kubelet sends SIGTERM when the hook overruns; the grace deadline still counts
        if done.returncode != 0:
            (self.run_dir / "prestop.log").write_bytes(done.stdout + done.stderr)

    def kill(self) -> None:
        """Whatever is left of the container (its own process group) dies with the pod."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


# --- the rehearsal ---------------------------------------------------------------------------


def plan(
    docs: Sequence[Mapping[str, Any]],
    store: Mapping[str, Any],
    stack: LocalStack,
    port_offset: int | None = None,
    only: Sequence[str] | None = None,
    image_spec: ImageSpec | None = None,
) -> tuple[int, list[tuple[ContainerSpec, tuple[str, ...]]]]:
    """The containers to start, localized, and the port offset (pure apart from the port choice)."""
    specs = containers_of(docs, image_spec or image(), store)
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise RehearsalError(f"no container named {sorted(unknown)} in the overlay")
        specs = [s for s in specs if s.name in only]
    for spec in specs:
        problems = cluster_settings_problems(spec)
        if problems:
            raise RehearsalError(f"{spec.label}: " + "; ".join(problems))
    if port_offset is None:
        port_offset = choose_port_offset(sorted({p for s in specs for p in s.ports.values()}))
    return port_offset, [localize(s, stack, port_offset) for s in specs]


def rehearse(
    overlay: str,
    settings: Settings,
    *,
    store_path: Path = DEFAULT_STORE,
    extra_env: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
    port_offset: int | None = None,
    run_root: Path | None = None,
    while_ready: Callable[[Report], None] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    docs: Sequence[Mapping[str, Any]] | None = None,
    image_spec: ImageSpec | None = None,
) -> Report:
    """Start, probe and stop every container of ``overlay`` (or of already rendered ``docs``).
    ``while_ready`` runs once every container is ready, before any is stopped (tests produce
    work for the shutdown to finish)."""
    docs = render(overlay) if docs is None else docs
    image_spec = image_spec or image()
    stack = local_stack(settings, extra_env)
    offset, planned = plan(docs, load_store(store_path), stack, port_offset, only, image_spec)
    # a deploy does not start a CronJob (its schedule does): its manifest is resolved and checked by plan(),
    # its container is not run here
    for spec, _ in planned:
        if spec.workload.startswith("CronJob/"):
            progress(f"not started (runs on its schedule): {spec.label}")
    planned = [(spec, changed) for spec, changed in planned if not spec.workload.startswith("CronJob/")]
    if os.geteuid() != 0:
        raise RehearsalError("needs root for a private mount namespace and the pods' uids (run it as root)")
    run_root = run_root or settings.stack.data_dir / "rehearsal" / overlay
    shutil.rmtree(run_root, ignore_errors=True)
    tools = Tools(mount=shutil.which("mount") or "mount", setpriv=shutil.which("setpriv") or "setpriv", sh="/bin/sh")
    report = Report(overlay, offset)
    mounts = machine_mounts()
    containers = []
    for spec, changed in planned:
        outcome = Outcome(spec.name, spec.workload, changed_env=changed, run_dir=run_root / spec.name, ports=spec.ports)
        report.outcomes.append(outcome)
        containers.append((Container(spec, image_spec, run_root / spec.name, tools), outcome))
    try:
        for container, _ in containers:
            container.start(mounts)
            progress(f"started {container.spec.label}: {' '.join(container.spec.argv)}")
        _each(containers, _ready_step)
        if while_ready is not None and all(o.error is None for _, o in containers):
            while_ready(report)
        _each(containers, _stop_step)
    finally:
        for container, _ in containers:
            container.kill()
    for _, outcome in containers:
        outcome.ok = outcome.error is None
    return report


def _ready_step(container: Container, outcome: Outcome) -> None:
    try:
        outcome.ready_after_s = container.wait_ready()
    except RehearsalError as exc:
        outcome.error = str(exc)


def _stop_step(container: Container, outcome: Outcome) -> None:
    try:
        code, took = container.stop()
    except RehearsalError as exc:
        outcome.error = outcome.error or str(exc)
        return
    outcome.exit_code, outcome.stopped_after_s = code, took
    if code != 0 and outcome.error is None:
        outcome.error = f"exited with status {code} after SIGTERM (not a clean shutdown):\n{container.tail()}"


def _each(containers: Sequence[tuple[Container, Outcome]], step: Callable[[Container, Outcome], None]) -> None:
    threads = [threading.Thread(target=step, args=pair, daemon=True) for pair in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
