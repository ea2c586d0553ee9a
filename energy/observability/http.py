"""The ops endpoints every process serves: ``/healthz``, ``/ready``, ``/metrics``.

Services that have an HTTP API (FastAPI) include :func:`ops_router`; workers without
one run :func:`serve_ops` beside their main loop.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from energy.observability.health import Health
from energy.observability.metrics import DEPENDENCY_UP, READY, render

# Where services with an HTTP API serve the Swagger UI / ReDoc assets that fastapi-offline ships,
# so /docs and /redoc work with no network beyond this host.
DOCS_ASSETS_URL = "/docs-assets"


METRICS_EXAMPLE = 'energy_dependency_up{dependency="postgres",service="api"} 1.0\n'


def _ready_example(service: str, ok: bool) -> dict[str, object]:
    check = (
        {"ok": True, "latency_ms": 1.2, "error": None}
        if ok
        else {"ok": False, "latency_ms": 1000.0, "error": "timeout"}
    )
    return {"service": service, "ready": ok, "checks": {"postgres": check}, "conditions": {}}


def ops_router(health: Health) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get(
        "/healthz",
        summary="Process is alive",
        responses={
            200: {
                "content": {
                    "application/json": {"example": {"service": health.service, "alive": True, "uptime_s": 42.0}}
                }
            }
        },
    )
    async def healthz() -> JSONResponse:
        return JSONResponse(health.alive())

    @router.get(
        "/ready",
        summary="Dependencies answer within their timeouts",
        responses={
            200: {"content": {"application/json": {"example": _ready_example(health.service, True)}}},
            503: {
                "description": "A dependency did not answer in time; the body names it",
                "content": {"application/json": {"example": _ready_example(health.service, False)}},
            },
        },
    )
    async def ready() -> JSONResponse:
        ok, body = await health.ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
    )
    async def metrics() -> Response:
        # Each scrape runs the readiness checks (each bounded by its timeout), so an unreachable
        # dependency shows as energy_dependency_up 0 and the DependencyDown alert can fire.
        ok, body = await health.ready()
        READY.labels(health.service).set(1 if ok else 0)
        for dependency, result in body["checks"].items():
            DEPENDENCY_UP.labels(health.service, dependency).set(1 if result["ok"] else 0)
        data, content_type = render()
        return Response(content=data, media_type=content_type)

    return router


def ops_app(health: Health) -> FastAPI:
    app = FastAPI(title=f"{health.service} ops", docs_url=None, redoc_url=None)
    app.include_router(ops_router(health))
    return app


async def serve_app(app: FastAPI, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    """Run an ASGI app in the current event loop until ``stop`` is set (or cancelled)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    task = asyncio.create_task(server.serve())
    try:
        if stop is not None:
            await stop.wait()
        else:
            await task
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)


async def serve_ops(health: Health, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    await serve_app(ops_app(health), host, port, stop)
