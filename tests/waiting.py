"""The one way tests wait for something: poll a probe until it answers, with a deadline.

A test never sleeps a fixed time to let something happen, and never sleeps to show that something
did not happen (it waits for a positive witness instead: a later marker, a committed offset, a
counter). On a timeout the error names what was awaited and the last value the probe returned (or
the last exception it raised, when that exception is listed in ``ignore``), so a failure on a loaded
machine says how far the system got.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timeout_error(what: str, timeout_s: float, last: object) -> AssertionError:
    return AssertionError(f"{what}: not within {timeout_s:g} s (last observed: {last!r})")


async def wait_until(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
    accept: Callable[[T], object] = bool,
) -> T:
    """Until ``probe()`` (sync or async) returns a value that ``accept`` takes (by default: a truthy
    one), which is returned; on a timeout the error shows the last value, e.g. the state an event was in.

    Exceptions of the types in ``ignore`` count as "not yet" (e.g. a server that does not listen yet);
    any other exception ends the wait at once. The probe runs at least once, and once more after the
    deadline has passed, so a slow probe on a loaded machine never loses its last chance.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        past_deadline = time.monotonic() >= deadline
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except ignore as exc:
            last = exc
        else:
            if accept(value):
                return value
            last = value
        if past_deadline:
            raise _timeout_error(what, timeout_s, last)
        await asyncio.sleep(interval_s)


def wait_until_sync(
    probe: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
    accept: Callable[[T], object] = bool,
) -> T:
    """:func:`wait_until` for code outside an event loop (blocking)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        past_deadline = time.monotonic() >= deadline
        try:
            value = probe()
        except ignore as exc:
            last = exc
        else:
            if accept(value):
                return value
            last = value
        if past_deadline:
            raise _timeout_error(what, timeout_s, last)
        time.sleep(interval_s)
