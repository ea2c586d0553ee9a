"""The eager hand-off in Faust's fetch loop keeps ``wait_first``'s meaning (aggregation/faust_consumer.py).

Faust calls ``wait_first(callback(message), suspend_flow.wait())`` for every fetched message; the
callback puts the event into the agent's bounded stream buffer. These tests drive the consumer's
``wait_first`` the same way, with a bounded queue standing in for that buffer. Since decision 0810
the fetch loop hands over batches (one ``wait_first`` per batch); the last tests pin how a batch is
fetched.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from aggregation.faust_consumer import EagerHandoffConsumer, _Resumed
from aggregation.faust_worker import make_app
from energy.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def consumer(settings: Settings) -> AsyncIterator[Any]:
    """Built inside the running loop (Faust binds its services to the loop current at build time)."""
    app = make_app(settings)
    built = app.consumer  # built, not started: no broker connection, no thread
    assert isinstance(built, EagerHandoffConsumer)
    yield built
    built._thread.thread_loop.close()  # the unstarted consumer thread's own event loop


async def hand_off(buffer: asyncio.Queue[int], item: int) -> int:
    await buffer.put(item)
    return item


def tasks_now() -> int:
    return len(asyncio.all_tasks())


async def blocked_on_put(buffer: asyncio.Queue[int]) -> None:
    """Until a put waits on the full queue (a positive signal, not a fixed sleep)."""
    for _ in range(1000):
        if buffer._putters:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0)
    raise AssertionError("the hand-off never blocked on the full buffer")


async def test_a_hand_off_with_room_finishes_inline_without_creating_tasks(consumer: Any) -> None:
    buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=10)
    before = tasks_now()
    abandon = consumer.suspend_flow.wait()
    result = await consumer.wait_first(hand_off(buffer, 7), abandon)
    assert tasks_now() == before
    assert result.stopped is False and result.results == [7]
    assert buffer.get_nowait() == 7 and buffer.empty()
    assert inspect.getcoroutinestate(abandon) == inspect.CORO_CLOSED  # closed, not leaked un-awaited


async def test_a_hand_off_blocked_on_a_full_buffer_completes_once_the_agent_takes_an_event(consumer: Any) -> None:
    buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    buffer.put_nowait(1)
    waiting = asyncio.ensure_future(consumer.wait_first(hand_off(buffer, 2), consumer.suspend_flow.wait()))
    await blocked_on_put(buffer)
    assert not waiting.done()
    assert buffer.get_nowait() == 1  # the agent takes one event: room for the blocked one
    result = await asyncio.wait_for(waiting, 5)
    assert result.results == [2]
    assert buffer.get_nowait() == 2 and buffer.empty()


async def test_a_rebalance_abandons_a_blocked_hand_off_and_the_event_never_reaches_the_buffer(consumer: Any) -> None:
    buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    buffer.put_nowait(1)
    waiting = asyncio.ensure_future(consumer.wait_first(hand_off(buffer, 2), consumer.suspend_flow.wait()))
    await blocked_on_put(buffer)
    consumer.stop_flow()  # what Faust does when partitions are revoked
    result = await asyncio.wait_for(waiting, 5)
    assert result.results == [True]  # the suspend_flow wait won
    # The abandoned put was cancelled: no putter is left to fill the room the agent makes.
    assert all(p.cancelled() for p in buffer._putters)  # type: ignore[attr-defined]
    buffer.get_nowait()
    assert buffer.empty() and not [p for p in buffer._putters if not p.cancelled()]  # type: ignore[attr-defined]
    consumer.resume_flow()


async def test_while_the_flow_is_suspended_hand_offs_run_as_tasks_as_faust_does(consumer: Any) -> None:
    ran_in: list[asyncio.Task[Any] | None] = []

    async def record() -> None:
        ran_in.append(asyncio.current_task())

    await consumer.wait_first(record(), consumer.suspend_flow.wait())
    consumer.stop_flow()
    try:
        await consumer.wait_first(record(), consumer.suspend_flow.wait())
    finally:
        consumer.resume_flow()
    here = asyncio.current_task()
    assert ran_in[0] is here, "flow active: the hand-off runs inline in the fetch loop's task"
    assert len(ran_in) == 2
    assert all(t is not here for t in ran_in[1:]), "flow suspended: never inline"


async def test_an_error_raised_by_the_hand_off_reaches_the_fetch_loop(consumer: Any) -> None:

    async def broken() -> None:
        raise ValueError("bad event")

    abandon = consumer.suspend_flow.wait()
    with pytest.raises(ValueError, match="bad event"):
        await consumer.wait_first(broken(), abandon)
    assert inspect.getcoroutinestate(abandon) == inspect.CORO_CLOSED


async def test_a_resumed_coroutine_sees_results_errors_and_cancellation_like_a_plain_task() -> None:
    seen: list[str] = []

    async def step(fut: asyncio.Future[int]) -> int:
        try:
            return (await fut) * 2
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    loop = asyncio.get_running_loop()
    for outcome in ("result", "error", "cancel"):
        fut: asyncio.Future[int] = loop.create_future()
        coro = step(fut)
        pending = coro.send(None)
        task = asyncio.ensure_future(_Resumed(coro, pending))
        await asyncio.sleep(0)
        if outcome == "result":
            fut.set_result(21)
            assert await task == 42
        elif outcome == "error":
            fut.set_exception(KeyError("k"))
            with pytest.raises(KeyError):
                await task
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert seen == ["cancelled"]


def fetched(consumer: Any, offset: int, generation: int) -> Any:
    from faust.types.tuples import TP, ConsumerMessage

    topic = consumer.app.conf.id + "-readings"
    return ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, TP(topic, 0), generation_id=generation)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_message_from_an_earlier_group_generation_is_never_acked(consumer: Any) -> None:
    consumer.app.consumer_generation_id = 7
    stale, current = fetched(consumer, 10, generation=6), fetched(consumer, 11, generation=7)
    assert consumer.ack(stale) is False
    assert stale.acked is False  # so no commit can move past it
    consumer.ack(current)
    assert current.acked is True
    consumer.app.consumer_generation_id = 8  # a rebalance while a batch was being written
    late = fetched(consumer, 12, generation=7)
    consumer.ack(late)
    assert late.acked is False


class _Handoff:
    def __init__(self, max_records: int, max_wait_s: float) -> None:
        self.max_records, self.max_wait_s = max_records, max_wait_s

    async def put(self, batch: list[Any]) -> None:  # not used by _fetch_batch
        raise AssertionError


def fetches(consumer: Any, chunks: list[list[int]]) -> list[int]:
    """Stand in for the fetch (``_getmany_batch``; the broker's side is exercised by the integration
    tests): each call returns the next chunk of offsets of partition 0; returns the count of calls made."""
    calls = [0]
    pending = list(chunks)

    async def getmany_batch(timeout: float) -> list[tuple[Any, Any]]:
        calls[0] += 1
        messages = [fetched(consumer, offset, generation=1) for offset in (pending.pop(0) if pending else [])]
        return [(msg.tp, msg) for msg in messages]

    consumer._getmany_batch = getmany_batch
    return calls


class _Record:
    """What aiokafka hands Faust per record (the fields ``_to_message`` reads)."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.timestamp, self.timestamp_type, self.headers = 1_700_000_000_000 + offset, 0, []
        self.key, self.value = b"k", f"v{partition}-{offset}".encode()
        self.checksum, self.serialized_key_size, self.serialized_value_size = None, 1, 8


