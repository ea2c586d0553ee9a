"""Faust's aiokafka consumer: an eager hand-off of each fetched message, and no stale acks.

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

from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import Message
from mode.services import WaitArgT, WaitResults


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
    """aiokafka-driver consumer whose per-message hand-off skips the tasks when it need not wait."""

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
