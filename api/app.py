"""The API process: ``create_app(settings)`` builds the FastAPI app; ``energy api run`` serves it.

Clients live on ``app.state`` (created in the lifespan, closed on shutdown): ``settings``,
``pool`` (asyncpg), ``influx`` (InfluxClient), ``redis``, ``health``, plus the API's own
``current_cache``, ``range_cache``, ``rate_limiter``, ``login_limiter`` and ``principal_cache``.
Routers come from every importable module in :data:`api.routes.ROUTER_MODULES`.
"""

from __future__ import annotations

import gc
import importlib
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import PrincipalCache, TokenKeys, VerifiedTokens, document_credentials
from api.auth import router as auth_router
from api.cache import CurrentCache, ResponseCache
from api.errors import install_error_handlers
from api.ratelimit import RateLimiter
from api.routes import ROUTER_MODULES
from api.timeseries import Measurements, fetch_current
from energy.adapters.influx import InfluxClient
from energy.adapters.postgres import create_pool
from energy.adapters.redis import make_redis
from energy.observability import tracing
from energy.observability.health import Health
from energy.observability.http import DOCS_ASSETS_URL, ops_router
from energy.observability.metrics import Histogram
from energy.settings import Settings

log = structlog.get_logger("api")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# How ``energy api run`` serves the app (bench/anchors.py serves its trivial route the same way).
UVICORN_OPTIONS: dict[str, Any] = {"log_level": "warning", "access_log": False, "proxy_headers": False}

# FastAPI's native OpenTelemetry is off: :class:`ApiEdgeMiddleware` runs the request's server span itself
# (continuing the caller's traceparent, decision 0508) for a fraction of the CPU. The native one extracts
# through the propagator, attaches two contexts and sets ~10 attributes per request; with its operation
# spans it was a third of a cached read's CPU (decision 0970), without them still ~10 % (decision 1060).
TELEMETRY: TelemetryConfig = {"tracing": False, "operation_spans": False, "metrics": False, "logs": False}

