"""``energy dr ...``: the DR coordinator's commands."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from dr_coordinator.service import main
    from energy.settings import get_settings

    return main(get_settings())


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("dr", help="demand-response coordinator")
    dr = parser.add_subparsers(dest="dr_action", required=True)
    p = dr.add_parser("run", help="run the DR saga coordinator (timers, BMS worker, outbox relay)")
    p.set_defaults(handler=_run)
    p = dr.add_parser(
        "demo", help="make the simulated utility call a DR event through its VTN, and say where to watch it"
    )
    from sim.utility import demo

    demo.add_arguments(p)
    p.set_defaults(handler=demo.run)

    from dr_coordinator import utility_cli

    utility_cli.register(sub)
