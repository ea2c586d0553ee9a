"""Weather for a location and window, with fallbacks in order:
fresh cache of the grid cell -> primary provider -> secondary provider -> older cached forecast ->
persistence (yesterday's values) -> none. The result says which source was used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from energy.observability.metrics import Counter
from energy.resilience import CircuitOpenError, RetryPolicy, TokenBucket
from forecast.config import ForecastSettings
from forecast.weather.cache import WeatherCache
from forecast.weather.providers import OpenMeteoProvider, WeatherApiProvider, WeatherError, WeatherProvider
from forecast.weather.types import HourlyWeather, WeatherResult, WeatherSource, cell_center, cell_id

log = structlog.get_logger("forecast.weather")
WEATHER_SOURCE = Counter("energy_forecast_weather_source_total", "Weather results by source used", ["source"])
WEATHER_PROVIDER_FAILURES = Counter(
    "energy_forecast_weather_provider_failures_total", "Provider calls that failed after retries", ["provider", "kind"]
)
_SOURCE_OF_PROVIDER = {"weatherapi": WeatherSource.PRIMARY, "openmeteo": WeatherSource.SECONDARY}


class WeatherClient:
    def __init__(
        self,
        providers: Sequence[WeatherProvider],
        cache: WeatherCache | None,
        *,
        cell_deg: float = 0.25,
        cache_ttl_s: float = 1800.0,
        cache_max_age_s: float = 86400.0,
        concurrency: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._providers = list(providers)
        self._cache = cache
        self._cell_deg = cell_deg
        self._ttl = timedelta(seconds=cache_ttl_s)
        self._max_age = timedelta(seconds=cache_max_age_s)
        self._clock = clock
        self._cell_locks: dict[str, asyncio.Lock] = {}
        self._limit = asyncio.Semaphore(concurrency)

    def cell(self, lat: float, lon: float) -> str:
        return cell_id(lat, lon, self._cell_deg)

    async def _cache_call(self, what: str, coro: Any) -> Any:
        """The cache is an optimisation and a fallback: its failure must never fail the forecast."""
        if self._cache is None:
            return None
        try:
            return await coro
        except Exception as exc:  # logged and counted; the fallback chain goes on
            WEATHER_PROVIDER_FAILURES.labels("cache", type(exc).__name__).inc()
            log.warning("weather_cache_failed", op=what, error=repr(exc))
            return None

    async def get(self, lat: float, lon: float, start: datetime, end: datetime) -> WeatherResult:
        """Hourly weather covering [start, end) for the grid cell of (lat, lon)."""
        cell = self.cell(lat, lon)
        lock = self._cell_locks.setdefault(cell, asyncio.Lock())
        async with lock:  # single flight per cell: nearby facilities share one provider call
            result = await self._get(cell, start, end)
        WEATHER_SOURCE.labels(result.source.value).inc()
        return result

    async def _get(self, cell: str, start: datetime, end: datetime) -> WeatherResult:
        now = self._clock()
        cache = self._cache
        if cache is not None:
            last = await self._cache_call("last_fetch", cache.last_fetch(cell))
            if last is not None and now - last[1] <= self._ttl:
                fresh = await self._cache_call("hours", cache.hours(cell, start, end, last[1]))
                if fresh is not None and fresh.covers(start, end):
                    return WeatherResult(
                        _SOURCE_OF_PROVIDER.get(last[0], WeatherSource.CACHE), fresh, cell, last[1], "cached"
                    )
        lat, lon = cell_center(cell)
        failures = []
        for provider in self._providers:
            try:
                async with self._limit:
                    weather = await provider.forecast(lat, lon)
            except (WeatherError, CircuitOpenError, httpx.HTTPError, TimeoutError, OSError) as exc:
                kind = type(exc).__name__
                WEATHER_PROVIDER_FAILURES.labels(provider.name, kind).inc()
                failures.append(f"{provider.name}: {kind}: {exc}")
                continue
            if not weather.covers(start, end):
                WEATHER_PROVIDER_FAILURES.labels(provider.name, "short_forecast").inc()
                failures.append(f"{provider.name}: forecast does not cover the window")
                continue
            if cache is not None:
                await self._cache_call("store", cache.store(cell, provider.name, now, weather))
            source = _SOURCE_OF_PROVIDER.get(provider.name, WeatherSource.PRIMARY)
            return WeatherResult(source, weather, cell, now, "; ".join(failures))
        detail = "; ".join(failures)
        if cache is not None:
            cached = await self._cache_call("hours", cache.hours(cell, start, end, now - self._max_age))
            if cached is not None and cached.covers(start, end):
                return WeatherResult(WeatherSource.CACHE, cached, cell, None, detail)
            persisted = await self._cache_call("persistence", cache.persistence(cell, start, end))
            if persisted is not None and persisted.covers(start, end):
                return WeatherResult(WeatherSource.PERSISTENCE, persisted, cell, None, detail)
        log.warning("weather_unavailable", cell=cell, detail=detail)
        return WeatherResult(WeatherSource.NONE, None, cell, None, detail)

    async def history(self, lat: float, lon: float, start: datetime, end: datetime) -> HourlyWeather | None:
        """Recorded hourly values of the cell in [start, end) (any age), for the model's past inputs."""
        if self._cache is None:
            return None
        result: HourlyWeather | None = await self._cache_call(
            "history", self._cache.hours(self.cell(lat, lon), start, end, datetime.min.replace(tzinfo=UTC))
        )
        return result


def build_weather_client(
    settings: ForecastSettings, http: httpx.AsyncClient, pool: Any | None, clock: Callable[[], datetime] | None = None
) -> WeatherClient:
    retry = RetryPolicy(
        attempts=settings.weather_retry_attempts, base_delay_s=0.2, max_delay_s=settings.weather_retry_max_delay_s
    )
    common: dict[str, Any] = {
        "timeout_s": settings.weather_timeout_s,
        "retry": retry,
        "breaker_fail_max": settings.weather_breaker_fail_max,
        "breaker_reset_s": settings.weather_breaker_reset_s,
    }
    primary = WeatherApiProvider(
        settings.weather_primary_url,
        http,
        settings.weather_api_key.get_secret_value(),
        bucket=TokenBucket(settings.weather_rate_per_s, settings.weather_burst),
        **common,
    )
    secondary = OpenMeteoProvider(
        settings.weather_secondary_url,
        http,
        bucket=TokenBucket(settings.weather_rate_per_s, settings.weather_burst),
        **common,
    )
    return WeatherClient(
        [primary, secondary],
        WeatherCache(pool) if pool is not None else None,
        cell_deg=settings.weather_cell_deg,
        cache_ttl_s=settings.weather_cache_ttl_s,
        cache_max_age_s=settings.weather_cache_max_age_s,
        concurrency=settings.weather_concurrency,
        clock=clock or (lambda: datetime.now(UTC)),
    )
