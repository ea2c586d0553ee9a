"""The rollup worker: a Faust app whose agent rolls batches up and acks them only after the write.

Faust owns the consumer group (membership, static membership, rebalances, offsets, commits). Its
fetch loop hands fetched messages over in batches (``EagerHandoffConsumer`` with a batch hand-off:
up to ``batch_max_readings``, or what arrived within ``batch_max_wait_s``) into a bounded
in-memory Faust channel; the ``rollups`` agent iterates that channel one batch at a time, runs
each batch through :class:`aggregation.pipeline.RollupPipeline` (decode -> lateness ->
RollupEngine -> InfluxDB -> DLQ, retried under backpressure) and only then acks every message of
the batch (``consumer.ack``); Faust commits acked offsets every ``broker_commit_interval`` and once
more at graceful shutdown. While batch N is written and acked, batch N+1 is decoded and rolled up
(decision 0810): acks stay in order because N+1's write starts only after N's ack.
See docs/decisions/0200-aggregation-worker.md and 0810.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted

from aggregation import metrics
from aggregation.faust_consumer import EagerHandoffConsumer, EagerHandoffTransport
from aggregation.pipeline import Batch, RollupPipeline, _Staged
from energy.adapters.kafka import make_consumer
from energy.adapters.tls import client_ssl_context
from energy.observability.health import Health
from energy.observability.metrics import QUEUE_CAPACITY, QUEUE_DEPTH
from energy.settings import KafkaSettings, Settings

log = structlog.get_logger("aggregation.faust_worker")

JOINING = "kafka_group"
# Fetched batches waiting for the agent (the bounded read-ahead): full means the fetch loop waits.
FETCHED_QUEUE = "aggregation_fetched_batches"


def broker_credentials(kafka: KafkaSettings) -> faust.auth.Credentials | None:
    """Faust's form of :func:`energy.adapters.kafka.security_options` (TLS, SASL/SCRAM over TLS)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = client_ssl_context(kafka.ssl_ca_file)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    assert kafka.sasl_username is not None and kafka.sasl_password is not None  # settings validate it
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        mechanism=kafka.sasl_mechanism,
        ssl_context=context,
    )


