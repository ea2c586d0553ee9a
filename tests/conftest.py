"""Fixtures shared by every test: the real local stack, clients to it, private servers.

Tests run against the real servers started by ``energy stack up`` (PostgreSQL, Redis,
Mosquitto, InfluxDB, Kafka). Tests never truncate shared tables: they use unique ids
(:func:`uid`). Chaos tests that stop or pause a server use a *private* instance
(:func:`private_server`) on its own port and folder, so they never disturb other tests.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from energy.settings import Settings, get_settings
from energy.stack import Stack
from energy.stack.process import free_port
from energy.stack.servers import Server


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Stack:
    """The shared local stack, started if needed, with migrations and the seeded fleet."""
    from energy.db.migrate import migrate
    from energy.seed import seed_fleet

    s = Stack(settings)
    s.up(echo=False)
    asyncio.run(migrate(settings.postgres.dsn()))
    asyncio.run(seed_fleet(settings))
    return s


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_pool(stack: Stack, settings: Settings) -> AsyncIterator[Any]:
    from energy.adapters.postgres import create_pool

    pool = await create_pool(settings.postgres, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def influx(stack: Stack, settings: Settings) -> AsyncIterator[Any]:
    from energy.adapters.influx import InfluxClient

    client = InfluxClient(settings.influx, breaker_name="influxdb-tests")
    yield client
    await client.close()


@pytest.fixture
def uid() -> str:
    """A short unique suffix for ids created by one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def private_server(settings: Settings) -> Iterator[Callable[..., Server]]:
    """Factory: ``private_server(InfluxServer, **kwargs)`` starts a private instance on a free
    port in its own folder (under the stack folder, which the ``postgres`` and ``mosquitto``
    users can traverse) and stops and removes it at the end of the test."""
    started: list[Server] = []
    base = settings.stack.data_dir / "private" / uuid.uuid4().hex[:8]

    def make(cls: type[Server], **kwargs: Any) -> Server:
        root = Path(kwargs.pop("root", base / f"srv-{len(started)}"))
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        server = cls(root=root, port=kwargs.pop("port", free_port()), **kwargs)
        started.append(server)  # before start: a start that fails after launching is still stopped
        server.start()
        return server

    yield make
    for server in reversed(started):
        server.resume()
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


# The Debian chromium: playwright never downloads a browser (nothing reaches the internet).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest_asyncio.fixture(loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """The one way browser tests get Chromium: launched headless for the test, closed after it."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            await launched.close()


_SPANS: list[Any] = []


@pytest.fixture
def finished_spans() -> Any:
    """Every OpenTelemetry span this process finishes from now on (an in-memory exporter added to the
    process's provider once), whatever exporters the process configured."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from energy.observability import tracing

    if not _SPANS:
        exporter = InMemorySpanExporter()
        tracing.configure("tests").add_span_processor(SimpleSpanProcessor(exporter))
        _SPANS.append(exporter)
    _SPANS[0].clear()
    return _SPANS[0]
