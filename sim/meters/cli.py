"""``energy sim meters``: the seeded fleet's smart meters publishing over MQTT.

Examples::

    energy sim meters                                  # real time, every 15 s per meter, forever
    energy sim meters --speed 60                       # a simulated minute per second
    energy sim meters --rate 5000 --duration 30        # load test: 5,000 readings/s for 30 s
    energy sim meters --batch --count 10 --faults 0.05 --seed 7 --summary-file out.json
"""

from __future__ import annotations

import argparse
from datetime import datetime


def _positive(value: str) -> float:
    v = float(value)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def _rate(value: str) -> float:
    v = float(value)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return v


def _when(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError("needs an offset, e.g. 2026-01-05T08:00:00Z")
    return ts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", type=_positive, default=1.0, help="clock acceleration, e.g. 60 (default 1)")
    parser.add_argument("--rate", type=_positive, default=None, help="readings per second (load test pacing)")
    parser.add_argument("--batch", action="store_true", help="one gateway batch per facility and tick")
    parser.add_argument("--count", type=int, default=None, help="readings per meter, then stop")
    parser.add_argument("--duration", type=_positive, default=None, help="seconds to run, then stop")
    parser.add_argument("--faults", type=_rate, default=0.0, help="share of readings with an injected fault")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same readings)")
    parser.add_argument("--start", type=_when, default=None, help="timestamp of the first tick (ISO-8601)")
    parser.add_argument("--interval", type=_positive, default=15.0, help="seconds between a meter's readings")
    parser.add_argument("--facilities", type=int, default=None, help="only the first N facilities of the fleet")
    parser.add_argument("--seq-start", type=int, default=0, help="first sequence number of every meter")
    parser.add_argument("--prefix", default=None, help="MQTT topic prefix (default: settings.mqtt.topic_prefix)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--port", type=int, default=None, help="ops port (default settings.endpoints.meter_sim_port)")
    parser.add_argument("--client-id", default=None, help="MQTT client id (default: random)")
    parser.add_argument("--summary-file", default=None, help="write the run's JSON summary here")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    from pathlib import Path

    from energy.observability.logging import configure_logging
    from energy.settings import get_settings
    from sim.meters.simulator import SimConfig, run_simulator

    settings = get_settings()
    configure_logging("meter-sim", settings.log.level, settings.log.json_logs)
    config = SimConfig(
        prefix=args.prefix or settings.mqtt.topic_prefix,
        interval_s=args.interval,
        speed=args.speed,
        rate=args.rate,
        batch=args.batch,
        count=args.count,
        duration_s=args.duration,
        fault_rate=args.faults,
        seed=args.seed,
        start=args.start,
        facilities=args.facilities,
        seq_start=args.seq_start,
        qos=args.qos,
    )
    port = args.port if args.port is not None else settings.endpoints.meter_sim_port

    async def main() -> str:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        summary = await run_simulator(config, settings, port, args.client_id, stop)
        return summary.as_json()

    text = asyncio.run(main())
    if args.summary_file:
        Path(args.summary_file).write_text(text + "\n")
    print(text)
    return 0
