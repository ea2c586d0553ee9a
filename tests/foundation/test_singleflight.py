"""One load per key for concurrent callers; a caller that leaves never cancels the others' load."""

from __future__ import annotations

import asyncio

import pytest

from energy.singleflight import SingleFlight


async def test_concurrent_callers_share_one_load_and_a_later_caller_starts_another() -> None:
    sizes: list[int] = []
    flights: SingleFlight[str, int] = SingleFlight(on_size=sizes.append)
    release = asyncio.Event()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls * 10

    joined = [flights.join("k", load) for _ in range(5)]
    assert [j for _, j in joined] == [False, True, True, True, True]
    assert "k" in flights and len(flights) == 1
    release.set()
    assert await asyncio.gather(*(f for f, _ in joined)) == [10] * 5
    assert calls == 1 and "k" not in flights and sizes == [1, 0]
    again, was_joined = flights.join("k", load)
    assert not was_joined and await again == 20 and calls == 2


async def test_a_caller_that_is_cancelled_does_not_cancel_the_shared_load() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()
    finished: list[str] = []

    async def load() -> str:
        await release.wait()
        return "value"

    first, _ = flights.join("k", load, on_done=lambda f: finished.append(f.result()))
    second, _ = flights.join("k", load)
    leaving = asyncio.ensure_future(first)
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    assert await second == "value"
    assert finished == ["value"]
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_failed_load_reaches_every_caller_and_is_not_kept() -> None:
    flights: SingleFlight[int, int] = SingleFlight()

    async def boom() -> int:
        await asyncio.sleep(0)
        raise ConnectionError("down")

    a, _ = flights.join(1, boom)
    b, joined = flights.join(1, boom)
    assert joined
    for flight in (a, b):
        with pytest.raises(ConnectionError):
            await flight
    assert 1 not in flights
