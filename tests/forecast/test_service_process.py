"""`energy forecast run` is a long-running process serving /healthz, /ready and /metrics on its port."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx


def test_forecast_run_serves_healthz_ready_and_metrics(stack, port, tmp_path) -> None:
    env = {
        **os.environ,
        "ENERGY_ENDPOINTS__FORECAST_PORT": str(port),
        "ENERGY_FORECAST__MODEL_DIR": str(tmp_path),
        "ENERGY_FORECAST__WEATHER_RETRY_ATTEMPTS": "1",
        "ENERGY_FORECAST__WEATHER_PRIMARY_URL": "http://127.0.0.1:9/weatherapi",
        "ENERGY_FORECAST__WEATHER_SECONDARY_URL": "http://127.0.0.1:9/openmeteo",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "energy.cli", "forecast", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        healthz = None
        while time.monotonic() < deadline:
            try:
                healthz = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "forecast service exited"
                time.sleep(0.3)
        assert healthz is not None and healthz.status_code == 200
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{base}/metrics", timeout=5).text
            if "energy_forecast_runs_total{" in metrics:
                break
            time.sleep(0.5)
        assert 'energy_forecast_runs_total{outcome="ok"}' in metrics
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode is not None
