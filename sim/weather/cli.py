"""``energy sim weather``: WeatherAPI.com- and Open-Meteo-shaped forecast JSON with fault injection."""

from __future__ import annotations

import argparse
import contextlib

MODES = ("ok", "down", "slow", "rate_limit", "malformed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="listen port (default settings.endpoints.weather_sim_port)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="PROVIDER:MODE",
        help=f"initial fault, repeatable; PROVIDER weatherapi|openmeteo|all, MODE {'|'.join(MODES)}",
    )
    parser.add_argument("--delay-s", type=float, default=5.0, help="delay of the 'slow' mode")
    parser.add_argument("--retry-after-s", type=int, default=2, help="Retry-After of the 'rate_limit' mode")


def run(args: argparse.Namespace) -> int:
    import asyncio

    import structlog

    from energy.observability.http import serve_app
    from energy.observability.logging import configure_logging
    from energy.settings import get_settings
    from sim.weather.app import FaultIn, SimState, build_app

    settings = get_settings()
    configure_logging("weather-sim", settings.log.level, settings.log.json_logs)
    state = SimState()
    for spec in args.fault:
        provider, _, mode = spec.partition(":")
        try:
            state.set_fault(
                FaultIn(provider=provider, mode=mode, delay_s=args.delay_s, retry_after_s=args.retry_after_s)
            )  # type: ignore[arg-type]
        except ValueError as exc:
            raise SystemExit(f"energy sim weather: bad --fault {spec!r}: {exc}") from exc
    port = args.port or settings.endpoints.weather_sim_port
    structlog.get_logger("sim.weather").info("weather_sim_start", port=port, faults=args.fault)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_app(build_app(state), "127.0.0.1", port))
    return 0
