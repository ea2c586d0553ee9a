"""``energy sim utility``: the utility's OpenADR 3 VTN simulator."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="listen port (default settings.endpoints.utility_sim_port)"
    )
    parser.add_argument(
        "--callback-url",
        default=None,
        help="subscribe this webhook to EVENT changes at start (bearer: settings.seed.utility_bearer_token); "
        "default: the platform's webhook when --port is not given (the platform's own VTN), else none; 'none': no",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=None,
        help="bearer token the VTN accepts (repeatable; default: settings.seed.utility_bearer_token and dr.vtn_token)",
    )
    parser.add_argument("--program-id", default="default", help="id (and name) of the program seeded at start")
    parser.add_argument("--verify-callbacks", action="store_true", help="echo-check each callback URL on subscribe")
    parser.add_argument("--sign", action="store_true", help="HMAC-sign notifications with seed.utility_hmac_secret")
    parser.add_argument("--notify-attempts", type=int, default=3, help="attempts per notification (transient errors)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault-injection random generator")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import random
    import signal
    from datetime import UTC, datetime

    import structlog

    from energy.observability.http import serve_app
    from energy.observability.logging import configure_logging
    from energy.settings import get_settings
    from sim.utility.app import VtnState, build_app
    from sim.utility.model import ObjectOperation, SubscriptionIn, VtnStore
    from sim.utility.notifier import Notifier

    settings = get_settings()
    configure_logging("utility-sim", settings.log.level, settings.log.json_logs)
    log = structlog.get_logger("sim.utility")
    port = args.port or settings.endpoints.utility_sim_port
    seed_token = settings.seed.utility_bearer_token.get_secret_value()
    tokens = frozenset(args.token or (seed_token, settings.dr.vtn_token.get_secret_value()))
    if not 1 <= args.notify_attempts <= 10:
        raise SystemExit("energy sim utility: --notify-attempts must be in [1, 10]")
    store = VtnStore(clock=lambda: datetime.now(UTC))
    store.seed_program(args.program_id, args.program_id)
    notifier = Notifier(
        attempts=args.notify_attempts,
        hmac_secret=settings.seed.utility_hmac_secret.get_secret_value() if args.sign else None,
        rng=random.Random(args.seed),
    )
    state = VtnState(store, notifier, tokens, args.verify_callbacks, {args.program_id: args.program_id})
    callback_url = args.callback_url
    if callback_url is None and args.port is None:
        ep = settings.endpoints
        callback_url = (
            f"http://{ep.api_host}:{ep.api_port}/api/utility/{settings.seed.utility_id}/openadr3/notifications"
        )
    if callback_url and callback_url != "none":
        operation = ObjectOperation(
            objects=["EVENT"],
            operations=["POST", "PUT", "DELETE"],
            callbackUrl=callback_url,
            bearerToken=seed_token,
        )
        store.create_subscription(SubscriptionIn(clientName=settings.seed.utility_id, objectOperations=[operation]))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "utility_sim_started", port=port, base_url=f"http://127.0.0.1:{port}/openadr3/3.1.0", callback=callback_url
        )
        await serve_app(build_app(state), settings.stack.bind_host, port, stop)

    asyncio.run(main())
    return 0
