"""The simulator's HTTP app: WeatherAPI.com (/weatherapi) and Open-Meteo (/openmeteo) shapes.

Faults are set per provider at runtime with ``POST /_faults`` ({"provider", "mode", ...}) and read
with ``GET /_faults``; ``GET /_stats`` counts requests per provider (tests use it to prove caching).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sim.weather import model

PROVIDERS = ("weatherapi", "openmeteo")
Mode = Literal["ok", "down", "slow", "rate_limit", "malformed"]


class FaultIn(BaseModel):
    provider: Literal["weatherapi", "openmeteo", "all"]
    mode: Mode
    delay_s: float = Field(default=5.0, ge=0, le=120)
    retry_after_s: int = Field(default=2, ge=0, le=3600)
    allow_per_min: int = Field(default=0, ge=0, le=100_000)  # rate_limit: requests allowed per minute


@dataclass
class Fault:
    mode: str = "ok"
    delay_s: float = 5.0
    retry_after_s: int = 2
    allow_per_min: int = 0
    window: list[float] = field(default_factory=list)


@dataclass
class SimState:
    faults: dict[str, Fault] = field(default_factory=lambda: {p: Fault() for p in PROVIDERS})
    requests: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PROVIDERS})
    served: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PROVIDERS})

    def set_fault(self, f: FaultIn) -> None:
        for p in PROVIDERS if f.provider == "all" else (f.provider,):
            self.faults[p] = Fault(f.mode, f.delay_s, f.retry_after_s, f.allow_per_min)


async def _apply_fault(state: SimState, provider: str, ok: Any) -> Response:
    state.requests[provider] += 1
    fault = state.faults[provider]
    if fault.mode == "down":
        return JSONResponse({"error": {"code": 9999, "message": "service unavailable"}}, status_code=503)
    if fault.mode == "rate_limit":
        now = time.monotonic()
        fault.window[:] = [t for t in fault.window if now - t < 60]
        if len(fault.window) >= fault.allow_per_min:
            return JSONResponse(
                {"error": {"code": 2007, "message": "API key has exceeded calls per month quota."}},
                status_code=429,
                headers={"Retry-After": str(fault.retry_after_s)},
            )
        fault.window.append(now)
    if fault.mode == "slow":
        await asyncio.sleep(fault.delay_s)
    if fault.mode == "malformed":
        return Response(
            content=b'{"forecast": {"forecastday": [{"hour": [{"time_epoch": "x"', media_type="application/json"
        )
    state.served[provider] += 1
    return JSONResponse(ok())


def _parse_q(q: str) -> tuple[float, float] | None:
    try:
        lat_s, lon_s = q.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def weatherapi_body(lat: float, lon: float, days: int, now: datetime) -> dict[str, Any]:
    day0 = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    forecastday = []
    for d in range(days):
        start = day0 + timedelta(days=d)
        hours: list[dict[str, Any]] = [
            {
                "time_epoch": int(ts.timestamp()),
                "time": ts.strftime("%Y-%m-%d %H:%M"),
                "temp_c": model.temperature_c(lat, lon, ts),
                "humidity": model.humidity_pct(lat, lon, ts),
                "cloud": model.cloud_pct(lat, lon, ts),
            }
            for ts in model.hours(start, 24)
        ]
        temps = [model.temperature_c(lat, lon, ts) for ts in model.hours(start, 24)]
        forecastday.append(
            {
                "date": start.date().isoformat(),
                "date_epoch": int(start.timestamp()),
                "day": {"maxtemp_c": max(temps), "mintemp_c": min(temps), "avgtemp_c": round(sum(temps) / 24, 1)},
                "hour": hours,
            }
        )
    return {
        "location": {"lat": lat, "lon": lon, "tz_id": "UTC", "localtime_epoch": int(now.timestamp())},
        "current": {"temp_c": model.temperature_c(lat, lon, now), "last_updated_epoch": int(now.timestamp())},
        "forecast": {"forecastday": forecastday},
    }


def openmeteo_body(lat: float, lon: float, days: int, past_days: int, unixtime: bool, now: datetime) -> dict[str, Any]:
    day0 = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=past_days)
    times = model.hours(day0, 24 * (days + past_days))
    return {
        "latitude": lat,
        "longitude": lon,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "hourly_units": {
            "time": "unixtime" if unixtime else "iso8601",
            "temperature_2m": "°C",
            "relative_humidity_2m": "%",
            "cloud_cover": "%",
        },
        "hourly": {
            "time": [int(t.timestamp()) if unixtime else t.strftime("%Y-%m-%dT%H:%M") for t in times],
            "temperature_2m": [model.temperature_c(lat, lon, t) for t in times],
            "relative_humidity_2m": [model.humidity_pct(lat, lon, t) for t in times],
            "cloud_cover": [model.cloud_pct(lat, lon, t) for t in times],
        },
    }


def build_app(state: SimState, clock: Any = None) -> FastAPI:
    now = clock or (lambda: datetime.now(UTC))
    app = FastAPI(title="weather simulator", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_faults")
    async def get_faults() -> dict[str, Any]:
        return {p: {k: v for k, v in asdict(f).items() if k != "window"} for p, f in state.faults.items()}

    @app.post("/_faults")
    async def set_fault(fault: FaultIn) -> dict[str, Any]:
        state.set_fault(fault)
        return await get_faults()

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return {"requests": state.requests, "served": state.served}

    @app.get("/weatherapi/v1/forecast.json")
    async def weatherapi(request: Request, q: str = "", days: int = 1, key: str = "") -> Response:
        if not key:
            return JSONResponse({"error": {"code": 1002, "message": "API key is invalid or not provided."}}, 401)
        loc = _parse_q(q)
        if loc is None:
            return JSONResponse({"error": {"code": 1006, "message": "No location found matching parameter 'q'"}}, 400)
        days = max(1, min(days, 14))
        return await _apply_fault(state, "weatherapi", lambda: weatherapi_body(loc[0], loc[1], days, now()))

    @app.get("/openmeteo/v1/forecast")
    async def openmeteo(
        latitude: float | None = None,
        longitude: float | None = None,
        forecast_days: int = 7,
        past_days: int = 0,
        timeformat: str = "iso8601",
    ) -> Response:
        if latitude is None or longitude is None or not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            return JSONResponse({"error": True, "reason": "Latitude and longitude must be valid coordinates"}, 400)
        if not (0 <= forecast_days <= 16 and 0 <= past_days <= 92):
            return JSONResponse({"error": True, "reason": "forecast_days or past_days out of range"}, 400)
        body = lambda: openmeteo_body(latitude, longitude, forecast_days, past_days, timeformat == "unixtime", now())  # noqa: E731
        return await _apply_fault(state, "openmeteo", body)

    return app
