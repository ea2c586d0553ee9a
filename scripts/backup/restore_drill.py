"""Restore drill: back up PostgreSQL and InfluxDB, restore both into scratch instances and
prove the restored copies hold the same rows and points (OPS-3).

    python -m scripts.backup.restore_drill --pg-source DSN --pg-scratch-admin DSN \
        --influx-source-rpc HOST:PORT --influx-source-http URL --influx-scratch-rpc HOST:PORT \
        --influx-scratch-http URL --influx-database energy --workdir DIR

PostgreSQL rows are counted inside the very snapshot that pg_dump saves (exported from a
REPEATABLE READ transaction), so the drill is exact on a live database. InfluxDB has no
snapshots: count its points on a quiet source (or accept the points written meanwhile as
the reported difference). Exit status 0 only when every count matches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

SCRIPTS = Path(__file__).resolve().parent


@dataclass
class DrillReport:
    postgres_source: dict[str, int] = field(default_factory=dict)
    postgres_restored: dict[str, int] = field(default_factory=dict)
    influx_source: dict[str, int] = field(default_factory=dict)
    influx_restored: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "differences": self.differences,
            "postgres": {"source": self.postgres_source, "restored": self.postgres_restored},
            "influxdb": {"source": self.influx_source, "restored": self.influx_restored},
        }


def compare_counts(store: str, source: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Every difference between two count maps, as a sentence an operator can act on."""
    problems = []
    for name in sorted(source.keys() | restored.keys()):
        if name not in restored:
            problems.append(f"{store}: {name} missing after restore (source has {source[name]})")
        elif name not in source:
            problems.append(f"{store}: {name} appeared after restore ({restored[name]}), not in the source")
        elif source[name] != restored[name]:
            problems.append(f"{store}: {name} has {restored[name]} after restore, source has {source[name]}")
    return problems


def _run(argv: list[str], timeout_s: float = 600) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if out.returncode != 0:
        reason = (out.stderr or out.stdout).strip()[-800:]
        raise RuntimeError(f"{Path(argv[0]).name} failed ({out.returncode}): {reason}")


_TABLES_SQL = (
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
)


async def _count_tables(conn: asyncpg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in await conn.fetch(_TABLES_SQL):
        name = row["table_name"]
        # Table names come from the catalogue and are quoted as identifiers.
        ident = '"' + name.replace('"', '""') + '"'
        counts[name] = int(await conn.fetchval(f"SELECT count(*) FROM public.{ident}"))
    return counts


async def postgres_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await _count_tables(conn)
    finally:
        await conn.close()


async def backup_postgres_counted(dsn: str, out: Path) -> dict[str, int]:
    """Dump ``dsn`` to ``out`` and count its rows in the same snapshot."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        tx = conn.transaction(isolation="repeatable_read", readonly=True)
        await tx.start()
        try:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            counts = await _count_tables(conn)
            # The snapshot lives as long as this transaction: dump while it is open.
            await asyncio.to_thread(_run, [str(SCRIPTS / "pg_backup.sh"), dsn, str(out), str(snapshot)])
        finally:
            await tx.rollback()
        return counts
    finally:
        await conn.close()


def _influx_query(http_url: str, q: str, database: str) -> dict[str, Any]:
    if urllib.parse.urlsplit(http_url).scheme not in ("http", "https"):
        raise ValueError(f"influxdb URL must be http(s): {http_url!r}")
    data = urllib.parse.urlencode({"q": q, "db": database}).encode()
    req = urllib.request.Request(f"{http_url.rstrip('/')}/query", data=data, method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - scheme checked above
        body: dict[str, Any] = json.loads(resp.read().decode())
    for result in body.get("results", []):
        if "error" in result:
            raise RuntimeError(f"influxdb: {q!r}: {result['error']}")
    return body


def _quote(ident: str) -> str:
    return '"' + ident.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influx_counts(http_url: str, database: str) -> dict[str, int]:
    """Points per ``retention_policy.measurement``: a point counts once, whatever its fields."""
    rps = _influx_query(http_url, f"SHOW RETENTION POLICIES ON {_quote(database)}", database)
    names = [row[0] for s in rps["results"][0].get("series", []) for row in s["values"]]
    counts: dict[str, int] = {}
    for rp in names:
        body = _influx_query(http_url, f"SELECT count(*) FROM {_quote(database)}.{_quote(rp)}./.*/", database)
        for series in body["results"][0].get("series", []):
            values = series["values"][0][1:]  # first column is time
            counts[f"{rp}.{series['name']}"] = max(int(v or 0) for v in values)
    return counts


def settled_influx_counts(http_url: str, database: str, timeout_s: float = 30.0) -> dict[str, int]:
    """Counts after a restore, once the server answers them the same way three times in a row.

    ``influxd restore`` reopens each shard "live"; for a moment queries fail ("engine is
    closed") or silently skip that shard, so one early count would under-report."""
    deadline = time.monotonic() + timeout_s
    previous: dict[str, int] | None = None
    agreeing = 0
    while True:
        try:
            current: dict[str, int] | None = influx_counts(http_url, database)
        except RuntimeError:
            current = None
        agreeing = agreeing + 1 if current is not None and current == previous else 0
        if agreeing >= 2 and current is not None:
            return current
        if time.monotonic() > deadline:
            if current is None:
                raise RuntimeError(f"influxdb at {http_url}: {database} does not answer after the restore")
            return current
        previous = current
        time.sleep(0.5)


def run_drill(args: argparse.Namespace) -> DrillReport:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    report = DrillReport()

    pg_file = work / "postgres.dump"
    report.postgres_source = asyncio.run(backup_postgres_counted(args.pg_source, pg_file))
    _run([str(SCRIPTS / "pg_restore.sh"), str(pg_file), args.pg_scratch_admin, args.pg_scratch_database])
    scratch_dsn = args.pg_scratch_admin.rsplit("/", 1)[0] + "/" + args.pg_scratch_database
    report.postgres_restored = asyncio.run(postgres_counts(scratch_dsn))
    report.differences += compare_counts("postgres", report.postgres_source, report.postgres_restored)

    influx_dir = work / "influxdb"
    report.influx_source = influx_counts(args.influx_source_http, args.influx_database)
    _run([str(SCRIPTS / "influx_backup.sh"), args.influx_source_rpc, args.influx_database, str(influx_dir)])
    _run([str(SCRIPTS / "influx_restore.sh"), args.influx_scratch_rpc, str(influx_dir), args.influx_database])
    report.influx_restored = settled_influx_counts(args.influx_scratch_http, args.influx_database)
    report.differences += compare_counts("influxdb", report.influx_source, report.influx_restored)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restore_drill", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-source", required=True, help="DSN of the database to back up")
    p.add_argument("--pg-scratch-admin", required=True, help="DSN of the scratch server's maintenance database")
    p.add_argument("--pg-scratch-database", default="energy_restored", help="database to restore into (absent/empty)")
    p.add_argument("--influx-source-rpc", required=True, help="backup RPC host:port of the source InfluxDB")
    p.add_argument("--influx-source-http", required=True, help="HTTP URL of the source InfluxDB")
    p.add_argument("--influx-scratch-rpc", required=True, help="backup RPC host:port of the scratch InfluxDB")
    p.add_argument("--influx-scratch-http", required=True, help="HTTP URL of the scratch InfluxDB")
    p.add_argument("--influx-database", default="energy", help="InfluxDB database (absent on the scratch instance)")
    p.add_argument("--workdir", required=True, help="folder for the backup files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run_drill(args)
    print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
