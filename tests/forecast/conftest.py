"""Fixtures of the forecast tests: throw-away facilities with unique ids in the shared database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from sim.weather.process import WeatherSimProcess


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


@pytest.fixture(scope="module")
def weather_sim_process() -> Iterator[WeatherSimProcess]:
    """The weather simulator as a separate process (one per test module), on a free port."""
    from energy.stack.process import free_port

    with WeatherSimProcess(free_port()) as sim:
        yield sim


@pytest.fixture
def weather_sim(weather_sim_process: WeatherSimProcess) -> WeatherSimProcess:
    weather_sim_process.fault("all", "ok")
    return weather_sim_process
