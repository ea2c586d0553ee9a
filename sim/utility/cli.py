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
    parser.add_argument(
        "--ven-token",
        action="append",
        default=[],
        metavar="TOKEN:CLIENT_ID",
        help="a VEN's bearer token and its clientID (repeatable); in 3.1 a VEN reads only its own objects and the "
        "programs/events targeted to it (default without --token: dr.vtn_token is the VEN 'platform-ven')",
    )
    parser.add_argument("--program-id", default="default", help="id (and name) of the program seeded at start")
    parser.add_argument("--verify-callbacks", action="store_true", help="echo-check each callback URL on subscribe")
    parser.add_argument("--sign", action="store_true", help="HMAC-sign notifications with seed.utility_hmac_secret")
    parser.add_argument("--notify-attempts", type=int, default=3, help="attempts per notification (transient errors)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault-injection random generator")
    parser.add_argument(
        "--openadr-version",
        choices=["lenient", "3.0.1", "3.1"],
        default="lenient",
        help="3.0.1 or 3.1: validate every body against that version's schemas, notify while the request waits "
        "(500 when a callback is down), echo-check callbacks, name operations as the version does; "
        "lenient (default): accept either spelling",
    )
    parser.add_argument(
        "--sequential-ids", action="store_true", help="ids '0', '1', ... per object type, restarting with the process"
    )
    parser.add_argument(
        "--oauth-client",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="an OAuth2 client the token endpoint accepts (repeatable)",
    )
    parser.add_argument("--token-ttl-s", type=float, default=3600.0, help="lifetime of issued access tokens")


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
    from sim.utility.model import Client, NotifyFaults, ObjectOperation, SubscriptionIn, VtnStore
    from sim.utility.notifier import Notifier

    settings = get_settings()
    configure_logging("utility-sim", settings.log.level, settings.log.json_logs)
    log = structlog.get_logger("sim.utility")
    port = args.port or settings.endpoints.utility_sim_port
    seed_token = settings.seed.utility_bearer_token.get_secret_value()
    vtn_token = settings.dr.vtn_token.get_secret_value()
    clients: dict[str, Client] = {}
    if not args.token and vtn_token != seed_token:  # the platform's VEN token is a VEN's, the seed token the utility's
        clients[vtn_token] = Client("VEN", "platform-ven")
    for pair in args.ven_token:
        ven_token, sep, client_id = pair.partition(":")
        if not sep or not ven_token or not client_id:
            raise SystemExit("energy sim utility: --ven-token must be TOKEN:CLIENT_ID")
        clients[ven_token] = Client("VEN", client_id)
    tokens = frozenset([*(args.token or (seed_token, vtn_token)), *clients])
    if not 1 <= args.notify_attempts <= 10:
        raise SystemExit("energy sim utility: --notify-attempts must be in [1, 10]")
    if not 1 <= args.token_ttl_s <= 86_400:
        raise SystemExit("energy sim utility: --token-ttl-s must be in [1, 86400]")
    oauth_clients = {}
    for pair in args.oauth_client:
        client_id, sep, secret = pair.partition(":")
        if not sep or not client_id or not secret:
            raise SystemExit("energy sim utility: --oauth-client must be ID:SECRET")
        oauth_clients[client_id] = secret
    version = args.openadr_version
    strict = version != "lenient"
    store = VtnStore(clock=lambda: datetime.now(UTC), sequential_ids=args.sequential_ids, privacy=version == "3.1")
    store.seed_program(args.program_id, args.program_id)
    notifier = Notifier(
        attempts=args.notify_attempts,
        hmac_secret=settings.seed.utility_hmac_secret.get_secret_value() if args.sign else None,
        rng=random.Random(args.seed),
        default_faults=NotifyFaults(operation_style="crud" if version == "3.1" else "http"),
        expect_200=strict,
    )
    state = VtnState(
        store,
        notifier,
        tokens,
        args.verify_callbacks or strict,
        {args.program_id: args.program_id},
        version=version,
        oauth_clients=oauth_clients,
        token_ttl_s=args.token_ttl_s,
        clients=clients,
    )
    callback_url = args.callback_url
    if callback_url is None and args.port is None:
        ep = settings.endpoints
        callback_url = (
            f"http://{ep.api_host}:{ep.api_port}/api/utility/{settings.seed.utility_id}/openadr3/notifications"
        )
    if callback_url and callback_url != "none":
        operation = ObjectOperation(
            objects=["EVENT"],
            operations=["CREATE", "UPDATE", "DELETE"] if version == "3.1" else ["POST", "PUT", "DELETE"],
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
            "utility_sim_started",
            port=port,
            base_url=f"http://127.0.0.1:{port}{state.base_path}",
            version=version,
            callback=callback_url,
        )
        await serve_app(build_app(state), settings.stack.bind_host, port, stop)

    asyncio.run(main())
    return 0
