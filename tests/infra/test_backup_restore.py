"""OPS-3: PostgreSQL (pg_dump -Fc / pg_restore) and InfluxDB (influxd backup/restore
-portable) backups restore into scratch servers with exactly the rows and points of the
source, as verified by the restore drill script, which also reports any difference."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from energy.db.migrate import load_migrations
from energy.settings import Settings
from energy.stack import Stack
from energy.stack.servers import InfluxServer, PostgresServer, Server
from scripts.backup.restore_drill import compare_counts, influx_counts, postgres_counts
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.slow


def _influx_post(url: str, path: str, params: dict[str, str], body: bytes | None = None) -> bytes:
    query = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"{url}{path}?{query}", data=body or b"", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


@pytest.fixture
def source_databases(stack: Stack, settings: Settings, uid: str) -> Iterator[dict[str, Any]]:
    """A PostgreSQL database and an InfluxDB database of our own on the shared servers, filled
    with the migrated schema, the seeded fleet and known points; dropped afterwards."""
    from energy.db.migrate import migrate
    from energy.seed import seed_fleet

    pg = settings.postgres
    name = f"drill_{uid}"
    admin_dsn = f"postgresql://postgres@{pg.host}:{pg.port}/postgres"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" OWNER "{pg.user}"')
        finally:
            await conn.close()

    asyncio.run(create())
    drill_settings = settings.model_copy(update={"postgres": pg.model_copy(update={"database": name})})
    asyncio.run(migrate(drill_settings.postgres.dsn()))
    asyncio.run(seed_fleet(drill_settings))

    influx_url = settings.influx.url
    _influx_post(influx_url, "/query", {"q": f'CREATE DATABASE "{name}"'})
    _influx_post(
        influx_url, "/query", {"q": f'CREATE RETENTION POLICY "raw_90d" ON "{name}" DURATION 90d REPLICATION 1 DEFAULT'}
    )
    _influx_post(
        influx_url, "/query", {"q": f'CREATE RETENTION POLICY "rollups_2y" ON "{name}" DURATION 730d REPLICATION 1'}
    )
    start = datetime.now(UTC) - timedelta(days=1)
    t0 = int(start.timestamp()) * 1_000_000_000
    readings = "\n".join(
        f"readings,facility_id=fac-00{f},meter_id=fac-00{f}-m0{m} active_power_kw={10 + i * 0.5},seq={i}i "
        f"{t0 + i * 15_000_000_000}"
        for f in range(1, 4)
        for m in range(1, 3)
        for i in range(100)
    )
    rollups = "\n".join(
        f"facility_rollups,facility_id=fac-00{f},window=1m avg_kw={i * 1.5},sample_count=4i {t0 + i * 60_000_000_000}"
        for f in range(1, 4)
        for i in range(40)
    )
    _influx_post(influx_url, "/write", {"db": name, "rp": "raw_90d"}, readings.encode())
    _influx_post(influx_url, "/write", {"db": name, "rp": "rollups_2y"}, rollups.encode())
    yield {
        "pg_dsn": drill_settings.postgres.dsn(),
        "influx_http": influx_url,
        "influx_rpc": f"127.0.0.1:{int(influx_url.rsplit(':', 1)[1]) + 2}",
        "database": name,
        "expected_points": {"raw_90d.readings": 3 * 2 * 100, "rollups_2y.facility_rollups": 3 * 40},
    }

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
    _influx_post(influx_url, "/query", {"q": f'DROP DATABASE "{name}"'})


@pytest.mark.chaos
def test_restore_drill_restores_every_row_and_point_into_scratch_servers(
    source_databases: dict[str, Any], private_server: Callable[..., Server], tmp_path: Path
) -> None:
    scratch_pg = private_server(PostgresServer)
    scratch_influx = private_server(InfluxServer, database="scratch")
    assert isinstance(scratch_influx, InfluxServer)
    scratch_admin = f"postgresql://postgres@127.0.0.1:{scratch_pg.port}/postgres"

    drill = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.backup.restore_drill",
            "--pg-source",
            source_databases["pg_dsn"],
            "--pg-scratch-admin",
            scratch_admin,
            "--pg-scratch-database",
            "energy_restored",
            "--influx-source-rpc",
            source_databases["influx_rpc"],
            "--influx-source-http",
            source_databases["influx_http"],
            "--influx-scratch-rpc",
            f"127.0.0.1:{scratch_influx.rpc_port}",
            "--influx-scratch-http",
            f"http://127.0.0.1:{scratch_influx.port}",
            "--influx-database",
            source_databases["database"],
            "--workdir",
            str(tmp_path / "backups"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert drill.returncode == 0, drill.stdout + drill.stderr
    report = json.loads(drill.stdout)
    assert report["ok"] is True and report["differences"] == []

    pg = report["postgres"]
    seed = Settings().seed
    assert pg["source"]["facilities"] == seed.facilities
    assert pg["source"]["meters"] == seed.facilities * seed.meters_per_facility
    assert pg["source"]["schema_migrations"] == len(load_migrations())
    assert pg["restored"] == pg["source"]
    assert len(pg["source"]) >= 15  # every table of the schema, empty ones included

    influx = report["influxdb"]
    assert influx["source"] == source_databases["expected_points"]
    assert influx["restored"] == source_databases["expected_points"]

    # The backup files are where an operator expects them.
    assert (tmp_path / "backups" / "postgres.dump").stat().st_size > 0
    assert list((tmp_path / "backups" / "influxdb").glob("*.manifest"))


def test_restore_drill_reports_rows_lost_after_restore(
    source_databases: dict[str, Any], private_server: Callable[..., Server], tmp_path: Path
) -> None:
    """The verification can fail: a restore missing rows or points is reported, table by table."""
    scratch_pg = private_server(PostgresServer)
    script = ROOT / "scripts" / "backup"
    dump = tmp_path / "pg.dump"
    subprocess.run(
        [str(script / "pg_backup.sh"), source_databases["pg_dsn"], str(dump)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    admin = f"postgresql://postgres@127.0.0.1:{scratch_pg.port}/postgres"
    subprocess.run(
        [str(script / "pg_restore.sh"), str(dump), admin, "partial"], check=True, timeout=120, capture_output=True
    )
    restored_dsn = f"postgresql://postgres@127.0.0.1:{scratch_pg.port}/partial"

    async def lose_a_meter() -> None:
        conn = await asyncpg.connect(restored_dsn, timeout=10)
        try:
            meter = await conn.fetchval("SELECT meter_id FROM meters ORDER BY meter_id DESC LIMIT 1")
            await conn.execute("DELETE FROM meters WHERE meter_id = $1", meter)
        finally:
            await conn.close()

    asyncio.run(lose_a_meter())
    source = asyncio.run(postgres_counts(source_databases["pg_dsn"]))
    restored = asyncio.run(postgres_counts(restored_dsn))
    meters = source["meters"]
    assert compare_counts("postgres", source, restored) == [
        f"postgres: meters has {meters - 1} after restore, source has {meters}"
    ]

    points = influx_counts(source_databases["influx_http"], source_databases["database"])
    fewer = {**points, "raw_90d.readings": points["raw_90d.readings"] - 1}
    assert compare_counts("influxdb", points, fewer) == [
        "influxdb: raw_90d.readings has 599 after restore, source has 600"
    ]


def test_restore_refuses_to_merge_into_a_database_that_already_exists(
    source_databases: dict[str, Any], tmp_path: Path
) -> None:
    """influxd restore never merges into an existing database: the drill needs a clean target."""
    script = ROOT / "scripts" / "backup"
    backup_dir = tmp_path / "influx"
    subprocess.run(
        [
            str(script / "influx_backup.sh"),
            source_databases["influx_rpc"],
            source_databases["database"],
            str(backup_dir),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    again = subprocess.run(
        [
            str(script / "influx_backup.sh"),
            source_databases["influx_rpc"],
            source_databases["database"],
            str(backup_dir),
        ],
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 64 and "not empty" in again.stderr
    into_source = subprocess.run(
        [
            str(script / "influx_restore.sh"),
            source_databases["influx_rpc"],
            str(backup_dir),
            source_databases["database"],
        ],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert into_source.returncode != 0
    assert (
        influx_counts(source_databases["influx_http"], source_databases["database"])
        == source_databases["expected_points"]
    )
