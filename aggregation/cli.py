"""``energy aggregation run|backfill|archive``."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any


def _aware(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r}: give a time zone, e.g. 2026-11-25T00:00:00Z")
    return ts


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from aggregation.worker import run_service
    from energy.observability.logging import configure_logging
    from energy.settings import get_settings

    settings = get_settings()
    configure_logging("aggregation", settings.log.level, settings.log.json_logs)
    service = run_service(settings, with_archive=False if args.no_archive else None)
    try:
        import uvloop  # installed with uvicorn[standard]; the worker is event-loop heavy
    except ImportError:
        asyncio.run(service)
    else:
        uvloop.run(service)
    return 0


def _backfill(args: argparse.Namespace) -> int:
    import asyncio

    from aggregation.backfill import BackfillRefusedError, backfill
    from energy.progress import progress
    from energy.settings import get_settings

    if args.to <= args.from_:
        print("error: --to must be after --from", file=sys.stderr)
        return 2
    with progress(desc="backfill", unit="reading") as bar:

        def found(n: int) -> None:
            bar.reset(total=n)

        def published(n: int) -> None:
            bar.update(n)

        try:
            res = asyncio.run(
                backfill(get_settings(), args.facility, args.from_, args.to, args.source, args.wait_s, found, published)
            )
        except BackfillRefusedError as exc:
            print(f"error: refusing to backfill: {exc}", file=sys.stderr)
            return 2
    state = "rolled up by the aggregation worker" if res.rolled_up else "NOT yet rolled up (is the worker running?)"
    print(
        f"backfill {args.facility} {args.from_.isoformat()}..{args.to.isoformat()} from {args.source}: "
        f"{res.readings} readings republished to the readings topic; {state}"
    )
    return 0 if res.rolled_up or args.wait_s == 0 else 3


def register(sub: Any) -> None:
    p = sub.add_parser("aggregation", help="rollup worker, raw archive, backfill")
    actions = p.add_subparsers(dest="aggregation_action", required=True)
    run = actions.add_parser("run", help="run the rollup worker (+ archiver) with /healthz /ready /metrics")
    run.add_argument("--no-archive", action="store_true", help="do not run the Parquet archiver in this process")
    run.set_defaults(handler=_run)
    bf = actions.add_parser("backfill", help="replay a facility's readings for a time range through the rollup worker")
    bf.add_argument("--facility", required=True)
    bf.add_argument("--from", dest="from_", required=True, type=_aware, help="ISO-8601 with zone")
    bf.add_argument("--to", required=True, type=_aware, help="ISO-8601 with zone (exclusive)")
    bf.add_argument("--source", choices=("archive", "topic"), default="archive")
    bf.add_argument(
        "--wait-s",
        type=float,
        default=600.0,
        help="wait this long for the aggregation worker to roll the readings up (0: do not wait)",
    )
    bf.set_defaults(handler=_backfill)
