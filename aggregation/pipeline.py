"""The rollup pipeline of a batch: decode -> lateness -> RollupEngine -> InfluxDB -> DLQ -> ack.

Not a consumer loop: :class:`RollupPipeline` holds the steps every batch goes through and leaves
fetching, acking and pausing to the engine that runs it (``aggregation.faust_worker``, the one
engine, decision 0810). A batch is acked only after InfluxDB confirmed every write of the batch
and every dead letter of the batch was acknowledged by the broker (AGG-1). While InfluxDB fails
the pipeline keeps the one batch it has, reports why on ``/ready`` and retries with backoff
until the write succeeds (AGG-3). See docs/decisions/0200-aggregation-worker.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import httpx
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from aggregation import metrics
from aggregation.decode import Reading, Rejected, decode_reading, decode_reading_fast
from aggregation.dlq import dead_letter, utcnow
from aggregation.domain.lateness import TOO_LATE, late_windows
from aggregation.engine import RollupEngine, WritePlan
from aggregation.late_windows import late_window_event, lateness_policy
from energy.adapters.influx import InfluxClient, InfluxError, InfluxUnavailableError
from energy.adapters.kafka import make_producer, security_options, send_event
from energy.observability.health import Health
from energy.resilience import CircuitOpenError, RetryPolicy, keep_trying
from energy.settings import Settings
from energy.stack.topics import ensure_topics_async
from schemas.topics import LATE_WINDOWS, TOPICS

log = structlog.get_logger("aggregation.pipeline")

T = TypeVar("T")

# Errors a record can cause for good while its batch is prepared (a 4xx from InfluxDB, a value that
# does not parse, arithmetic or lookups a bad value breaks): bisected to the record, never retried.
# Control flow (_Stopped and the like) and transient errors are deliberately not in this list.
RECORD_ERRORS = (InfluxError, ValueError, ArithmeticError, LookupError, TypeError)
_DECODED_REJECTS = ("too_late", "timestamp_in_future", "sink_rejected", "unprocessable")
TRANSIENT = (InfluxUnavailableError, CircuitOpenError, TimeoutError, httpx.TransportError, KafkaError, OSError)
BACKPRESSURE = "sink_backpressure"


class Record(Protocol):
    """What the pipeline reads of a fetched Kafka record (Faust's message, aiokafka's record)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


Batch = dict[TopicPartition, list[Any]]  # records of each partition, in offset order


class _Stopped(Exception):
    """Shutdown was asked while a sink was failing: leave the batch unacked (it replays)."""


class _Fenced(Exception):
    """The batch's partitions were revoked: its windows belong to another worker now (0210)."""


@dataclass
class _Staged:
    batch: Batch
    started: float
    readings: list[Reading] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # of each reading
    rejects: list[tuple[Record, Rejected]] = field(default_factory=list)
    plan: WritePlan | None = None
    prepared_at: float = 0.0
    now: datetime = field(default_factory=utcnow)  # the clock lateness is judged by
    epoch: int = 0  # the worker's revocation count when the batch was taken
    fenced: bool = False


