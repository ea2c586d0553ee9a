"""The two weather providers behind one interface: parsers (pure) and guarded HTTP calls.

Each provider has its own client-side token bucket and circuit breaker. Transient errors
(timeouts, connection errors, 5xx, 429) are retried with full-jitter backoff; a 429's
Retry-After is honoured (capped by the retry policy's maximum delay, and it also holds back
the token bucket). Malformed bodies and other 4xx are not retried.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from energy.resilience import RetryPolicy, TokenBucket, guarded_call, make_breaker
from forecast.weather.types import HourlyWeather


class WeatherError(Exception):
    """A provider answered, but not with a usable forecast (non-transient)."""


class TransientWeatherError(WeatherError):
    """5xx or an unexpected transport failure: worth retrying."""


class RateLimitedError(TransientWeatherError):
    def __init__(self, provider: str, retry_after_s: float | None) -> None:
        super().__init__(f"{provider}: rate limited (429), retry after {retry_after_s}")
        self.retry_after_s = retry_after_s


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WeatherError(f"malformed {what}: {value!r}")
    return float(value)


def _opt_num(value: Any, what: str) -> float | None:
    return None if value is None else _num(value, what)


def _dedupe_sorted(rows: list[tuple[datetime, float, float | None, float | None]]) -> HourlyWeather:
    by_time = {r[0]: r for r in rows}
    ordered = [by_time[t] for t in sorted(by_time)]
    try:
        return HourlyWeather(
            times=tuple(r[0] for r in ordered),
            temp_c=tuple(r[1] for r in ordered),
            humidity_pct=tuple(r[2] for r in ordered),
            cloud_pct=tuple(r[3] for r in ordered),
        )
    except ValueError as exc:
        raise WeatherError(str(exc)) from exc


def parse_weatherapi(body: Any) -> HourlyWeather:
    """WeatherAPI.com ``/v1/forecast.json``: forecast.forecastday[].hour[] with time_epoch, temp_c, ..."""
    try:
        days = body["forecast"]["forecastday"]
        rows = [
            (
                datetime.fromtimestamp(int(_num(h["time_epoch"], "time_epoch")), UTC),
                _num(h["temp_c"], "temp_c"),
                _opt_num(h.get("humidity"), "humidity"),
                _opt_num(h.get("cloud"), "cloud"),
            )
            for d in days
            for h in d["hour"]
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise WeatherError(f"weatherapi: unexpected body shape ({exc!r})") from exc
    if not rows:
        raise WeatherError("weatherapi: no hours in forecast")
    return _dedupe_sorted(rows)


def parse_openmeteo(body: Any) -> HourlyWeather:
    """Open-Meteo ``/v1/forecast`` with ``timeformat=unixtime``: hourly.time[], hourly.temperature_2m[], ..."""
    try:
        hourly = body["hourly"]
        times = hourly["time"]
        temps = hourly["temperature_2m"]
        hum = hourly.get("relative_humidity_2m") or [None] * len(times)
        cloud = hourly.get("cloud_cover") or [None] * len(times)
        if not (len(times) == len(temps) == len(hum) == len(cloud)):
            raise WeatherError("openmeteo: hourly arrays differ in length")
        rows = [
            (
                datetime.fromtimestamp(int(_num(t, "time")), UTC),
                _num(v, "temperature_2m"),
                _opt_num(h, "relative_humidity_2m"),
                _opt_num(c, "cloud_cover"),
            )
            for t, v, h, c in zip(times, temps, hum, cloud, strict=True)
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise WeatherError(f"openmeteo: unexpected body shape ({exc!r})") from exc
    if not rows:
        raise WeatherError("openmeteo: no hours in forecast")
    return _dedupe_sorted(rows)


class WeatherProvider(Protocol):
    name: str

    async def forecast(self, lat: float, lon: float) -> HourlyWeather: ...


def _is_transient(exc: BaseException, max_delay_s: float) -> bool:
    if isinstance(exc, RateLimitedError):
        # a Retry-After longer than we are willing to wait: give up now and let the caller fall back
        return exc.retry_after_s is None or exc.retry_after_s <= max_delay_s
    return isinstance(exc, TransientWeatherError | httpx.TransportError | TimeoutError | ConnectionError)


class HttpWeatherProvider:
    """One provider over HTTP: token bucket, breaker, timeout, retries (shared by both shapes)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        bucket: TokenBucket,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self._retry = retry
        self._bucket = bucket
        self.breaker = make_breaker(f"weather-{name}", breaker_fail_max, breaker_reset_s)
        self._blocked_until = 0.0

    def _request(self, lat: float, lon: float) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _parse(self, body: Any) -> HourlyWeather:
        raise NotImplementedError

    def _check_not_blocked(self) -> None:
        remaining = self._blocked_until - time.monotonic()
        if remaining > 0:
            raise RateLimitedError(self.name, remaining)

    async def _once(self, lat: float, lon: float) -> HourlyWeather:
        self._check_not_blocked()
        # fail fast instead of queueing behind the limiter: waiting is bounded by the call timeout
        await self._bucket.acquire(max_wait_s=self._timeout_s)
        path, params = self._request(lat, lon)
        resp = await self._http.get(f"{self.base_url}{path}", params=params, timeout=self._timeout_s)
        if resp.status_code == 429:
            retry_after = _retry_after(resp.headers)
            if retry_after:
                # no call to this provider (for any cell) before Retry-After has passed
                self._blocked_until = max(self._blocked_until, time.monotonic() + retry_after)
            raise RateLimitedError(self.name, retry_after)
        if resp.status_code >= 500:
            raise TransientWeatherError(f"{self.name}: HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise WeatherError(f"{self.name}: HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise WeatherError(f"{self.name}: body is not JSON") from exc
        return self._parse(body)

    async def forecast(self, lat: float, lon: float) -> HourlyWeather:
        self._check_not_blocked()
        return await guarded_call(
            f"weather-{self.name}",
            lambda: self._once(lat, lon),
            timeout_s=self._timeout_s,
            breaker=self.breaker,
            retry=self._retry,
            is_transient=lambda exc: _is_transient(exc, self._retry.max_delay_s),
            retry_after=lambda exc: exc.retry_after_s if isinstance(exc, RateLimitedError) else None,
        )


class WeatherApiProvider(HttpWeatherProvider):
    def __init__(self, base_url: str, http: httpx.AsyncClient, api_key: str, **kw: Any) -> None:
        super().__init__("weatherapi", base_url, http, **kw)
        self._key = api_key

    def _request(self, lat: float, lon: float) -> tuple[str, dict[str, Any]]:
        return "/v1/forecast.json", {"key": self._key, "q": f"{lat:.4f},{lon:.4f}", "days": 2}

    def _parse(self, body: Any) -> HourlyWeather:
        return parse_weatherapi(body)


class OpenMeteoProvider(HttpWeatherProvider):
    def __init__(self, base_url: str, http: httpx.AsyncClient, **kw: Any) -> None:
        super().__init__("openmeteo", base_url, http, **kw)

    def _request(self, lat: float, lon: float) -> tuple[str, dict[str, Any]]:
        return "/v1/forecast", {
            "latitude": f"{lat:.4f}",
            "longitude": f"{lon:.4f}",
            "hourly": "temperature_2m,relative_humidity_2m,cloud_cover",
            "forecast_days": 2,
            "past_days": 1,
            "timezone": "GMT",
            "timeformat": "unixtime",
        }

    def _parse(self, body: Any) -> HourlyWeather:
        return parse_openmeteo(body)
