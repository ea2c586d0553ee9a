"""Migrations: versioned, applied from empty, idempotent, append-only, expand-contract safe."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from energy.db.migrate import MIGRATIONS_DIR, MigrationError, load_migrations, migrate
from energy.settings import Settings
from energy.stack import Stack

CONTRACT_QUERIES = Path(__file__).resolve().parents[1] / "contracts" / "release_0_1_queries.sql"
# Statements that break the previous release while it still runs (expand-contract violation),
# unless the migration file declares itself a contract step of a named, finished release.
DESTRUCTIVE = re.compile(
    r"\b(DROP\s+(TABLE|COLUMN)|RENAME\s+(COLUMN|TO)|ALTER\s+COLUMN\s+\w+\s+(TYPE|SET\s+NOT\s+NULL))\b", re.I
)


def _admin_dsn(settings: Settings, database: str) -> str:
    pg = settings.postgres
    return f"postgresql://postgres@{pg.host}:{pg.port}/{database}"


@pytest_asyncio.fixture(loop_scope="session")
async def empty_db(stack: Stack, settings: Settings, uid: str) -> AsyncIterator[str]:
    name = f"mig_{uid}"
    admin = await asyncpg.connect(_admin_dsn(settings, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _admin_dsn(settings, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_all_migrations_apply_to_an_empty_database_and_are_idempotent(empty_db: str) -> None:
    first = await migrate(empty_db)
    assert first == [f"{m.version}_{m.name}" for m in load_migrations()]
    assert await migrate(empty_db) == []
    conn = await asyncpg.connect(empty_db)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert {
        "facilities",
        "meters",
        "bms_endpoints",
        "bms_zones",
        "utilities",
        "dr_events",
        "dr_event_facilities",
        "dr_event_log",
        "bms_commands",
        "outbox",
        "inbox",
        "load_forecasts",
        "users",
        "api_keys",
        "principal_facilities",
        "schema_migrations",
    } <= tables


async def test_previous_release_queries_still_work_after_all_migrations(empty_db: str) -> None:
    await migrate(empty_db)
    statements = [s.strip() for s in CONTRACT_QUERIES.read_text().split("-- ;") if s.strip()]
    assert len(statements) > 10
    conn = await asyncpg.connect(empty_db)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def test_a_changed_applied_migration_is_refused(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    await migrate(empty_db, copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_db, copy)


async def test_a_failing_migration_rolls_back_and_is_not_recorded(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    (copy / "9999_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(empty_db, copy)
    conn = await asyncpg.connect(empty_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = '9999'") == 0
    finally:
        await conn.close()


async def test_dr_event_log_is_append_only(empty_db: str) -> None:
    await migrate(empty_db)
    statements = [s.strip() for s in CONTRACT_QUERIES.read_text().split("-- ;") if s.strip()]
    conn = await asyncpg.connect(empty_db)
    try:
        for sql in statements:
            await conn.execute(sql)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE dr_event_log SET to_state = 'forged'")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("DELETE FROM dr_event_log")
        # A unique idempotency key makes a second identical BMS command a no-op.
        assert await conn.fetchval("SELECT count(*) FROM bms_commands WHERE idempotency_key = 'k-1'") == 1
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO bms_commands (command_id, idempotency_key, facility_id, zone_id, action) "
                "VALUES (gen_random_uuid(), 'k-1', 'f-contract', 'hvac-1', 'restore')"
            )
    finally:
        await conn.close()


def test_migrations_are_expand_only_unless_declared_a_contract_step() -> None:
    for m in load_migrations():
        if "-- contract-step-of-release:" in m.sql:
            continue
        sql = re.sub(r"--[^\n]*", "", m.sql)
        found = DESTRUCTIVE.search(sql)
        assert found is None, f"{m.version}_{m.name}: '{found.group(0) if found else ''}' breaks the running release"


def test_migration_file_names_are_versioned() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    for path in MIGRATIONS_DIR.iterdir():
        assert re.match(r"^\d{4}_[a-z0-9_]+\.sql$", path.name), path.name