class RollupPipeline:
    """The steps of a batch; the engine running it provides :meth:`_ack` and the fetch pause."""

    def __init__(self, settings: Settings, health: Health | None = None) -> None:
        self.settings = settings
        self.cfg = settings.aggregation
        self.health = health or Health("aggregation")
        self.influx = InfluxClient(
            settings.influx,
            breaker_name="influxdb-aggregation",
            fail_max=self.cfg.influx_breaker_fail_max,
            reset_s=self.cfg.influx_breaker_reset_s,
        )
        self.engine = RollupEngine(
            self.influx, settings.influx.raw_retention_policy, settings.influx.rollup_retention_policy, self.cfg
        )
        self.lateness = lateness_policy(settings)
        self.producer: AIOKafkaProducer = make_producer(settings.kafka)
        self.seen_end: dict[TopicPartition, int] = {}  # last fetched offset + 1
        self._failing = 0  # steps currently retrying a failing sink
        self.stop = asyncio.Event()
        self._last_lag = 0.0
        # One writer per window (decision 0210): every revocation bumps the epoch; a batch taken
        # in an earlier epoch is never written, and the write in flight is awaited or cancelled.
        self._epoch = 0
        self._revoked = False  # between a revocation and the next assignment nothing is written
        self._writes: set[asyncio.Task[None]] = set()
        self.writes_done = 0
        # The batch written while the next one is prepared (set by the engine that pipelines them).
        self.previous: asyncio.Task[None] | None = None
        self.health.add_check("influxdb", self.influx.ping)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.producer.stop(), 10)
        await self.influx.close()

    async def handle_batch(self, batch: Batch) -> None:
        """Stage, write and ack one batch (no pipelining)."""
        staged = await self._stage(batch)
        if staged is not None:
            await self._finish(staged)

    def _decode(self, batch: Batch) -> _Staged:
        staged = _Staged(batch, time.perf_counter(), epoch=self._epoch)
        now, policy = staged.now, self.lateness
        oldest, newest = policy.accepted_range(now)
        for tp, records in batch.items():
            if records:
                self.seen_end[tp] = max(self.seen_end.get(tp, 0), records[-1].offset + 1)
            for rec in records:
                got = decode_reading_fast(rec.value)
                if isinstance(got, Rejected):
                    staged.rejects.append((rec, got))
                elif not oldest <= got.payload.ts <= newest:
                    refused = policy.refusal(got.payload.ts, now) or TOO_LATE
                    staged.rejects.append((rec, Rejected(refused, policy.detail(refused, got.payload.ts, now))))
                else:
                    staged.readings.append(got.payload)
                    staged.records.append(rec)
        return staged

    async def _stage(self, batch: Batch) -> _Staged | None:
        """Decode and roll up (loading what is needed); None if asked to stop while InfluxDB fails."""
        staged = self._decode(batch)
        if staged.readings:
            try:
                staged.plan = await self._until_ok("influxdb", lambda: self._prepare_owned(staged))
            except _Stopped:
                return None
            except _Fenced:
                staged.fenced = True  # revoked while InfluxDB failed: stop retrying, the new owner replays
            except RECORD_ERRORS as exc:  # for good (transient ones _until_ok retries): find the records
                try:
                    staged.plan = await self._prepare_isolating(staged, exc)
                except _Stopped:
                    return None
        staged.prepared_at = time.perf_counter()
        return staged

    async def _prepare_isolating(self, staged: _Staged, first: Exception) -> WritePlan | None:
        """Bisect the batch to the readings whose rollup fails for good; dead-letter them, prepare the rest.

        No single record can stop a partition (docs/decisions/0202). A prepare that fails leaves
        no half-merged facility in the cache (see :meth:`RollupEngine.prepare`), so the attempts
        keep it and the batch in flight of the pipelined loop stays consistent.
        """
        log.warning("prepare_failed_isolating", readings=len(staged.readings), error=f"{type(first).__name__}: {first}")

        async def fails(part: list[int]) -> list[tuple[int, str]]:
            try:
                await self._until_ok(
                    "influxdb", lambda: self.engine.prepare([staged.readings[i] for i in part], self._previous_written)
                )
                return []
            except RECORD_ERRORS as exc:
                if len(part) == 1:
                    return [(part[0], f"{type(exc).__name__}: {exc}"[:3000])]
                mid = len(part) // 2
                return await fails(part[:mid]) + await fails(part[mid:])

        bad = dict(await fails(list(range(len(staged.readings)))))
        for i, reason in sorted(bad.items()):
            staged.rejects.append((staged.records[i], Rejected("unprocessable", reason)))
        keep = [i for i in range(len(staged.readings)) if i not in bad]
        staged.readings = [staged.readings[i] for i in keep]
        staged.records = [staged.records[i] for i in keep]
        if not staged.readings:
            return None
        return await self._until_ok("influxdb", lambda: self.engine.prepare(staged.readings, self._previous_written))

    async def _finish(self, staged: _Staged) -> None:
        """Write, dead-letter, then ack; a shutdown during a sink failure leaves it unacked (it replays)."""
        plan = staged.plan
        try:
            if staged.fenced:
                raise _Fenced
            if plan is not None:
                await self._until_ok("influxdb", lambda: self._write_owned(staged, plan))
                for index, reason in plan.rejected_raw:
                    staged.rejects.append((staged.records[index], Rejected("sink_rejected", reason)))
                self._fault_point()
            if staged.rejects:
                self._check_owned(staged)  # the new owner dead-letters them when it replays
                await self._until_ok("kafka_dlq", lambda: self._send_dead_letters(staged.rejects))
            notices = late_windows(((r.facility_id, r.ts) for r in staged.readings), staged.now, self.lateness)
            if notices:
                await self._until_ok("kafka_late_windows", lambda: self._send_late_windows(notices))
        except _Stopped:
            return
        except _Fenced:
            metrics.BATCHES_FENCED.inc()
            log.warning("batch_fenced", readings=len(staged.readings), note="partitions revoked; new owner replays")
            return
        await self._ack(staged.batch)
        done = time.perf_counter()
        log.debug(
            "batch_acked",
            readings=len(staged.readings),
            rejected=len(staged.rejects),
            rollups=len(plan.rollup_lines) if plan else 0,
            prepare_s=round(staged.prepared_at - staged.started, 4),
            write_ack_s=round(done - staged.prepared_at, 4),
        )
        metrics.READINGS.labels("rolled_up").inc(len(staged.readings) - (len(plan.rejected_raw) if plan else 0))
        for _, rej in staged.rejects:
            metrics.READINGS.labels(rej.reason).inc()
        metrics.BATCH_SECONDS.observe(done - staged.started)

    async def _previous_written(self) -> None:
        """Before a load from InfluxDB: let the batch in flight finish, or the load could miss its
        points (they would be missing from the rollups recomputed from that load)."""
        previous = self.previous
        if previous is not None and previous is not asyncio.current_task():
            await asyncio.wait([previous])

    def _check_owned(self, staged: _Staged) -> None:
        if self._revoked or staged.epoch != self._epoch:
            raise _Fenced

    def partitions_assigned(self) -> None:
        self._revoked = False

    async def _prepare_owned(self, staged: _Staged) -> WritePlan:
        self._check_owned(staged)  # each retry first: a revoked batch stops retrying
        return await self.engine.prepare(staged.readings, self._previous_written)

    async def _write_owned(self, staged: _Staged, plan: WritePlan) -> None:
        """Write the plan unless the batch's partitions were revoked since it was taken.

        The write runs as a task that :meth:`fence_writes` can await (and cancel past the wait)
        during a revocation: the group does not complete the rebalance before the revocation
        callback returns, so the new owner cannot write these windows while this write is in flight.
        """
        self._check_owned(staged)
        task = asyncio.create_task(self.engine.write(plan))
        self._writes.add(task)
        try:
            await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):
                raise _Fenced from None  # cancelled by fence_writes, not by our caller
            raise
        finally:
            self._writes.discard(task)
        self.writes_done += 1

    async def fence_writes(self) -> None:
        """On revocation: fence every batch taken so far, and let the write in flight finish
        (up to ``revoke_write_wait_s``) or cancel it, before the rebalance may go on."""
        self._epoch += 1
        self._revoked = True
        pending = [t for t in self._writes if not t.done()]
        if not pending:
            return
        log.info("revocation_waits_for_write", writes=len(pending))
        _, late = await asyncio.wait(pending, timeout=self.cfg.revoke_write_wait_s)
        for task in late:
            task.cancel()
        if late:
            metrics.WRITES_CANCELLED.inc(len(late))
            log.error("revocation_cancelled_write", writes=len(late), waited_s=self.cfg.revoke_write_wait_s)
            await asyncio.wait(late)

    def _fault_point(self) -> None:
        """Deterministic crash for the kill -9 chaos test (off by default): after the write, before
        the ack -- the window where a crash must neither lose nor double anything."""
        limit = self.cfg.fault_kill_after_writes
        if limit and self.writes_done >= limit:
            log.warning("fault_point_sigkill", writes_done=self.writes_done)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _send_dead_letters(self, rejects: list[tuple[Record, Rejected]]) -> None:
        now = utcnow()
        sends = []
        for rec, rej in rejects:
            source = f"kafka:{rec.topic}/{rec.partition}@{rec.offset}"
            event = dead_letter(rec.value, rej.reason, rej.detail, source, rec.key, now)
            meter_id = _meter_id_of(rec.value) if rej.reason in _DECODED_REJECTS else None
            sends.append(send_event(self.producer, self.cfg.dlq_topic, meter_id, event))
        await asyncio.wait_for(asyncio.gather(*sends), self.settings.kafka.produce_timeout_s)

    async def ensure_late_windows_topic(self) -> None:
        """The late-window topic is new in this release: create it where the platform has not yet."""
        with contextlib.suppress(Exception):  # a broker down at start: sending retries under backpressure
            await ensure_topics_async(
                self.settings.kafka.bootstrap_servers,
                {self.cfg.late_windows_topic: TOPICS[LATE_WINDOWS].partitions},
                timeout_s=self.settings.kafka.request_timeout_s,
                security=security_options(self.settings.kafka),
            )

    async def _send_late_windows(self, notices: list[Any]) -> None:
        now = utcnow()
        sends = [
            send_event(self.producer, self.cfg.late_windows_topic, n.facility_id, late_window_event(n, now))
            for n in notices
        ]
        await asyncio.wait_for(asyncio.gather(*sends), self.settings.kafka.produce_timeout_s)
        metrics.LATE_WINDOWS.inc(len(notices))

    async def _until_ok(self, sink: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` until it succeeds, pausing consumption meanwhile; :class:`_Stopped` on shutdown.

        The first call runs as is, even during a shutdown (the batch in hand is finished and acked);
        once it fails transiently the retries go through the one retry policy (``keep_trying``,
        decision 0840): backoff, an open breaker waited out, and a shutdown that cuts the wait.
        No polling while paused: the heartbeat keeps the membership; an outage longer than
        ``max_poll_interval_ms`` makes the worker leave the group, its acks are refused (stale
        generation) and the batch replays (no loss, see docs/decisions/0200).
        """
        try:
            return await step()
        except TRANSIENT as exc:
            first: BaseException = exc

        self._failing += 1
        if self._failing == 1:
            log.warning("backpressure_on", sink=sink, error=_reason(sink, first))
            self._pause_fetching()
            metrics.BACKPRESSURE.set(1)
        self.health.set_not_ready(BACKPRESSURE, _reason(sink, first))
        policy = RetryPolicy(attempts=None, base_delay_s=0.2, max_delay_s=self.cfg.backpressure_max_delay_s)

        async def boxed() -> tuple[T]:  # a step may return None; keep_trying's None means "stopped"
            return (await step(),)

        try:
            if self.stop.is_set():
                log.warning("shutdown_during_backpressure", sink=sink, note="batch not acked; replays")
                raise _Stopped from first
            got = await keep_trying(
                sink,
                boxed,
                policy=policy,
                is_transient=lambda exc: isinstance(exc, TRANSIENT),
                on_error=lambda exc: self.health.set_not_ready(BACKPRESSURE, _reason(sink, exc)),
                stop=self.stop,
            )
            if got is None:
                log.warning("shutdown_during_backpressure", sink=sink, note="batch not acked; replays")
                raise _Stopped from first
            return got[0]
        finally:
            self._failing -= 1
            if self._failing == 0:
                self._resume_fetching()
                metrics.BACKPRESSURE.set(0)
                self.health.clear(BACKPRESSURE)
                log.info("backpressure_off", sink=sink)

    # The engine running the pipeline (aggregation.faust_worker) provides these.
    def _pause_fetching(self) -> None:
        raise NotImplementedError

    def _resume_fetching(self) -> None:
        raise NotImplementedError

    async def _ack(self, batch: Batch) -> None:
        raise NotImplementedError


def _reason(sink: str, exc: BaseException) -> str:
    return f"{sink} failing, consumption paused: {type(exc).__name__}: {exc}"[:300]


def _meter_id_of(value: bytes | None) -> str | None:
    """DLQ key (the topic is keyed by meter_id where known) for records that decoded fine."""
    got = decode_reading(value)
    return None if isinstance(got, Rejected) else got.payload.meter_id
