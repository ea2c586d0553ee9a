"""The rollup worker core: consume readings in batches, write raw + rollups, then commit.

``RollupWorker`` is the plain aiokafka loop (``energy aggregation run --engine aiokafka``);
``aggregation.faust_worker.FaustRollupWorker`` (the default) reuses its decode, rollup, DLQ and
backpressure steps inside a Faust agent and replaces the commit with manual acks.

Offsets are committed only after InfluxDB confirmed every write of the batch and every
dead letter of the batch was acknowledged by the broker (AGG-1). While InfluxDB fails, the
worker keeps the one batch it has, pauses its partitions (so nothing more is fetched),
reports why on ``/ready`` and retries with backoff until the write succeeds (AGG-3).
See docs/decisions/0200-aggregation-worker.md.
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
from typing import Any, TypeVar

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from aggregation import metrics
from aggregation.decode import Rejected, decode_reading
from aggregation.dlq import dead_letter, utcnow
from aggregation.domain.lateness import TOO_LATE, late_windows
from aggregation.engine import RollupEngine, WritePlan
from aggregation.late_windows import late_window_event, lateness_policy
from energy.adapters.influx import InfluxClient, InfluxError, InfluxUnavailableError
from energy.adapters.kafka import make_consumer, make_producer, security_options, send_event
from energy.observability.health import Health
from energy.resilience import CircuitOpenError, backoff_delays
from energy.settings import Settings
from energy.stack.topics import ensure_topics_async
from schemas.readings import MeterReading
from schemas.topics import LATE_WINDOWS, TOPICS

log = structlog.get_logger("aggregation.worker")

T = TypeVar("T")

# Errors a record can cause for good while its batch is prepared (a 4xx from InfluxDB, a value that
# does not parse, arithmetic or lookups a bad value breaks): bisected to the record, never retried.
# Control flow (_Stopped and the like) and transient errors are deliberately not in this list.
RECORD_ERRORS = (InfluxError, ValueError, ArithmeticError, LookupError, TypeError)
_DECODED_REJECTS = ("too_late", "timestamp_in_future", "sink_rejected", "unprocessable")
TRANSIENT = (InfluxUnavailableError, CircuitOpenError, TimeoutError, httpx.TransportError, KafkaError, OSError)
BACKPRESSURE = "sink_backpressure"


class _Stopped(Exception):
    """Shutdown was asked while a sink was failing: leave the batch uncommitted (it replays)."""


class _Fenced(Exception):
    """The batch's partitions were revoked: its windows belong to another worker now (0210)."""


