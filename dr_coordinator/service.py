"""``energy dr run``: the DR coordinator process.

Loops (each survives errors and carries on): durable timers (schedule, dispatch, restore,
measure, reconcile, report), the BMS command worker and the outbox relay to Kafka. Serves
``/healthz``, ``/ready`` and ``/metrics`` on ``settings.endpoints.dr_coordinator_port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from dr_coordinator.adapters.store import postgres_transient
from dr_coordinator.bootstrap import ReportSender, make_gateway, utility_filter
from dr_coordinator.entrypoints.late_windows import LateWindowListener
from dr_coordinator.entrypoints.relay import OutboxRelay
from dr_coordinator.entrypoints.timers import Timers
from dr_coordinator.entrypoints.ven_runtime import VenRuntime
from dr_coordinator.entrypoints.worker import CommandWorker, endpoint_url
from energy.adapters.influx import InfluxClient
from energy.adapters.kafka import make_producer
from energy.adapters.postgres import create_pool
from energy.observability.health import Health
from energy.observability.http import serve_ops
from energy.observability.logging import configure_logging
from energy.resilience import RetryPolicy, keep_trying
from energy.settings import Settings

log = structlog.get_logger("dr.service")

# Start-up reads that must eventually succeed (a loaded PostgreSQL cancels them at its statement
# timeout): retried without limit through the one retry policy while /ready says why.
STARTUP_RETRY = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=10.0)
WARM_UP = "warm_up"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Coordinator:
    settings: Settings
    pool: Any
    gateway: Any
    influx: InfluxClient | None
    producer: Any | None
    clock: Callable[[], datetime] = utcnow
    topic_map: dict[str, str] = field(default_factory=dict)
    listen_late_windows: bool = False  # consume meter.late_window (one consumer group per deployment)
    health: Health | None = None  # /ready of the process: not ready until the start-up reads succeeded

    def __post_init__(self) -> None:
        utilities = utility_filter(self.settings)
        dr = self.settings.dr
        self.worker = CommandWorker(self.pool, self.gateway, dr, self.clock, utilities)
        self.warmed = asyncio.Event()
        self.report_sender = ReportSender(dr.vtn_token.get_secret_value())
        self.timers = Timers(
            self.pool,
            dr,
            self.clock,
            self.influx,
            self.gateway,
            self.report_sender,
            utilities,
            lateness_s=self.settings.aggregation.allowed_lateness_s,
            weather_cell_deg=self.settings.forecast.weather_cell_deg,
        )
        self.late_windows = LateWindowListener(self.settings, self.pool, self.timers.settlement, self.clock, utilities)
        self.ven_runtime = VenRuntime(self.pool, self.settings, utilities) if dr.ven_runtime_enabled else None
        self.relay = (
            OutboxRelay(self.pool, self.producer, self.clock, dr.outbox_batch, topic_map=self.topic_map)
            if self.producer is not None
            else None
        )

    async def warm_up(self, stop: asyncio.Event | None = None) -> int:
        """Open a client to every BMS the coordinator may command (WSDL loaded, connection pooled),
        so the first dispatch does not pay for it. The endpoints' query is retried until it succeeds
        (the process is not ready meanwhile); unreachable BMSs are only logged."""
        utilities = utility_filter(self.settings)
        self._not_ready("reading the BMS endpoints")

        def failed(exc: BaseException) -> None:
            self._not_ready(f"reading the BMS endpoints failed, retrying: {type(exc).__name__}: {exc}"[:300])

        rows = await keep_trying(
            "postgres-dr-warm-up",
            lambda: self.pool.fetch(
                """SELECT DISTINCT f.facility_id, b.url FROM facilities f
                   LEFT JOIN bms_endpoints b ON b.facility_id = f.facility_id AND b.active
                   JOIN facility_enrollments e ON e.facility_id = f.facility_id
                   WHERE f.active AND ($1::text[] IS NULL OR e.utility_id = ANY($1::text[]))""",
                utilities,
            ),
            policy=STARTUP_RETRY,
            is_transient=postgres_transient,
            on_error=failed,
            stop=stop,
        )
        if rows is None:  # stopped before PostgreSQL answered
            return 0
        if self.health is not None:
            self.health.clear(WARM_UP)
        # As many at once as the worker may have in flight: the warm-up is 2 BMS round trips each.
        sem = asyncio.Semaphore(max(8, self.settings.dr.worker_batch))

        async def one(facility_id: str, registered: str | None) -> bool:
            url = endpoint_url(self.settings.dr, facility_id, registered)
            if url is None:
                return False
            async with sem:
                try:
                    return bool(await self.gateway.ping(url))
                except Exception as exc:  # warm-up is best effort
                    log.info("dr_bms_warm_up_failed", facility_id=facility_id, error=str(exc)[:200])
                    return False

        results = await asyncio.gather(*(one(r["facility_id"], r["url"]) for r in rows))
        self.warmed.set()
        log.info("dr_bms_warmed_up", endpoints=len(rows), answering=sum(results))
        return sum(results)

    def _not_ready(self, reason: str) -> None:
        if self.health is not None:
            self.health.set_not_ready(WARM_UP, reason)

    async def timers_report_close(self) -> None:
        await self.report_sender.close()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self.warm_up(stop), name="dr-warm-up"),
            asyncio.create_task(self.timers.run(stop), name="dr-timers"),
            asyncio.create_task(self.timers.settlement.run(stop), name="dr-settlement"),
            asyncio.create_task(self.worker.run(stop), name="dr-bms-worker"),
            asyncio.create_task(self.worker.run_results(stop), name="dr-bms-results"),
        ]
        if self.ven_runtime is not None:
            tasks.append(asyncio.create_task(self.ven_runtime.run(stop), name="dr-ven-runtime"))
        if self.relay is not None:
            tasks.append(asyncio.create_task(self.relay.run(stop, self.settings.dr.poll_interval_s), name="dr-relay"))
        if self.listen_late_windows and self.influx is not None:
            tasks.append(asyncio.create_task(self.late_windows.run(stop), name="dr-late-windows"))
        await asyncio.gather(*tasks)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    health = Health("dr-coordinator")
    pool = await create_pool(settings.postgres, min_size=1, max_size=max(4, settings.postgres.pool_max))
    influx = InfluxClient(settings.influx, breaker_name="influxdb-dr")
    gateway = make_gateway(settings)
    producer = make_producer(settings.kafka)
    started_producer = False
    try:
        try:
            await asyncio.wait_for(producer.start(), settings.kafka.request_timeout_s * 2)
            started_producer = True
        except Exception as exc:  # the outbox keeps every row until Kafka is back
            log.warning("dr_kafka_unavailable_at_start", error=f"{type(exc).__name__}: {exc}")
            health.set_not_ready("kafka", "producer not started; outbox rows are kept until it is")
        health.add_check("postgres", lambda: pool.fetchval("SELECT 1"), timeout_s=2.0)
        health.add_check("influxdb", influx.ping, timeout_s=2.0)
        coordinator = Coordinator(
            settings,
            pool,
            gateway,
            influx,
            producer if started_producer else None,
            listen_late_windows=True,
            health=health,
        )
        ops = asyncio.create_task(
            serve_ops(health, settings.stack.bind_host, settings.endpoints.dr_coordinator_port, stop)
        )
        log.info(
            "dr_coordinator_started", port=settings.endpoints.dr_coordinator_port, utilities=utility_filter(settings)
        )
        try:
            await coordinator.run(stop)
            await ops
        finally:
            await coordinator.timers_report_close()
    finally:
        if started_producer:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
        with contextlib.suppress(Exception):
            await gateway.close()
        await influx.close()
        await pool.close()


def main(settings: Settings) -> int:
    configure_logging("dr-coordinator", settings.log.level, settings.log.json_logs)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(runner())
    return 0
