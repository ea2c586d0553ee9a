"""Fixtures of the forecast tests: throw-away facilities with unique ids in the shared database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def make_facility(pg_pool: Any, uid: str) -> Callable[..., Awaitable[str]]:
    counter = {"n": 0}

    async def make(
        latitude: float = -37.81, longitude: float = 144.96, timezone: str = "Australia/Melbourne", active: bool = True
    ) -> str:
        counter["n"] += 1
        fid = f"fc-test-{uid}-{counter['n']}"
        await pg_pool.execute(
            """INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude,
                                     peak_kw, active)
               VALUES ($1, 'tenant-a', $1, 'office', $2, $3, $4, 400, $5)""",
            fid,
            timezone,
            latitude,
            longitude,
            active,
        )
        return fid

    return make


class WeatherSim:
    """The weather simulator as a separate process, with helpers to inject faults and read counters."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def fault(self, provider: str, mode: str, **kw: Any) -> None:
        import httpx

        r = httpx.post(f"{self.base}/_faults", json={"provider": provider, "mode": mode, **kw}, timeout=5)
        r.raise_for_status()

    def stats(self) -> dict[str, dict[str, int]]:
        import httpx

        body: dict[str, dict[str, int]] = httpx.get(f"{self.base}/_stats", timeout=5).json()
        return body

    def forecast_settings(self, settings: Any, **overrides: Any) -> Any:
        values = {
            "weather_primary_url": f"{self.base}/weatherapi",
            "weather_secondary_url": f"{self.base}/openmeteo",
            "weather_timeout_s": 1.0,
            "weather_retry_attempts": 3,
            "weather_retry_max_delay_s": 0.3,
            **overrides,
        }
        return settings.forecast.model_copy(update=values)


@pytest.fixture(scope="module")
def weather_sim_process() -> Iterator[WeatherSim]:
    import subprocess
    import sys
    import time

    import httpx

    from energy.stack.process import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "energy.cli", "sim", "weather", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sim = WeatherSim(port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{sim.base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("weather simulator did not start")
        time.sleep(0.2)
    yield sim
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def weather_sim(weather_sim_process: WeatherSim) -> WeatherSim:
    weather_sim_process.fault("all", "ok")
    return weather_sim_process