@dataclass
class _Staged:
    batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    started: float
    readings: list[MeterReading] = field(default_factory=list)
    records: list[ConsumerRecord[Any, Any]] = field(default_factory=list)  # of each reading
    rejects: list[tuple[ConsumerRecord[Any, Any], Rejected]] = field(default_factory=list)
    plan: WritePlan | None = None
    prepared_at: float = 0.0
    now: datetime = field(default_factory=utcnow)  # the clock lateness is judged by
    epoch: int = 0  # the worker's revocation count when the batch was taken
    fenced: bool = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RollupWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.fence_writes()
        self.worker.engine.reset()
        for tp in revoked:
            self.worker.committed.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition), self.worker.cfg.consumer_group)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.engine.reset()
        self.worker.partitions_assigned()
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class RollupWorker:
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
        self.consumer: AIOKafkaConsumer = self._make_consumer()
        self.producer: AIOKafkaProducer = make_producer(settings.kafka)
        self.committed: dict[TopicPartition, int] = {}
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
        self.health.add_check("influxdb", self.influx.ping)

    def _make_consumer(self) -> AIOKafkaConsumer:
        return make_consumer(
            self.settings.kafka,
            group_id=self.cfg.consumer_group,
            max_poll_records=self.cfg.batch_max_readings,
            session_timeout_ms=self.cfg.session_timeout_ms,
            heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
            max_poll_interval_ms=self.cfg.max_poll_interval_ms,
            rebalance_timeout_ms=self.cfg.rebalance_timeout_ms,
            # Bounded prefetch: at most this many bytes buffered per partition while we write.
            max_partition_fetch_bytes=1_048_576,
            fetch_max_bytes=8 * 1_048_576,
        )

    async def start(self) -> None:
        timeout = self.settings.kafka.request_timeout_s * 4
        await self.ensure_late_windows_topic()
        await asyncio.wait_for(self.producer.start(), timeout)
        self.consumer.subscribe([self.cfg.readings_topic], listener=_Rebalance(self))
        await asyncio.wait_for(self.consumer.start(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.consumer.stop(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.producer.stop(), 10)
        await self.influx.close()

    async def run(self) -> None:
        """Consume until :attr:`stop` is set; batches in hand are finished and committed first.

        Two batches are in flight at most: while batch N is written and committed, batch N+1
        is decoded and rolled up (CPU) — commits stay in order because N+1's write starts only
        after N's commit.
        """
        await self.start()
        inflight: asyncio.Task[None] | None = None
        try:
            while not self.stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=int(self.cfg.batch_max_wait_s * 1000), max_records=self.cfg.batch_max_readings
                )
                if batch:
                    self.engine.evict()  # here, never while a prepare is loading
                    staged = await self._stage(batch)
                    if inflight is not None:
                        await inflight
                        inflight = None
                    if staged is None:
                        break
                    inflight = asyncio.create_task(self._finish(staged))
                elif inflight is not None and inflight.done():
                    await inflight
                    inflight = None
                await self.update_lag()
        finally:
            if inflight is not None:
                await inflight
            await self.close()

    async def handle_batch(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Stage, write and commit one batch (no pipelining)."""
        staged = await self._stage(batch)
        if staged is not None:
            await self._finish(staged)

    def _decode(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> _Staged:
        staged = _Staged(batch, time.perf_counter(), epoch=self._epoch)
        now, policy = staged.now, self.lateness
        oldest, newest = policy.accepted_range(now)
        for tp, records in batch.items():
            if records:
                self.seen_end[tp] = max(self.seen_end.get(tp, 0), records[-1].offset + 1)
            for rec in records:
                got = decode_reading(rec.value)
                if isinstance(got, Rejected):
                    staged.rejects.append((rec, got))
                elif not oldest <= got.payload.ts <= newest:
                    refused = policy.refusal(got.payload.ts, now) or TOO_LATE
                    staged.rejects.append((rec, Rejected(refused, policy.detail(refused, got.payload.ts, now))))
                else:
                    staged.readings.append(got.payload)
                    staged.records.append(rec)
        return staged

    async def _stage(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> _Staged | None:
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
                await self._until_ok("influxdb", lambda: self.engine.prepare([staged.readings[i] for i in part]))
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
        return await self._until_ok("influxdb", lambda: self.engine.prepare(staged.readings))

    async def _finish(self, staged: _Staged) -> None:
        """Write, dead-letter, then commit; a shutdown during a sink failure leaves it uncommitted."""
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
        await self._commit(staged.batch)
        done = time.perf_counter()
        log.debug(
            "batch_committed",
            readings=len(staged.readings),
            rejected=len(staged.rejects),
            rollups=len(plan.rollup_lines) if plan else 0,
            prepare_s=round(staged.prepared_at - staged.started, 4),
            write_commit_s=round(done - staged.prepared_at, 4),
        )
        metrics.READINGS.labels("rolled_up").inc(len(staged.readings) - (len(plan.rejected_raw) if plan else 0))
        for _, rej in staged.rejects:
            metrics.READINGS.labels(rej.reason).inc()
        metrics.BATCH_SECONDS.observe(done - staged.started)

    def _check_owned(self, staged: _Staged) -> None:
        if self._revoked or staged.epoch != self._epoch:
            raise _Fenced

    def partitions_assigned(self) -> None:
        self._revoked = False

    async def _prepare_owned(self, staged: _Staged) -> WritePlan:
        self._check_owned(staged)  # each retry first: a revoked batch stops retrying
        return await self.engine.prepare(staged.readings)

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
        the commit -- the window where a crash must neither lose nor double anything."""
        limit = self.cfg.fault_kill_after_writes
        if limit and self.writes_done >= limit:
            log.warning("fault_point_sigkill", writes_done=self.writes_done)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _send_dead_letters(self, rejects: list[tuple[ConsumerRecord[Any, Any], Rejected]]) -> None:
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

        No polling while paused: the heartbeat keeps the membership; an outage longer than
        ``max_poll_interval_ms`` makes the worker leave the group, the commit then fails and the
        batch replays (no loss, see docs/decisions/0200).
        """
        attempt = 0
        failing = False
        try:
            while True:
                try:
                    return await step()
                except TRANSIENT as exc:
                    reason = f"{sink} failing, consumption paused: {type(exc).__name__}: {exc}"[:300]
                    if not failing:
                        failing = True
                        self._failing += 1
                        if self._failing == 1:
                            log.warning("backpressure_on", sink=sink, error=reason)
                            self._pause_fetching()
                            metrics.BACKPRESSURE.set(1)
                    self.health.set_not_ready(BACKPRESSURE, reason)
                    if self.stop.is_set():
                        log.warning("shutdown_during_backpressure", sink=sink, note="batch not committed; replays")
                        raise _Stopped from exc
                    delay = backoff_delays(attempt + 2, 0.2, self.cfg.backpressure_max_delay_s)[-1]
                    attempt += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), max(delay, 0.05))
        finally:
            if failing:
                self._failing -= 1
                if self._failing == 0:
                    self._resume_fetching()
                    metrics.BACKPRESSURE.set(0)
                    self.health.clear(BACKPRESSURE)
                    log.info("backpressure_off", sink=sink, attempts=attempt)

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    def _pause_fetching(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def _resume_fetching(self) -> None:
        self.consumer.resume(*self.consumer.assignment())

    async def _commit(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in batch.items() if records}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another worker during the batch; it replays them.
            log.warning("commit_failed_rebalance", error=str(exc))
            self.engine.reset()
            return
        for tp, om in offsets.items():
            self.committed[tp] = om.offset

    async def update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_lag < self.cfg.lag_update_s:
            return
        self._last_lag = now
        tps = list(self.consumer.assignment())
        if not tps:
            return
        try:
            ends = await asyncio.wait_for(self.consumer.end_offsets(tps), self.settings.kafka.request_timeout_s)
        except (TimeoutError, KafkaError) as exc:
            log.warning("lag_update_failed", error=str(exc))
            return
        for tp in tps:
            done = self.committed.get(tp)
            if done is None:
                done = await self.consumer.committed(tp) or 0
                self.committed[tp] = done
            # Tansu reports the end offset as the base of the last record batch, so take the
            # largest of what the broker says and what we have already fetched.
            end = max(ends.get(tp, 0), self.consumer.highwater(tp) or 0, self.seen_end.get(tp, 0))
            lag = max(0, end - done)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition), self.cfg.consumer_group).set(lag)


def _meter_id_of(value: bytes | None) -> str | None:
    """DLQ key (the topic is keyed by meter_id where known) for records that decoded fine."""
    got = decode_reading(value)
    return None if isinstance(got, Rejected) else got.payload.meter_id


async def run_service(settings: Settings, with_archive: bool | None = None, engine: str | None = None) -> None:
    """``energy aggregation run``: worker (+ archiver) and the ops endpoints, until SIGTERM/SIGINT."""
    from energy.observability.http import serve_ops

    health = Health("aggregation")
    worker: RollupWorker
    if (engine or settings.aggregation.engine) == "faust":
        from aggregation.faust_worker import FaustRollupWorker

        worker = FaustRollupWorker(settings, health)
    else:
        worker = RollupWorker(settings, health)
    stop = worker.stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ops = asyncio.create_task(serve_ops(health, settings.stack.bind_host, settings.endpoints.aggregation_port, stop))
    tasks = [asyncio.create_task(worker.run())]
    archive = settings.aggregation.archive_enabled if with_archive is None else with_archive
    if archive:
        from aggregation.archive import Archiver

        archiver = Archiver(settings, stop=stop, health=health)
        tasks.append(asyncio.create_task(archiver.run()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                stop.set()
                raise t.exception()  # type: ignore[misc]
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for t in tasks:
            if not t.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 15)
        await ops
