"""`energy forecast run` is a long-running process serving /healthz, /ready and /metrics on its port."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.waiting import wait_until_sync


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

        def healthz() -> httpx.Response:
            assert proc.poll() is None, "forecast service exited"
            return httpx.get(f"{base}/healthz", timeout=2)

        answer = wait_until_sync(
            healthz, timeout_s=60, what="the forecast service answering", interval_s=0.3, ignore=(httpx.HTTPError,)
        )
        assert answer.status_code == 200
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200
        metrics = wait_until_sync(
            lambda: httpx.get(f"{base}/metrics", timeout=5).text,
            accept=lambda text: "energy_forecast_runs_total{" in text,
            timeout_s=60,
            what="a forecast run counted",
            interval_s=0.5,
        )
        assert 'energy_forecast_runs_total{outcome="ok"}' in metrics
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode is not None
