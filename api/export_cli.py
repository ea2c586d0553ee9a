"""``energy export``: the analysts' CSV exports from a script, the same files the API serves.

Reads InfluxDB and PostgreSQL directly with the platform's settings (an operator's or analyst's
shell inside the deployment), so it needs no API token; tenant scoping is the API's job.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from schemas.api import Granularity, known_time_zone


class CliError(Exception):
    """A problem the person can fix; main() prints it as one line."""


def _aware(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a zone or offset: {text!r} (e.g. 2026-07-01T00:00:00+02:00)")
    return ts.astimezone(UTC)


def _zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(known_time_zone(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


async def export_readings(args: argparse.Namespace, out: Any) -> int:
    from api.csv_export import ReadingsExport, zone_of
    from api.timeseries import WINDOW_SECONDS, Measurements, fetch_range
    from energy.adapters.influx import InfluxClient
    from energy.adapters.postgres import create_pool
    from energy.progress import progress
    from energy.settings import get_settings

    settings = get_settings()
    granularity = Granularity(args.granularity)
    facilities = list(dict.fromkeys(args.facility))
    if args.to <= args.from_:
        raise CliError("--to must be after --from")
    pool = await create_pool(settings.postgres, min_size=1, max_size=2)
    try:
        rows = await pool.fetch(
            "SELECT facility_id, timezone FROM facilities WHERE facility_id = ANY($1::text[])", facilities
        )
    finally:
        await pool.close()
    known = {r["facility_id"]: r["timezone"] for r in rows}
    unknown = [f for f in facilities if f not in known]
    if unknown:
        raise CliError(f"unknown facility: {', '.join(unknown)}")
    zones = {f: args.tz or zone_of(known[f]) for f in facilities}
    influx = InfluxClient(settings.influx, breaker_name="influxdb-export")
    measurements = Measurements.from_settings(settings.influx)
    page = settings.api.export_page_rows

    async def read(fid: str, s: datetime, e: datetime, offset: int) -> list[dict[str, Any]]:
        return await fetch_range(
            influx, measurements, fid, None, granularity, s, e, page, offset, settings.api.export_query_timeout_s
        )

    expected = None
    if granularity is not Granularity.RAW:
        expected = len(facilities) * int((args.to - args.from_).total_seconds() // WINDOW_SECONDS[granularity])
    written = 0
    try:
        with progress(total=expected, desc="export", unit="rows") as bar:

            def count(n: int) -> None:
                nonlocal written
                written += n
                bar.update(n)

            export = ReadingsExport(read, facilities, zones, granularity, args.from_, args.to, page, on_rows=count)
            await export.prefetch()
            async for chunk in export.chunks():
                out.write(chunk)
    finally:
        await influx.close()
    if args.out:
        print(f"{written} rows -> {args.out}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    target = open(args.out, "w", newline="", encoding="utf-8") if args.out else nullcontext(sys.stdout)  # noqa: SIM115
    try:
        with target as out:
            return asyncio.run(export_readings(args, out))
    except CliError as exc:
        if args.out:
            Path(args.out).unlink(missing_ok=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1


def register(sub: Any) -> None:
    parser = sub.add_parser("export", help="CSV exports for analysts (the API's files, from a shell)")
    kinds = parser.add_subparsers(dest="export_kind", required=True)
    p = kinds.add_parser(
        "readings",
        help="raw readings or facility rollups of one or more facilities as CSV (UTC and local time columns)",
    )
    p.add_argument("--facility", action="append", required=True, help="facility id (repeatable)")
    p.add_argument("--from", dest="from_", required=True, type=_aware, help="start, ISO-8601 with zone (inclusive)")
    p.add_argument("--to", required=True, type=_aware, help="end, ISO-8601 with zone (exclusive)")
    p.add_argument("--granularity", choices=[g.value for g in Granularity], default=Granularity.ONE_HOUR.value)
    p.add_argument("--tz", type=_zone, default=None, help="zone of the *_local column (default: each facility's own)")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.set_defaults(handler=_export)
