"""``energy forecast run|once|train|evaluate-vic-elec``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("forecast", help="load forecasts: service, training, evaluation")
    fc = parser.add_subparsers(dest="forecast_command", required=True)

    p = fc.add_parser("run", help="run the forecast service (every quarter hour; /healthz /ready /metrics)")
    p.set_defaults(handler=_run)

    p = fc.add_parser("once", help="forecast every active facility (or the given ones) now, once")
    p.add_argument("--facility", action="append", default=None, help="facility id (repeatable); default all active")
    p.add_argument("--no-publish", action="store_true", help="do not publish ForecastPublished events")
    p.set_defaults(handler=_once)

    p = fc.add_parser(
        "train",
        help="train the platform model of one meter interval; the new version becomes CURRENT only if it "
        "backtests better than the current one (run weekly on the facilities' own rollups)",
    )
    p.add_argument(
        "--source",
        choices=("influx", "synthetic"),
        default="influx",
        help="facility rollups in InfluxDB (+ recorded weather); synthetic facilities are for tests and demos",
    )
    p.add_argument("--days", type=int, default=28, help="days of history per facility")
    p.add_argument("--interval", type=int, choices=(15, 30, 60), default=15, help="meter interval in minutes")
    p.add_argument("--facilities", type=int, default=12, help="synthetic facilities (source synthetic)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per ensemble member (default: TrainConfig)")
    p.add_argument("--ensemble", type=int, default=None, help="ensemble members (default: TrainConfig)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(handler=_train)

    p = fc.add_parser("evaluate-vic-elec", help="train and evaluate day-ahead on vic_elec against seasonal naive")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per ensemble member (default: TrainConfig)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--plot", default="docs/img/forecast-vic_elec-week.png", help="PNG of a test week")
    p.add_argument("--save-model", action="store_true", help="also save the vic_elec model as artefact 'vic_elec'")
    p.set_defaults(handler=_evaluate)


def _config(args: argparse.Namespace) -> Any:
    from forecast.model.train import TrainConfig

    cfg = TrainConfig(seed=args.seed)
    if args.steps is not None:
        cfg.max_steps = args.steps
    if getattr(args, "ensemble", None) is not None:
        cfg.ensemble = args.ensemble
    return cfg


async def _with_service(fn: Any, publish: bool) -> Any:
    import httpx

    from energy.adapters.influx import InfluxClient
    from energy.adapters.postgres import create_pool
    from energy.settings import get_settings
    from forecast.service import ForecastService
    from forecast.weather.client import build_weather_client

    settings = get_settings()
    pool = await create_pool(settings.postgres)
    producer = None
    try:
        async with (
            httpx.AsyncClient() as http,
            InfluxClient(settings.influx, breaker_name="influxdb-forecast") as influx,
        ):
            if publish:
                producer = await _start_producer(settings)
            service = ForecastService(
                settings, pool, influx, build_weather_client(settings.forecast, http, pool), producer
            )
            return await fn(service, settings)
    finally:
        if producer is not None:
            await producer.stop()
        await pool.close()


async def _start_producer(settings: Any) -> Any:
    import asyncio

    import structlog

    from energy.adapters.kafka import make_producer

    producer = make_producer(settings.kafka)
    try:
        await asyncio.wait_for(producer.start(), 15)
    except Exception as exc:  # forecasts are still written; events are skipped and counted
        structlog.get_logger("forecast").warning("kafka_unavailable", error=repr(exc))
        await producer.stop()
        return None
    return producer


def _once(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from energy.observability.logging import configure_logging
    from energy.settings import get_settings

    s = get_settings()
    configure_logging("forecast", s.log.level, s.log.json_logs)

    async def go(service: Any, _: Any) -> Any:
        return await service.run_once(facility_ids=args.facility)

    summary = asyncio.run(_with_service(go, not args.no_publish))
    print(json.dumps({**summary.__dict__, "run_at": summary.run_at.isoformat()}, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from energy.observability.health import Health
    from energy.observability.http import serve_ops
    from energy.observability.logging import configure_logging
    from energy.settings import get_settings

    settings = get_settings()
    configure_logging("forecast", settings.log.level, settings.log.json_logs)

    async def go(service: Any, s: Any) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        health = Health("forecast")
        health.add_check("postgres", lambda: service.pool.fetchval("SELECT 1"), timeout_s=2.0)
        health.add_check("influxdb", service.influx.ping, timeout_s=2.0)
        ops = asyncio.create_task(serve_ops(health, s.stack.bind_host, s.endpoints.forecast_port, stop))
        await service.run_forever(stop)
        await ops

    asyncio.run(_with_service(go, True))
    return 0


def _train(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from energy.progress import progress
    from energy.settings import get_settings
    from forecast.service import model_name_for
    from forecast.train_platform import synthetic_fleet, train_and_save

    settings = get_settings()
    cfg = _config(args)
    if args.source == "synthetic":
        series = synthetic_fleet(args.facilities, args.days, args.seed, interval_minutes=args.interval)
    else:
        from forecast.training_data import influx_series

        series = asyncio.run(influx_series(settings, args.days, interval_minutes=args.interval))
        if not series:
            print(f"no facility has enough {args.interval} min history in InfluxDB")
            return 2
    name = model_name_for(settings.forecast.model_name, args.interval)
    with progress(total=cfg.ensemble * cfg.max_steps, desc="train", unit="step") as bar:

        def stepped(n: int) -> None:
            bar.update(n)

        promotion, result = train_and_save(series, cfg, settings.forecast.model_dir, name, args.source, stepped)
    print(json.dumps({"model": f"{name}-{promotion.version}", **promotion.__dict__, **result.metrics}, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from energy.settings import get_settings
    from forecast.evaluate import day_ahead_backtest, plot_week
    from forecast.vic_elec import load_vic_elec

    data = load_vic_elec()
    ev = day_ahead_backtest("vic_elec", [data.series], data.times[data.test_start], _config(args))
    print("vic_elec, day-ahead, test = last 20 % (from 2014-05-26), hourly; temperature = observed, as a stand-in")
    print("for a weather forecast")
    print(f"  LSTM P50, every hour 24 h ahead     MAPE {ev.mape_pct:6.2f} %")
    print(f"  seasonal naive, same hour yesterday MAPE {ev.naive_day_pct:6.2f} %")
    print(f"  seasonal naive, same hour last week MAPE {ev.naive_week_pct:6.2f} %")
    print(f"  P10-P90 coverage {ev.coverage_pct:.1f} %, training {ev.train_s:.0f} s")
    print(f"  training: {ev.result.metrics}")
    if args.plot:
        print(f"  plot: {plot_week(ev, Path(args.plot), 'MWh per hour')}")
    if args.save_model:
        from forecast.model.artifact import save_model

        settings = get_settings()
        version = save_model(
            settings.forecast.model_dir,
            "vic_elec",
            ev.result,
            {"source": "vic_elec", "seed": args.seed, "test_mape_pct": round(ev.mape_pct, 3)},
        )
        print(f"  saved vic_elec-{version}")
    return 0