def make_app(settings: Settings) -> faust.App:
    cfg = settings.aggregation
    app = faust.App(
        cfg.consumer_group,  # the app id is the consumer group
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        broker_credentials=broker_credentials(settings.kafka),
        store="memory://",
        datadir=str(cfg.faust_datadir),
        autodiscover=False,
        web_enabled=False,  # /healthz /ready /metrics are served by energy.observability.http.serve_ops
        topic_allow_declare=True,
        topic_replication_factor=1,
        topic_partitions=cfg.faust_topic_partitions,
        topic_disable_leader=True,  # no assignor leader topic: the readings topic is the only input
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=cfg.faust_commit_interval_s,
        broker_commit_every=10_000_000,  # commit on the timer and at shutdown, not every N acks
        # Tansu completes a join after about half the session timeout (see 0200).
        broker_session_timeout=cfg.session_timeout_ms / 1000,
        broker_heartbeat_interval=cfg.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=cfg.rebalance_timeout_ms / 1000,
        broker_max_poll_interval=cfg.max_poll_interval_ms / 1000,
        broker_max_poll_records=cfg.batch_max_readings,
        consumer_group_instance_id=cfg.group_instance_id,  # static membership when set (0210)
        # Bounded memory: at most this many fetched events wait for the agent; when the buffer is
        # full Faust's fetch loop waits too (its flow control). Read-ahead while a batch is written.
        stream_buffer_maxsize=max(cfg.faust_stream_buffer, cfg.batch_max_readings),
        # Do not wait for every fetched event to be acked before a stop or rebalance: events taken
        # but not written are deliberately left unacked (they replay), so waiting would hang.
        stream_wait_empty=False,
        consumer_max_fetch_size=1_048_576,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.transport = EagerHandoffTransport(app.conf.broker_consumer, app)
    return app


class FaustRollupWorker(RollupPipeline):
    """The rollup pipeline run by a Faust agent; Faust owns the consumer and the commits."""

    def __init__(self, settings: Settings, health: Health | None = None) -> None:
        super().__init__(settings, health)
        self.app = make_app(settings)
        self.topic = self.app.topic(self.cfg.readings_topic, key_type=bytes, value_type=bytes, internal=False)
        self.app.topics.add(self.topic)  # subscribed by the conductor; fetched through the batch hand-off
        # Bounded read-ahead while a batch is written: at most faust_stream_buffer fetched readings
        # wait for the agent; when the channel is full the fetch loop waits (Faust's flow control).
        capacity = max(1, self.cfg.faust_stream_buffer // self.cfg.batch_max_readings)
        self.batches = self.app.channel(maxsize=capacity)
        self._queued = 0
        QUEUE_CAPACITY.labels(FETCHED_QUEUE).set(capacity)
        QUEUE_DEPTH.labels(FETCHED_QUEUE).set(0)
        self.max_records = self.cfg.batch_max_readings
        self.max_wait_s = self.cfg.batch_max_wait_s
        self.app.agent(self.batches, name="rollups")(self._agent)
        consumer = self.app.consumer  # built here, started with the app: its fetch loop hands batches to put()
        assert isinstance(consumer, EagerHandoffConsumer)
        consumer.batch_handoff = self
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self._busy = 0  # batches taken and not yet acked or dropped
        self._idle = asyncio.Event()  # set while no batch is staged or being written: shutdown waits
        self._idle.set()
        self.offsets: AIOKafkaConsumer = make_consumer(settings.kafka, group_id=self.cfg.consumer_group)
        self.batches_acked = 0
        self.failure: BaseException | None = None
        self.health.set_not_ready(JOINING, "waiting for a partition assignment")

    async def put(self, batch: list[Any]) -> None:
        """The fetch loop's batch hand-off (``BatchHandoff``): into the agent's bounded channel."""
        await self.batches.put(batch)  # type: ignore[arg-type]  # a plain value: the agent gets it as is
        self._queued += 1
        QUEUE_DEPTH.labels(FETCHED_QUEUE).set(self._queued)

    async def _on_revoked(self, app: Any, /, *args: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        await self.fence_writes()  # one writer per window: before the new owner can write (0210)
        self.engine.reset()
        for tp in revoked:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition), self.cfg.consumer_group)

    async def _on_assigned(self, app: Any, /, *args: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", set())
        self.engine.reset()
        self.partitions_assigned()
        self.health.clear(JOINING)
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))

    def assignment(self) -> set[TopicPartition]:
        try:
            tps = self.app.consumer.assignment()
        except ConsumerNotStarted:  # before start or after stop
            return set()
        return {TopicPartition(tp.topic, tp.partition) for tp in tps}

    async def _agent(self, stream: Any) -> None:
        inflight: asyncio.Task[None] | None = None
        try:
            async for messages in stream:
                self._queued -= 1
                QUEUE_DEPTH.labels(FETCHED_QUEUE).set(self._queued)
                if self.stop.is_set() or self.failure is not None:
                    continue  # not acked: they replay after the restart
                self._hold()
                handed_on = False
                try:
                    staged = await self._take(messages)
                    if inflight is not None:
                        await inflight  # acks in order: N+1 is written only after N is acked
                        inflight = None
                    if staged is not None and not self.stop.is_set():
                        inflight = self.previous = asyncio.create_task(self._finish(staged))
                        inflight.add_done_callback(self._batch_done)
                        handed_on = True
                except Exception as exc:
                    self._fail(exc)
                finally:
                    if not handed_on:
                        self._release()
        finally:
            if inflight is not None and not inflight.done():
                with contextlib.suppress(BaseException):
                    await inflight

    def _hold(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _release(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())  # type: ignore[arg-type]
        self._release()

    def _fail(self, exc: BaseException) -> None:
        """Unexpected (transient sink failures are retried): stop the whole worker instead of letting
        Faust restart the agent past an unacked batch."""
        if self.failure is None:
            log.error("agent_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            self.failure = exc
        self.stop.set()

    async def _take(self, messages: list[Any]) -> _Staged | None:
        # Messages fetched in an earlier group generation belong to a partition that was revoked
        # meanwhile: never written nor acked here (their owner reads them from the committed offset).
        generation = self.app.consumer_generation_id
        batch: Batch = defaultdict(list)
        for msg in messages:
            if msg.generation_id in (None, generation):
                batch[TopicPartition(msg.topic, msg.partition)].append(msg)
        if not batch:
            return None
        self.engine.evict()  # here, never while a prepare is loading
        return await self._stage(dict(batch))

    async def _ack(self, batch: Batch) -> None:
        ack = self.app.consumer.ack
        for records in batch.values():
            for msg in records:
                ack(msg)
        self.batches_acked += 1

    def _pause_fetching(self) -> None:
        """Nothing to do: while the agent retries it takes no more batches.

        The channel fills (``faust_stream_buffer`` readings) and the fetch loop's hand-off waits on
        it (Faust's flow control). Do NOT call ``app.consumer.pause_partitions()`` here: Faust drops
        records of a partition that leaves the active set while a fetched batch is being handed out,
        and the consumer position has already moved past them -- measured as lost readings in the
        InfluxDB-down chaos test.
        """

    def _resume_fetching(self) -> None:
        """Nothing to do: the fetch loop hands over again once the channel has room."""

    async def start(self) -> None:
        timeout = self.settings.kafka.request_timeout_s * 4
        await self.ensure_late_windows_topic()
        await asyncio.wait_for(self.producer.start(), timeout)
        await asyncio.wait_for(self.offsets.start(), timeout)
        await asyncio.wait_for(self.app.start(), timeout * 2)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.app.stop(), 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.offsets.stop(), 10)
        await super().close()

    async def run(self) -> None:
        """Run the Faust app until :attr:`stop`; finish the batch in hand, commit its offsets, leave."""
        await self.start()
        try:
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.cfg.lag_update_s / 2)
                await self.update_lag()
            await self._idle.wait()  # the batch being written is finished (or abandoned if a sink fails)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.app.consumer.commit(), self.settings.kafka.request_timeout_s)
            log.info("faust_worker_stopping", batches_acked=self.batches_acked)
        finally:
            await self.close()
        if self.failure is not None:
            raise self.failure  # exit non-zero; the batch in hand was not acked and replays

    async def update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_lag < self.cfg.lag_update_s:
            return
        self._last_lag = now
        tps = list(self.assignment())
        if not tps:
            return
        timeout = self.settings.kafka.request_timeout_s
        try:
            ends = await asyncio.wait_for(self.offsets.end_offsets(tps), timeout)
            for tp in tps:
                done = await asyncio.wait_for(self.offsets.committed(tp), timeout)
                # Tansu reports the end offset as the base of the last record batch, so take the
                # largest of what the broker says and what we have already fetched.
                end = max(ends.get(tp, 0), self.seen_end.get(tp, 0))
                lag = max(0, end - (done or 0))
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition), self.cfg.consumer_group).set(lag)
        except (TimeoutError, KafkaError) as exc:
            log.warning("lag_update_failed", error=str(exc))
