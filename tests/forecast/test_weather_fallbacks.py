"""FC-1: weather from the primary provider with timeout, retries, rate limit and breaker; fallback to the
second provider, then a cached forecast, then persistence; the result says which source was used.
The providers are the weather simulator, a separate process, with faults injected at runtime."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from forecast.weather.cache import WeatherCache
from forecast.weather.client import build_weather_client
from forecast.weather.types import HourlyWeather, WeatherSource


def _location(uid: str) -> tuple[float, float]:
    n = int(uid, 16)
    return -60 + (n % 480) * 0.25 + 0.1, -170 + ((n // 480) % 1360) * 0.25 + 0.1


def _window() -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return start, start + timedelta(hours=20)


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


async def test_primary_provider_used_and_nearby_facilities_share_one_call(weather_sim, settings, pg_pool, http, uid):
    client = build_weather_client(weather_sim.forecast_settings(settings), http, pg_pool)
    lat, lon = _location(uid)
    start, end = _window()
    before = weather_sim.stats()["served"]["weatherapi"]
    first = await client.get(lat, lon, start, end)
    second = await client.get(lat + 0.05, lon + 0.05, start, end)  # same 0.25 degree cell
    assert first.source == WeatherSource.PRIMARY and first.available
    assert first.weather is not None and first.weather.covers(start, end)
    assert second.source == WeatherSource.PRIMARY and second.detail == "cached"
    assert weather_sim.stats()["served"]["weatherapi"] - before == 1


async def test_primary_down_falls_back_to_secondary_after_retries(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("weatherapi", "down")
    client = build_weather_client(weather_sim.forecast_settings(settings), http, pg_pool)
    before = weather_sim.stats()
    result = await client.get(*_location(uid), *_window())
    after = weather_sim.stats()
    assert result.source == WeatherSource.SECONDARY and result.available
    assert after["requests"]["weatherapi"] - before["requests"]["weatherapi"] == 3  # 503 is transient: retried
    assert after["served"]["openmeteo"] - before["served"]["openmeteo"] == 1
    assert "weatherapi" in result.detail


async def test_slow_primary_times_out_and_falls_back(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("weatherapi", "slow", delay_s=5)
    fs = weather_sim.forecast_settings(settings, weather_timeout_s=0.4, weather_retry_attempts=2)
    client = build_weather_client(fs, http, pg_pool)
    t0 = time.monotonic()
    result = await client.get(*_location(uid), *_window())
    assert result.source == WeatherSource.SECONDARY
    assert time.monotonic() - t0 < 4.0  # bounded by the timeout, not by the provider's delay


async def test_rate_limited_primary_retry_after_is_honoured(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("weatherapi", "rate_limit", retry_after_s=60)
    client = build_weather_client(weather_sim.forecast_settings(settings), http, pg_pool)
    before = weather_sim.stats()["requests"]["weatherapi"]
    first = await client.get(*_location(uid), *_window())
    lat, lon = _location(uid[::-1])
    second = await client.get(lat + 1, lon + 1, *_window())  # another cell, within Retry-After
    assert first.source == WeatherSource.SECONDARY and second.source == WeatherSource.SECONDARY
    # one 429, then no call to the primary until Retry-After has passed (longer than we wait: fall back now)
    assert weather_sim.stats()["requests"]["weatherapi"] - before == 1


async def test_short_retry_after_is_waited_then_retried(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("weatherapi", "rate_limit", retry_after_s=1, allow_per_min=0)
    fs = weather_sim.forecast_settings(settings, weather_retry_attempts=2, weather_retry_max_delay_s=2.0)
    client = build_weather_client(fs, http, pg_pool)
    before = weather_sim.stats()["requests"]["weatherapi"]
    t0 = time.monotonic()
    result = await client.get(*_location(uid), *_window())
    assert time.monotonic() - t0 >= 0.9  # waited the Retry-After before the second attempt
    assert weather_sim.stats()["requests"]["weatherapi"] - before == 2
    assert result.source == WeatherSource.SECONDARY


async def test_malformed_primary_body_is_not_retried_and_falls_back(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("weatherapi", "malformed")
    client = build_weather_client(weather_sim.forecast_settings(settings), http, pg_pool)
    before = weather_sim.stats()["requests"]["weatherapi"]
    result = await client.get(*_location(uid), *_window())
    assert result.source == WeatherSource.SECONDARY
    assert weather_sim.stats()["requests"]["weatherapi"] - before == 1


async def test_both_providers_down_uses_cached_forecast(weather_sim, settings, pg_pool, http, uid):
    fs = weather_sim.forecast_settings(settings, weather_cache_ttl_s=1)
    lat, lon = _location(uid)
    start, end = _window()
    warm = await build_weather_client(fs, http, pg_pool).get(lat, lon, start, end)
    assert warm.source == WeatherSource.PRIMARY
    weather_sim.fault("all", "down")
    later = build_weather_client(fs, http, pg_pool, clock=lambda: datetime.now(UTC) + timedelta(minutes=30))
    result = await later.get(lat, lon, start, end)
    assert result.source == WeatherSource.CACHE and result.available
    assert result.weather is not None and warm.weather is not None
    warm_by_time = dict(zip(warm.weather.times, warm.weather.temp_c, strict=True))
    assert list(result.weather.temp_c) == [warm_by_time[t] for t in result.weather.times]


async def test_no_provider_and_no_cache_uses_persistence_of_yesterday(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("all", "down")
    fs = weather_sim.forecast_settings(settings)
    client = build_weather_client(fs, http, pg_pool)
    lat, lon = _location(uid)
    start, end = _window()
    yesterday = [start - timedelta(days=1) + timedelta(hours=i) for i in range(20)]
    old = datetime.now(UTC) - timedelta(days=3)  # too old to count as a cached forecast
    await WeatherCache(pg_pool).store(
        client.cell(lat, lon), "weatherapi", old, HourlyWeather(tuple(yesterday), tuple(10.0 + i for i in range(20)))
    )
    result = await client.get(lat, lon, start, end)
    assert result.source == WeatherSource.PERSISTENCE and not result.available
    assert result.weather is not None and result.weather.times[0] == start
    assert result.weather.temp_c[:3] == (10.0, 11.0, 12.0)


async def test_nothing_available_reports_none(weather_sim, settings, pg_pool, http, uid):
    weather_sim.fault("all", "down")
    client = build_weather_client(weather_sim.forecast_settings(settings), http, pg_pool)
    result = await client.get(*_location(uid), *_window())
    assert result.source == WeatherSource.NONE and result.weather is None and not result.available


async def test_breaker_opens_after_repeated_failures_and_stops_calling(weather_sim, settings, http, uid):
    weather_sim.fault("weatherapi", "down")
    fs = weather_sim.forecast_settings(settings, weather_retry_attempts=1, weather_breaker_fail_max=2)
    client = build_weather_client(fs, http, None)
    before = weather_sim.stats()["requests"]["weatherapi"]
    lat, lon = _location(uid)
    for i in range(5):
        result = await client.get(lat + i, lon, *_window())
        assert result.source == WeatherSource.SECONDARY
    assert weather_sim.stats()["requests"]["weatherapi"] - before == 2