REQUEST_LATENCY = Histogram(
    "energy_api_request_seconds",
    "API request latency by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class ApiEdgeMiddleware:
    """The API's one middleware, pure ASGI (no task or stream per request, unlike Starlette's
    ``BaseHTTPMiddleware``): the request's server span (a child of the caller's W3C ``traceparent``,
    else a new trace; its ids in every log line of the request), ``traceparent`` echoed on the
    response, and ``energy_api_request_seconds`` by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Histogram children by labels: ``labels()`` validates and joins the label values on every call.
        self._latency: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                incoming = tracing.parse_traceparent(value)
        status = 500
        t0 = time.perf_counter()
        method = scope["method"]
        with tracing.server_span(incoming, f"{method} {scope['path']}"[:120]) as ctx:
            echoed = (b"traceparent", ctx.traceparent.encode())

            async def send_with_trace(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message = {**message, "headers": [*message.get("headers", ()), echoed]}
                await send(message)

            try:
                await self.app(scope, receive, send_with_trace)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                span = trace.get_current_span()
                span.set_attributes({"http.route": template, "http.response.status_code": status})
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                key = (template, method, status)
                child = self._latency.get(key)
                if child is None:
                    child = self._latency[key] = REQUEST_LATENCY.labels(template, method, str(status))
                child.observe(time.perf_counter() - t0)


def _include_routers(app: FastAPI) -> list[str]:
    included = []
    for module_name in ROUTER_MODULES:
        try:
            module: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that team's routes are not there yet
            raise
        app.include_router(module.router)
        included.append(module_name)
    return included


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        # min_size=0: the API starts (and reports not ready) while PostgreSQL is down.
        app.state.pool = await create_pool(settings.postgres, min_size=0)
        app.state.influx = InfluxClient(settings.influx, breaker_name="influxdb_api")
        app.state.redis = make_redis(settings.redis)
        app.state.measurements = Measurements.from_settings(settings.influx)
        api = settings.api

        async def load_current(facility_id: str) -> dict[str, Any]:
            return await fetch_current(
                app.state.influx,
                app.state.measurements,
                facility_id,
                api.current_lookback_s,
                api.current_query_timeout_s,
                datetime.now(UTC),
            )

        app.state.current_cache = CurrentCache(
            app.state.redis,
            load_current,
            ttl_s=api.current_cache_ttl_s,
            stale_max_s=api.current_stale_max_s,
            keep_s=api.current_keep_s,
            redis_timeout_s=settings.redis.timeout_s,
        )
        health: Health = app.state.health

        async def check_postgres() -> None:
            async with app.state.pool.acquire(timeout=settings.postgres.connect_timeout_s) as conn:
                await conn.fetchval("SELECT 1")

        async def check_redis() -> None:
            await app.state.redis.ping()

        health.add_check("postgres", check_postgres, timeout_s=settings.postgres.command_timeout_s)
        health.add_check("influxdb", app.state.influx.ping, timeout_s=api.current_query_timeout_s)
        health.add_check("redis", check_redis, timeout_s=max(settings.redis.timeout_s, 0.5))
        log.info("api_started", routers=app.state.routers)
        try:
            yield
        finally:
            await app.state.current_cache.close()
            await app.state.influx.close()
            await app.state.redis.aclose()
            await app.state.pool.close()

    app = FastAPIOffline(
        title="Energy platform API",
        version="1.0.0",
        description=(
            "Facilities, meters, current load, readings and rollups, forecasts, demand-response events, "
            "CSV exports and the dashboard. Authenticate with a bearer token from `POST /api/auth/token` "
            'or an `X-Api-Key` header. Errors are `{"error": {"code", "message", "details"}}`.'
        ),
        lifespan=lifespan,
        # Swagger UI (/docs) and ReDoc (/redoc) from the assets fastapi-offline ships: no CDN.
        static_url=DOCS_ASSETS_URL,
        telemetry=TELEMETRY,
    )
    # State a test client can use before the lifespan runs.
    app.state.settings = settings
    app.state.health = Health("api")
    app.state.rate_limiter = RateLimiter("principal", settings.api.rate_limit_per_s, settings.api.rate_limit_burst)
    app.state.login_limiter = RateLimiter("login", settings.api.login_rate_per_s, settings.api.login_burst)
    app.state.auth_failure_limiter = RateLimiter(
        "auth_failures", settings.api.auth_failure_rate_per_s, settings.api.auth_failure_burst
    )
    app.state.principal_cache = PrincipalCache(settings.api.principal_cache_ttl_s)
    app.state.token_keys = TokenKeys.from_settings(settings)
    app.state.verified_tokens = VerifiedTokens()
    app.state.range_cache = ResponseCache(settings.api.range_cache_ttl_s)
    install_error_handlers(app)
    app.add_middleware(ApiEdgeMiddleware)
    # The API's routers first: routes are matched in order, and the dashboards' reads are the hot path. No path
    # of the ops or auth routers (/healthz, /ready, /metrics, /api/auth/*) can match an API route.
    app.state.routers = _include_routers(app)
    app.include_router(ops_router(app.state.health))
    app.include_router(auth_router)
    document_credentials(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    return app


# Net new container objects (allocations minus deallocations) that trigger a young collection; Python's
# default is 700. With 200 requests in flight their live objects alone passed 700 again and again, so young
# collections ran every few requests, found those objects alive and promoted them, and the older generations
# were collected in turn. At 50,000 a young collection is rare; it then walks at most ~50,000 objects (5-15 ms
# measured under load). ~10 % less CPU per cached read under 200 clients (decision 1060).
YOUNG_GC_THRESHOLD = 50_000


def settle_heap() -> None:
    """Move everything built at start-up (the imported modules, routes, schemas: ~145,000 objects) out of
    the garbage collector's reach. Under 200 concurrent requests the full collections that kept walking
    them took a third of the process's CPU (py-spy --native, decision 0970); what requests allocate is
    still collected, young objects after :data:`YOUNG_GC_THRESHOLD` allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, 10, 10)


def run(settings: Settings) -> int:
    """Serve the API on ``settings.endpoints.api_host:api_port`` until interrupted."""
    import uvicorn

    from energy.observability.logging import configure_logging

    configure_logging("api", settings.log.level, settings.log.json_logs)
    # uvicorn handles SIGTERM itself (drains, runs the lifespan's shutdown) and then re-raises the
    # signal to the handler that was there before it. With the default handler the process would
    # die by SIGTERM even after a complete graceful stop; this one lets it exit 0, like the other
    # services, so a stop that did its shutdown work is told apart from a kill.
    stopped_by: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped_by.append(signum))
    app = create_app(settings)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.endpoints.api_host,
        port=settings.endpoints.api_port,
        **UVICORN_OPTIONS,
    )
    log.info("api_stopped", signal=stopped_by[0] if stopped_by else None)
    return 0
