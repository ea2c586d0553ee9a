"""``energy sim <name>``: the simulators, each a separate process speaking the real protocol.

Each simulator package ``sim/<name>/`` has a light ``cli.py`` with
``add_arguments(parser)`` and ``run(args) -> int`` (heavy imports inside ``run``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

SIMULATORS = {
    "meters": "smart meters publishing readings over MQTT",
    "bms": "building management systems over SOAP (WSDL)",
    "utility": "a utility's OpenADR 3 VTN (REST + webhooks)",
    "weather": "weather providers (WeatherAPI.com and Open-Meteo JSON)",
}


def register(sub: Any) -> None:
    parser = sub.add_parser("sim", help="run a simulator of a third party")
    sims = parser.add_subparsers(dest="simulator", required=True)
    for name, help_text in SIMULATORS.items():
        try:
            module: Any = importlib.import_module(f"sim.{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name and f"sim.{name}".startswith(exc.name):
                continue
            print(f"warning: simulator {name} unavailable: {exc}", file=sys.stderr)
            continue
        except Exception as exc:
            print(f"warning: simulator {name} unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        p: argparse.ArgumentParser = sims.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
