"""``energy dr demo``: the simulated utility calls a demand-response event, through its real VTN.

The event is created on the local VTN simulator with the utility's own (business-logic) credentials,
exactly as a utility's operator would; the VTN notifies the platform's webhook, and the platform's
VEN runtime polls it as a fallback. Nothing here talks to the platform except to say where to look.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

_DURATION = re.compile(r"^(\d+)([smh])$")


def duration(text: str) -> timedelta:
    """``90s``, ``2m``, ``1h``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 2m, 1h)")
    value, unit = int(match.group(1)), match.group(2)
    return timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600}[unit])


def event_body(
    program_id: str,
    facilities: list[str],
    start: datetime,
    length: timedelta,
    shed_kw: float | None,
    level: int,
    name: str,
) -> dict[str, Any]:
    """An OpenADR 3.1 event: plain-string targets (none = every resource enrolled in the program), one
    interval asking either a kW shed (LOAD_SHED_DELTA_AVAILABLE) or a SIMPLE level."""
    payload = (
        {"type": "LOAD_SHED_DELTA_AVAILABLE", "values": [shed_kw]}
        if shed_kw is not None
        else {"type": "SIMPLE", "values": [level]}
    )
    body: dict[str, Any] = {
        "programID": program_id,
        "eventName": name,
        "priority": 1,
        "intervalPeriod": {
            "start": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "duration": f"PT{int(length.total_seconds())}S",
        },
        "intervals": [{"id": 0, "payloads": [payload]}],
    }
    if facilities:
        body["targets"] = facilities
    return body


async def demo(args: argparse.Namespace) -> int:
    import httpx

    from energy.adapters.postgres import create_pool
    from energy.settings import get_settings

    settings = get_settings()
    ep = settings.endpoints
    facilities = list(dict.fromkeys(args.facility or []))
    if facilities or args.wait:
        pool = await create_pool(settings.postgres, min_size=1, max_size=2)
    else:
        pool = None
    try:
        if facilities:
            assert pool is not None
            known = {
                r["facility_id"]
                for r in await pool.fetch("SELECT facility_id FROM facilities WHERE facility_id = ANY($1)", facilities)
            }
            unknown = [f for f in facilities if f not in known]
            if unknown:
                print(f"error: unknown facility: {', '.join(unknown)}", file=sys.stderr)
                return 1
        start = (datetime.now(UTC) + args.in_).replace(microsecond=0)
        name = f"demo-{start:%Y%m%dT%H%M%S}"
        body = event_body(args.program, facilities, start, args.for_, args.shed_kw, args.level, name)
        vtn = args.vtn_url or f"http://127.0.0.1:{ep.utility_sim_port}/openadr3/3.1.0"
        token = settings.seed.utility_bearer_token.get_secret_value()
        async with httpx.AsyncClient(base_url=vtn, headers={"Authorization": f"Bearer {token}"}, timeout=10) as vtn_api:
            created = await vtn_api.post("/events", json=body)
        if created.status_code >= 400 and created.status_code != 500:  # 500: stored, a subscriber was down (3.1)
            print(f"error: the VTN refused the event: {created.status_code} {created.text[:300]}", file=sys.stderr)
            return 1
        vtn_event_id = created.json().get("id") if created.status_code < 400 else None
        print(f"utility event {name} (VTN id {vtn_event_id}) at {vtn}")
        targets = ", ".join(facilities) or "every enrolled facility"
        print(f"  starts {start.isoformat()} for {args.for_}, targets: {targets}")
        dr_event_id = None
        if args.wait and vtn_event_id is not None:
            assert pool is not None
            deadline = asyncio.get_running_loop().time() + args.wait_s
            while dr_event_id is None and asyncio.get_running_loop().time() < deadline:
                dr_event_id = await pool.fetchval(
                    """SELECT dr_event_id FROM dr_events
                       WHERE utility_id = $1 AND vtn_event_id = $2 AND start_at = $3""",
                    settings.seed.utility_id,
                    vtn_event_id,
                    start,
                )
                if dr_event_id is None:
                    await asyncio.sleep(0.5)
            if dr_event_id is None:
                print(
                    f"error: the platform has not taken the event within {args.wait_s:.0f}s "
                    "(is it running? energy status)",
                    file=sys.stderr,
                )
                return 1
            print(f"the platform took it as DR event {dr_event_id}")
        base = f"http://127.0.0.1:{ep.api_port}"
        print("watch it:")
        for fid in facilities or ["fac-001"]:
            print(f"  {base}/dashboard/facility?id={fid}   (load, event window, baseline and target)")
        if dr_event_id is not None:
            print(f"  {base}/api/dr-events/{dr_event_id}          (state, per facility)")
            print(f"  {base}/api/dr-events/{dr_event_id}/settlement  (after the end: baseline, metered, reduction)")
        print("  energy status                                  (processes and alerts)")
        return 0
    finally:
        if pool is not None:
            await pool.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--facility", action="append", default=None, help="facility to target (repeatable; default: all)")
    p.add_argument("--in", dest="in_", type=duration, default=duration("2m"), help="start after this long (2m)")
    p.add_argument("--for", dest="for_", type=duration, default=duration("15m"), help="event length (15m)")
    p.add_argument("--shed-kw", type=float, default=None, help="kW to shed in total (else a SIMPLE level)")
    p.add_argument("--level", type=int, choices=[1, 2, 3], default=2, help="SIMPLE level when no --shed-kw (2)")
    p.add_argument("--program", default="default", help="the utility's program id (the seeded one: default)")
    p.add_argument("--vtn-url", default=None, help="VTN base URL (default: the local simulated utility)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for the platform to take it")
    p.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the platform (60)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(demo(args))
