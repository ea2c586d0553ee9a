"""tests/waiting.py: the one poll-until helper returns what the probe found, or fails naming the last value."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import wait_until, wait_until_sync


async def test_returns_the_first_truthy_value_of_an_async_probe() -> None:
    counter = itertools.count()

    async def probe() -> int:
        n = next(counter)
        return n if n >= 3 else 0

    assert await wait_until(probe, timeout_s=5, what="the third poll", interval_s=0.001) == 3


async def test_a_sync_probe_and_ignored_exceptions_count_as_not_yet() -> None:
    calls = itertools.count(1)

    def probe() -> str:
        if next(calls) < 3:
            raise ConnectionRefusedError("not listening yet")
        return "up"

    assert await wait_until(probe, timeout_s=5, what="up", interval_s=0.001, ignore=(OSError,)) == "up"


async def test_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    arrived: list[str] = []  # nothing ever arrives

    with pytest.raises(AssertionError, match=r"records arrived: not within 0.05 s \(last observed: 0\)"):
        await wait_until(lambda: len(arrived), timeout_s=0.05, what="records arrived", interval_s=0.01)


async def test_an_exception_not_listed_ends_the_wait_at_once() -> None:
    def probe() -> bool:
        raise KeyError("bug in the probe")

    with pytest.raises(KeyError):
        await wait_until(probe, timeout_s=60, what="never", ignore=(OSError,))


def test_sync_version_times_out_with_the_last_exception() -> None:
    def probe() -> bool:
        raise TimeoutError("still down")

    with pytest.raises(
        AssertionError, match=r"server up: not within 0.05 s \(last observed: TimeoutError\('still down'\)"
    ):
        wait_until_sync(probe, timeout_s=0.05, what="server up", interval_s=0.01, ignore=(OSError,))


async def test_accept_decides_and_the_timeout_shows_the_last_value_it_refused() -> None:
    states = iter(["received", "scheduled", "active"])
    last = ["received"]

    def state() -> str:
        last[0] = next(states, last[0])
        return last[0]

    assert await wait_until(state, accept=lambda s: s == "active", timeout_s=5, what="active", interval_s=0.001) == (
        "active"
    )
    with pytest.raises(AssertionError, match=r"completed: not within 0.05 s \(last observed: 'active'\)"):
        await wait_until(state, accept=lambda s: s == "completed", timeout_s=0.05, what="completed", interval_s=0.01)
