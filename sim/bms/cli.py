"""``energy sim bms``: the BMS SOAP simulator (one process, every facility of the fleet)."""

from __future__ import annotations

import argparse

from sim.bms.http_server import IDLE_TIMEOUT_S, MAX_REQUESTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="listen port (default settings.endpoints.bms_sim_port)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every call of every facility")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of SOAP calls answered with a Server fault"
    )
    parser.add_argument("--down", nargs="*", default=[], metavar="FACILITY", help="facilities whose BMS answers 503")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault-injection random generator")
    parser.add_argument(
        "--redis-prefix",
        default=None,
        help="prefix of the zone-state hashes (default sim.building_model.REDIS_PREFIX, read by the meter simulator)",
    )
    parser.add_argument("--redis-timeout-s", type=float, default=1.0, help="socket timeout of the Redis zone store")
    parser.add_argument(
        "--idle-timeout-s",
        type=float,
        default=IDLE_TIMEOUT_S,
        help="close a kept-alive connection idle this long (decision 1020)",
    )
    parser.add_argument(
        "--max-requests-per-connection",
        type=int,
        default=MAX_REQUESTS,
        help="close a connection after this many requests (its last answer says Connection: close)",
    )


def run(args: argparse.Namespace) -> int:
    import random
    import signal
    import threading
    from datetime import UTC, datetime
    from typing import Any

    import structlog

    from energy.fleet import build_fleet
    from energy.observability.logging import configure_logging
    from energy.settings import get_settings
    from sim.bms.http_server import KeepAliveWsgiServer
    from sim.bms.model import BmsControllers, FaultConfig
    from sim.bms.redis_store import RedisZoneStore
    from sim.bms.server import BmsSimulator

    settings = get_settings()
    configure_logging("bms-sim", settings.log.level, settings.log.json_logs)
    log = structlog.get_logger("sim.bms")
    port = args.port or settings.endpoints.bms_sim_port
    fleet = build_fleet(settings.seed.facilities, settings.seed.meters_per_facility)
    from sim.building_model import REDIS_PREFIX

    store = RedisZoneStore(settings.redis.url(), args.redis_timeout_s, args.redis_prefix or REDIS_PREFIX)
    controllers = BmsControllers.for_fleet(fleet, store, lambda: datetime.now(UTC))
    simulator = BmsSimulator(controllers, random.Random(args.seed))
    try:
        simulator.set_faults(None, FaultConfig.parse({"latency_ms": args.latency_ms, "fault_rate": args.fault_rate})[1])
    except ValueError as exc:
        raise SystemExit(f"energy sim bms: {exc}") from exc
    for facility_id in args.down:
        if facility_id not in controllers.facilities:
            raise SystemExit(f"energy sim bms: --down {facility_id}: no such facility")
        simulator.set_faults(facility_id, FaultConfig(latency_ms=args.latency_ms, down=True))
    try:
        server = KeepAliveWsgiServer(
            settings.stack.bind_host,
            port,
            simulator,
            idle_timeout_s=args.idle_timeout_s,
            max_requests=args.max_requests_per_connection,
        )
    except ValueError as exc:
        raise SystemExit(f"energy sim bms: {exc}") from exc
    simulator.connection_stats = lambda: {
        "opened": server.connections_opened,
        "open": server.connections_open,
        "idle_timeout_s": server.idle_timeout_s,
        "max_requests": server.max_requests,
    }

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("bms_sim_started", port=port, facilities=len(fleet), wsdl=f"http://127.0.0.1:{port}/bms/fac-001?wsdl")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        store.close()
    return 0