@pytest.mark.parametrize("flow_active", [True, False])
async def test_the_batch_getmany_takes_what_fausts_getmany_yields(consumer: Any, flow_active: bool) -> None:
    """Faust's own ``getmany`` is the reference: same records of the same partitions (active or
    buffered ones only), each partition in offset order, same generation stamp; nothing while the
    flow is stopped."""
    from faust.types.tuples import TP

    topic = consumer.app.conf.id + "-readings"
    tps = [TP(topic, p) for p in range(4)]
    records = {tp: [_Record(topic, tp.partition, o) for o in range(tp.partition * 3)] for tp in tps}
    active = {tps[1], tps[3]}
    consumer._buffered_partitions = {tps[2]}

    async def wait_next_records(timeout: float) -> tuple[Any, Any]:
        return records, active

    seeks: list[int] = []

    async def perform_seek() -> None:
        seeks.append(1)

    consumer._wait_next_records = wait_next_records
    consumer.perform_seek = perform_seek
    consumer.highwater = lambda tp: 1000 + tp.partition
    consumer.app.consumer_generation_id = 5
    if not flow_active:
        consumer.flow_active = False
    try:
        expected = [(tp, m.offset, m.value, m.generation_id) async for tp, m in consumer.getmany(timeout=0.1)]
        got = [(tp, m.offset, m.value, m.generation_id) for tp, m in await consumer._getmany_batch(0.1)]
    finally:
        consumer.flow_active = True
        consumer._buffered_partitions = set()
        del consumer._wait_next_records, consumer.perform_seek, consumer.highwater
    assert sorted(got, key=lambda x: (x[0].partition, x[1])) == got  # partition by partition, in order
    assert sorted(got, key=lambda x: (x[0].partition, x[1])) == sorted(expected, key=lambda x: (x[0].partition, x[1]))
    if flow_active:
        # by hand: partitions 1 (active, 3 records), 2 (buffered, 6), 3 (active, 9); 0 has none
        assert [(tp.partition, n) for tp, n in _counts(got)] == [(1, 3), (2, 6), (3, 9)]
        assert {g for *_, g in got} == {5}
    else:
        assert got == [] and len(seeks) == 2  # Faust's getmany and ours each seek back


