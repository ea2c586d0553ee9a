"""A small migration runner over plain SQL files: ``energy/db/migrations/NNNN_name.sql``.

Each file runs once, in version order, in its own transaction, under an advisory lock
so that concurrent starts do not race. A changed checksum of an applied file is an error:
migrations are append-only. Every migration must be expand-contract safe (see
docs/decisions/0004-migrations-expand-contract.md and tests/foundation/test_migrations.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x454E5247  # "ENRG"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"bad migration file name {path.name!r}; expected NNNN_name.sql")
        found.append(Migration(match.group(1), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return found


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR, timeout_s: float = 10.0, ssl: Any = None) -> list[str]:
    """Apply every pending migration; returns the ``version_name`` of each one applied.

    ``ssl``: asyncpg's ``ssl=`` (see :func:`energy.adapters.postgres.ssl_option`)."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(dsn, timeout=timeout_s, ssl=ssl)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = {
                r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            done = []
            for m in migrations:
                if m.version in applied:
                    if applied[m.version] != m.checksum:
                        raise MigrationError(
                            f"migration {m.version}_{m.name} changed after it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
                done.append(f"{m.version}_{m.name}")
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def applied_versions(dsn: str, ssl: Any = None) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn, timeout=10, ssl=ssl)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()
