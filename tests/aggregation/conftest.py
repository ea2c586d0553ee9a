from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from energy.adapters.influx import InfluxClient
from energy.settings import Settings
from energy.stack.topics import ensure_topics_async


def influx_admin(url: str, q: str) -> str:
    data = urllib.parse.urlencode({"q": q}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/query", data=data, method="POST"), timeout=10) as r:
        return str(r.read().decode())


def create_influx_db(url: str, db: str) -> None:
    influx_admin(url, f'CREATE DATABASE "{db}"')
    influx_admin(url, f'CREATE RETENTION POLICY "raw_90d" ON "{db}" DURATION 90d REPLICATION 1 DEFAULT')
    influx_admin(url, f'CREATE RETENTION POLICY "rollups_2y" ON "{db}" DURATION 730d REPLICATION 1')


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def agg_db(stack: object, settings: Settings) -> AsyncIterator[str]:
    """A private InfluxDB database (both retention policies) for one test module."""
    db = f"aggtest_{uuid.uuid4().hex[:10]}"
    create_influx_db(settings.influx.url, db)
    yield db
    influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')


@pytest_asyncio.fixture(loop_scope="session")
async def agg_influx(settings: Settings, agg_db: str) -> AsyncIterator[InfluxClient]:
    client = InfluxClient(settings.influx.model_copy(update={"database": agg_db}), breaker_name="influxdb-aggtests")
    yield client
    await client.close()


async def make_topics(settings: Settings, *names: str, partitions: int = 3) -> None:
    await ensure_topics_async(settings.kafka.bootstrap_servers, {n: partitions for n in names})
