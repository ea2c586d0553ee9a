"""Faust's aiokafka consumer: fetched records handed over in batches, eagerly, and no stale acks.

Faust's fetch loop (``Consumer._drain_messages``) hands each message to the conductor, which
decodes it into an ``Event``, queues it on the topic's stream and lets the agent iterate it one
event at a time: about half of the worker's CPU per reading (decision 0810). With a
:class:`BatchHandoff` set, :class:`EagerHandoffConsumer` runs its own fetch loop instead: it keeps
Faust's ``getmany`` (active partitions, group generation, flow control), Faust's read offsets and
offset gaps, and hands whole batches of messages (``max_records``, or fewer when no more arrived
within ``max_wait_s``) to the handoff -- one hand-off per batch instead of one per message.

Faust's fetch loop hands every message to the conductor with
``wait_first(callback(message), suspend_flow.wait())`` so that a rebalance can abandon a hand-off
that is blocked on a full stream buffer. ``mode``'s ``wait_first`` wraps each argument, plus the
service's stopped and crashed events, in a task and waits on all four: four tasks and an
``asyncio.wait`` per message, the largest single cost of the Faust engine (decision 0200).

This subclass starts the hand-off eagerly -- the idea of Python 3.12's ``eager_task_factory``: the
callback runs inline up to its first suspension. A hand-off that finishes without suspending (a
stream buffer with room, the common case) never becomes a task; one that does suspend continues
inside ``wait_first`` exactly as before, so a rebalance can still abandon it. The eager path is
taken only while the flow is not suspended and the service is neither stopped nor crashed, i.e.
when ``wait_first`` would have let the callback run to completion anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator
from typing import Any, Protocol

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import Message
from mode.services import WaitArgT, WaitResults


class BatchHandoff(Protocol):
    """Where the fetch loop puts batches of fetched messages (the agent's bounded channel)."""

    max_records: int
    max_wait_s: float

    async def put(self, batch: list[Message]) -> None: ...


class _Resumed:
    """Awaitable that continues a coroutine already advanced to its first suspension."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending  # what the coroutine yielded: the future it waits on, or None

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: delivered into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


class EagerHandoffConsumer(AIOKafkaConsumer):
    """aiokafka-driver consumer whose hand-off skips the tasks when it need not wait, and hands
    fetched messages over in batches when a :class:`BatchHandoff` is set."""

    batch_handoff: BatchHandoff | None = None

    async def _drain_messages(self, fetcher: Any) -> None:
        handoff = self.batch_handoff
        if handoff is None:
            await super()._drain_messages(fetcher)
            return
        carry: list[Message] = []  # fetched beyond the last batch's max_records: the next batch's start
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                fetched = await self._fetch_batch(handoff, carry)
                batch, carry = fetched[: handoff.max_records], fetched[handoff.max_records :]
                if batch:
                    await self.wait_first(handoff.put(batch), self.suspend_flow.wait())
                else:
                    await asyncio.sleep(0)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _fetch_batch(self, handoff: BatchHandoff, carry: list[Message]) -> list[Message]:
        """At least ``max_records`` messages, or fewer once ``max_wait_s`` passed since the first one.

        Faust's own rules per message: an offset below the partition's read offset is a re-fetch
        and skipped; a jump in offsets (compaction, transaction markers) is recorded as a gap so
        that commits can pass it. A rebalance seeks and resets the read offsets (Faust), and a
        batch it abandons was never acked: it replays from the committed offset.
        """
        batch = carry
        deadline = None if not batch else time.monotonic() + handoff.max_wait_s
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        while len(batch) < handoff.max_records and not self.should_stop:
            timeout = 1.0 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            for tp, message in await self._getmany_batch(timeout):
                offset, last = message.offset, read_offset[tp]
                if last is not None and offset < last:
                    continue
                if last and offset - last > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, last + 1, offset)
                read_offset[tp] = offset
                batch.append(message)
            if not batch:
                break  # nothing within a second: let the loop check for a stop
            if deadline is None:
                deadline = time.monotonic() + handoff.max_wait_s
        return batch

    async def _getmany_batch(self, timeout: float) -> list[tuple[Any, Message]]:
        """Faust's ``getmany`` as one list instead of an async generator (decision 1010).

        The same rules: records of the active (or buffered) partitions only, none once the group
        generation changed or the flow stopped (then Faust's seek back to the committed offsets),
        the monitor told each partition's high watermark. Without a suspension between records
        the generation and the flow cannot change inside the loop, so they are checked once per
        fetch; the watermark is told once per partition. Faust's round-robin order across
        partitions only mattered to a consumer taking one record at a time: the whole fetch is
        handed over here, each partition's records in offset order.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return []
        to_message, buffered, monitor = self._to_message, self._buffered_partitions, self.app.monitor
        out: list[tuple[Any, Message]] = []
        for tp, tp_records in records.items():
            if tp_records and (active_partitions is None or tp in active_partitions or tp in buffered):
                monitor.track_tp_end_offset(tp, self.highwater(tp))
                out.extend([(tp, to_message(tp, record)) for record in tp_records])
        return out

    async def wait_first(self, *coros: WaitArgT, timeout: Any = None) -> WaitResults:
        if len(coros) == 2 and timeout is None and self._may_hand_off_eagerly():
            work, abandon = coros
            if isinstance(work, Coroutine) and isinstance(abandon, Coroutine):
                try:
                    pending = work.send(None)
                except StopIteration as done:
                    abandon.close()  # never started: nothing to cancel
                    return WaitResults([work], [done.value], False)
                except BaseException:
                    abandon.close()
                    raise
                coros = (_Resumed(work, pending), abandon)
        return await super().wait_first(*coros, timeout=timeout)

    def ack(self, message: Message) -> bool:
        """Refuse acks for a message fetched in an earlier consumer-group generation.

        Faust acks the events its stream *skips* because they belong to an old generation, and
        our agent acks a batch once written, even if a rebalance happened meanwhile. If this
        worker got the same partition back, such an ack could let a later commit pass offsets
        that were re-fetched but not yet written (a crash then loses them). Not acking is
        always safe: the partition's new owner reads from the committed offset and the
        rollup writes are idempotent (decision 0200).
        """
        if message.generation_id is not None and message.generation_id != self.app.consumer_generation_id:
            return False
        return bool(super().ack(message))

    def _may_hand_off_eagerly(self) -> bool:
        return not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())


class EagerHandoffTransport(AIOKafkaTransport):
    Consumer = EagerHandoffConsumer