def _counts(rows: list[tuple[Any, ...]]) -> list[tuple[Any, int]]:
    out: dict[Any, int] = {}
    for row in rows:
        out[row[0]] = out.get(row[0], 0) + 1
    return list(out.items())


async def test_the_batch_fetch_takes_chunks_until_a_batch_is_full_and_skips_re_fetched_offsets(consumer: Any) -> None:
    consumer._read_offset.clear()
    # Offset 2 comes again after 4 was read (a re-fetch): skipped, Faust's rule (an offset below
    # the read offset). The chunk that fills the batch is taken whole (Faust's getmany cannot be
    # stopped midway without losing records): the fetch loop hands over 4 and carries the rest.
    calls = fetches(consumer, [[3, 4], [2, 5], [6, 7], [8]])
    got = await consumer._fetch_batch(_Handoff(max_records=4, max_wait_s=30), [])
    assert [m.offset for m in got] == [3, 4, 5, 6, 7]
    assert calls[0] == 3
    assert consumer._read_offset[got[0].tp] == 7


async def test_a_carried_over_full_batch_is_handed_on_without_fetching(consumer: Any) -> None:
    consumer._read_offset.clear()
    calls = fetches(consumer, [[9]])
    carry = [fetched(consumer, o, generation=1) for o in (7, 8)]
    got = await consumer._fetch_batch(_Handoff(max_records=2, max_wait_s=30), carry)
    assert [m.offset for m in got] == [7, 8] and calls[0] == 0


async def test_a_partial_batch_is_handed_on_once_max_wait_passed(consumer: Any) -> None:
    consumer._read_offset.clear()
    calls = fetches(consumer, [[0], [], [], []])  # then nothing more arrives
    got = await asyncio.wait_for(consumer._fetch_batch(_Handoff(max_records=100, max_wait_s=0.05), []), 10)
    assert [m.offset for m in got] == [0]
    assert calls[0] >= 2  # it did wait for more before giving up
