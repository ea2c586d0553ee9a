"""Weather provider bodies: both JSON shapes parse; malformed bodies give a clear WeatherError."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from forecast.weather.providers import WeatherError, parse_openmeteo, parse_weatherapi
from forecast.weather.types import cell_id
from sim.weather.app import openmeteo_body, weatherapi_body

NOW = datetime(2026, 7, 1, 10, 30, tzinfo=UTC)


def test_weatherapi_and_openmeteo_shapes_give_the_same_hours() -> None:
    a = parse_weatherapi(weatherapi_body(40.7, -74.0, 2, NOW))
    b = parse_openmeteo(openmeteo_body(40.7, -74.0, 2, 0, True, NOW))
    assert len(a.times) == 48 and a.times == b.times and a.temp_c == b.temp_c
    assert a.times[0] == datetime(2026, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"forecast": {"forecastday": []}},
        {"forecast": {"forecastday": [{"hour": [{"time_epoch": "x", "temp_c": 1}]}]}},
        {"forecast": {"forecastday": [{"hour": [{"time_epoch": 1, "temp_c": 999}]}]}},
        {"forecast": {"forecastday": [{"hour": [{"time_epoch": 1, "temp_c": None}]}]}},
        [],
    ],
)
def test_malformed_weatherapi_body_is_a_weather_error(body) -> None:
    with pytest.raises(WeatherError):
        parse_weatherapi(body)


@pytest.mark.parametrize(
    "body",
    [
        {"hourly": {"time": [1, 2], "temperature_2m": [1.0]}},
        {"hourly": {"time": [1], "temperature_2m": ["warm"]}},
        {"hourly": {}},
        {"error": True, "reason": "x"},
    ],
)
def test_malformed_openmeteo_body_is_a_weather_error(body) -> None:
    with pytest.raises(WeatherError):
        parse_openmeteo(body)


def test_facilities_of_one_city_share_a_grid_cell() -> None:
    from energy.fleet import build_fleet

    fleet = build_fleet(20, 10)
    by_city: dict[str, set[str]] = {}
    for f in fleet:
        by_city.setdefault(f.city, set()).add(cell_id(f.latitude, f.longitude, 0.25))
    assert all(len(cells) == 1 for cells in by_city.values())
    assert len({next(iter(c)) for c in by_city.values()}) == 4


def test_simulator_faults_can_be_set_by_cli_flag_and_at_runtime(port) -> None:
    import httpx

    from sim.weather.process import WeatherSimProcess

    with WeatherSimProcess(port, "--fault", "weatherapi:down", "--fault", "openmeteo:rate_limit") as sim:
        faults = httpx.get(f"{sim.base}/_faults", timeout=5).json()
        assert faults["weatherapi"]["mode"] == "down" and faults["openmeteo"]["mode"] == "rate_limit"
        r = httpx.get(f"{sim.base}/weatherapi/v1/forecast.json", params={"key": "k", "q": "1,2"}, timeout=5)
        assert r.status_code == 503
        r = httpx.get(f"{sim.base}/openmeteo/v1/forecast", params={"latitude": 1, "longitude": 2}, timeout=5)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        sim.fault("all", "ok")
        r = httpx.get(f"{sim.base}/weatherapi/v1/forecast.json", params={"key": "k", "q": "1,2", "days": 2}, timeout=5)
        assert r.status_code == 200 and len(r.json()["forecast"]["forecastday"]) == 2
        bad = httpx.get(f"{sim.base}/weatherapi/v1/forecast.json", params={"key": "k", "q": "x"}, timeout=5)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == 1006
