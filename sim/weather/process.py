"""Start the weather simulator as a separate process on a free port (tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import time
from types import TracebackType
from typing import Any

import httpx


class WeatherSimProcess:
    def __init__(self, port: int, *extra_args: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> WeatherSimProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "energy.cli", "sim", "weather", "--port", str(self.port), *self._args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("weather simulator did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def fault(self, provider: str, mode: str, **kw: Any) -> None:
        r = httpx.post(f"{self.base}/_faults", json={"provider": provider, "mode": mode, **kw}, timeout=5)
        r.raise_for_status()

    def stats(self) -> dict[str, dict[str, int]]:
        body: dict[str, dict[str, int]] = httpx.get(f"{self.base}/_stats", timeout=5).json()
        return body

    def forecast_settings(self, settings: Any, **overrides: Any) -> Any:
        """``settings.forecast`` pointed at this simulator, with short timeouts, plus ``overrides``."""
        values = {
            "weather_primary_url": f"{self.base}/weatherapi",
            "weather_secondary_url": f"{self.base}/openmeteo",
            "weather_timeout_s": 1.0,
            "weather_retry_attempts": 3,
            "weather_retry_max_delay_s": 0.3,
            **overrides,
        }
        return settings.forecast.model_copy(update=values)

    def __enter__(self) -> WeatherSimProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
