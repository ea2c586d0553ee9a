"""Start a simulator as a separate process (tests, benchmarks): ``energy sim <name> --port P ...``.

    with SimulatorProcess.start("bms", port) as sim:
        url = sim.url("/bms/fac-001")

The process is stopped by its own pid (SIGTERM, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType


def _energy_argv() -> list[str]:
    exe = Path(sys.executable).with_name("energy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "energy.cli"]


class SimulatorProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @classmethod
    def start(
        cls,
        name: str,
        port: int,
        *args: str,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        # A positive wait (only a failure takes this long): at load 15 a simulator logged its start and still
        # did not answer /healthz within 30 s (the saga e2e failed twice on it).
        wait_s: float = 90.0,
    ) -> SimulatorProcess:
        log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        log_path = log_dir / f"sim-{name}-{port}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [*_energy_argv(), "sim", name, "--port", str(port), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        sim = cls(proc, port, log_path)
        sim.wait_healthy(wait_s)
        return sim

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}{path}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=1) as resp:  # noqa: S310 (http only)
                return int(resp.status) == 200
        except OSError:
            return False

    def wait_healthy(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"simulator on port {self.port} not healthy within {wait_s}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the simulator vanishes (connections refused from now on)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
