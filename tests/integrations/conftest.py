"""Simulators of the DR integrations, started as separate processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sim.bms.process import SimulatorProcess


@pytest.fixture(scope="module")
def bms_redis_prefix(settings) -> Iterator[str]:
    """A private Redis prefix for zone states, so tests never move the shared simulated buildings."""
    import uuid

    import redis

    prefix = f"test:{uuid.uuid4().hex[:8]}:bms:"
    yield prefix
    client = redis.Redis.from_url(settings.redis.url(), socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def bms_sim(stack, tmp_path_factory, bms_redis_prefix) -> Iterator[SimulatorProcess]:
    """One BMS simulator process per test module (tests use unique idempotency keys)."""
    from energy.stack.process import free_port

    log_dir = tmp_path_factory.mktemp("bms")
    with SimulatorProcess.start("bms", free_port(), "--redis-prefix", bms_redis_prefix, log_dir=log_dir) as sim:
        yield sim


@pytest.fixture
def bms_admin(bms_sim: SimulatorProcess) -> Iterator[httpx.Client]:
    """Admin client of the module's BMS simulator; faults are cleared after each test."""
    with httpx.Client(base_url=bms_sim.base_url, timeout=5) as client:
        yield client
        client.post("/_admin/faults", json={})


@pytest.fixture(scope="module")
def utility_sim(stack, tmp_path_factory) -> Iterator[SimulatorProcess]:
    """One utility VTN simulator process per test module (tests use their own programs and receivers)."""
    from energy.stack.process import free_port

    with SimulatorProcess.start("utility", free_port(), log_dir=tmp_path_factory.mktemp("utility")) as sim:
        yield sim


@pytest.fixture
def utility_admin(utility_sim: SimulatorProcess) -> Iterator[httpx.Client]:
    """Admin client of the module's VTN simulator; notification faults are cleared after each test."""
    with httpx.Client(base_url=utility_sim.base_url, timeout=5) as client:
        yield client
        client.post("/_admin/faults", json={})
        client.post("/_admin/settings", json={"verify_callbacks": False})


class Receiver:
    """A webhook receiver (our side of the wire, in-process): records every request as it arrived.

    ``statuses`` are answered first, one per request, then 200; a 429 or 503 carries
    ``Retry-After: <retry_after>`` when that is set. ``GET <path>/echo?echo=X`` answers X (or
    ``wrong_echo`` when set). Each request records its arrival time (``at``, monotonic).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.wrong_echo: str | None = None
        self.retry_after: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def app(self):
        import time

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route

        async def hook(request: Request) -> Response:
            body = await request.body()
            arrived = time.monotonic()
            self.requests.append(
                {"path": request.url.path, "headers": dict(request.headers), "body": body, "at": arrived}
            )
            status = self.statuses.pop(0) if self.statuses else 200
            if request.url.path.startswith("/openadr3/") and status < 300:  # standing in for a VTN
                return JSONResponse({"id": f"report-{len(self.requests)}"}, status_code=201)
            if status in (429, 503) and self.retry_after is not None:
                return Response(status_code=status, headers={"Retry-After": self.retry_after})
            return Response(status_code=status)

        async def echo(request: Request) -> Response:
            return PlainTextResponse(self.wrong_echo or request.query_params.get("echo", ""))

        return Starlette(
            routes=[
                Route("/hook/echo", echo, methods=["GET"]),
                Route("/hook", hook, methods=["POST"]),
                Route("/openadr3/3.1.0/reports", hook, methods=["POST"]),
                Route("/openadr3/3.1.0/events", hook, methods=["GET"]),
            ]
        )

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict]:
        """The requests received, once there are ``count`` of them."""
        from tests.waiting import wait_until

        await wait_until(
            lambda: len(self.requests) >= count, timeout_s=timeout_s, what=f"{count} requests", interval_s=0.05
        )
        return self.requests


@pytest.fixture
async def receiver():
    import asyncio

    import uvicorn

    from energy.stack.process import free_port
    from tests.waiting import wait_until

    rec = Receiver(free_port())
    config = uvicorn.Config(rec.app(), host="127.0.0.1", port=rec.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), timeout_s=30, what="the receiver serving", interval_s=0.02)
    assert not task.done(), "the receiver exited during its start"
    yield rec
    server.should_exit = True
    await asyncio.wait_for(task, 5)
