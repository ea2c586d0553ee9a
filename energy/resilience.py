"""Bounded network calls: timeout, retry with backoff (transient errors only; stamina, the one
retry policy of the code base, honouring Retry-After hints), circuit breaker
per dependency (aiobreaker), bulkhead (bounded concurrency) and a token-bucket rate limiter.

Typical use in an adapter::

    breaker = make_breaker("influxdb", fail_max=5, reset_s=10)
    policy = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)
    result = await guarded_call("influxdb", lambda: client.post(...), timeout_s=5,
                                breaker=breaker, retry=policy, is_transient=is_transient_http)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import stamina
from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener, CircuitBreakerState

from energy.observability.metrics import (
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    DEPENDENCY_CALLS,
    DEPENDENCY_LATENCY,
    QUEUE_CAPACITY,
    QUEUE_DEPTH,
)

T = TypeVar("T")

__all__ = [
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreakerError",
    "CircuitOpenError",
    "RetryPolicy",
    "TokenBucket",
    "backoff_delays",
    "guarded_call",
    "make_breaker",
]


class CircuitOpenError(RuntimeError):
    """The dependency's breaker is open: fail fast, do not call it."""

    def __init__(self, dependency: str, retry_after_s: float) -> None:
        super().__init__(f"{dependency}: circuit open, retry in {retry_after_s:.1f}s")
        self.dependency = dependency
        self.retry_after_s = retry_after_s


class BulkheadFullError(RuntimeError):
    pass


class _MetricsListener(CircuitBreakerListener):  # type: ignore[misc]
    def state_change(self, breaker: CircuitBreaker, old: Any, new: Any) -> None:
        state = getattr(new, "state", new)
        name = breaker.name or "unnamed"
        BREAKER_STATE.labels(name).set(0 if state == CircuitBreakerState.CLOSED else 1)
        BREAKER_TRANSITIONS.labels(name, getattr(state, "name", str(state)).lower()).inc()


def make_breaker(
    name: str, fail_max: int = 5, reset_s: float = 30.0, exclude: list[type[BaseException]] | None = None
) -> CircuitBreaker:
    """A breaker whose state is exported as ``energy_breaker_open{breaker=name}``.

    ``exclude`` lists exceptions that are the caller's fault (validation, 4xx) and must not
    open the breaker.
    """
    BREAKER_STATE.labels(name).set(0)
    return CircuitBreaker(
        fail_max=fail_max,
        timeout_duration=timedelta(seconds=reset_s),
        exclude=exclude or [],
        listeners=[_MetricsListener()],
        name=name,
    )


def breaker_is_open(breaker: CircuitBreaker) -> bool:
    return bool(breaker.current_state == CircuitBreakerState.OPEN)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delays(self, rng: random.Random | None = None) -> list[float]:
        return backoff_delays(self.attempts, self.base_delay_s, self.max_delay_s, rng)


NO_RETRY = RetryPolicy(attempts=1)


def backoff_delays(attempts: int, base_s: float, max_s: float, rng: random.Random | None = None) -> list[float]:
    """'Full jitter' exponential backoff: the wait before retry n is uniform in [0, min(max, base*2^n)]."""
    r = rng or random
    return [r.uniform(0, min(max_s, base_s * (2**n))) for n in range(max(0, attempts - 1))]


def _default_transient(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | ConnectionError | OSError)


async def guarded_call(
    dependency: str,
    fn: Callable[[], Awaitable[T]],
    *,
    timeout_s: float,
    breaker: CircuitBreaker | None = None,
    retry: RetryPolicy = NO_RETRY,
    is_transient: Callable[[BaseException], bool] = _default_transient,
    retry_after: Callable[[BaseException], float | None] | None = None,
) -> T:
    """Call ``fn`` with a timeout, through the breaker, retrying transient failures with backoff.

    Non-transient errors are raised at once. When the breaker is open, raises
    :class:`CircuitOpenError` without calling. Each attempt is counted in
    ``energy_dependency_calls_total{dependency, outcome}``.
    """

    def backoff(exc: Exception) -> bool | float:
        if isinstance(exc, CircuitOpenError) or not is_transient(exc):
            return False
        hinted = retry_after(exc) if retry_after else None
        return min(hinted, retry.max_delay_s) if hinted is not None else True

    async for attempt in stamina.retry_context(
        on=backoff,
        attempts=retry.attempts,
        timeout=None,
        wait_initial=retry.base_delay_s,
        wait_max=retry.max_delay_s,
        wait_jitter=retry.base_delay_s,
    ):
        with attempt:
            return await _attempt(dependency, fn, timeout_s, breaker, is_transient)
    raise AssertionError("unreachable: stamina raises the last error when attempts run out")


async def _attempt(
    dependency: str,
    fn: Callable[[], Awaitable[T]],
    timeout_s: float,
    breaker: CircuitBreaker | None,
    is_transient: Callable[[BaseException], bool],
) -> T:
    """One bounded call through the breaker, counted and timed."""
    t0 = time.perf_counter()
    try:
        if breaker is not None:
            result = await breaker.call_async(lambda: asyncio.wait_for(fn(), timeout_s))
        else:
            result = await asyncio.wait_for(fn(), timeout_s)
    except CircuitBreakerError as exc:
        DEPENDENCY_CALLS.labels(dependency, "rejected_open").inc()
        remaining = 0.0
        if breaker is not None and breaker.opens_at is not None:
            from datetime import datetime

            remaining = max(0.0, (breaker.opens_at - datetime.utcnow()).total_seconds())
        raise CircuitOpenError(dependency, remaining) from exc
    except BaseException as exc:
        DEPENDENCY_LATENCY.labels(dependency).observe(time.perf_counter() - t0)
        transient = is_transient(exc)
        outcome = "timeout" if isinstance(exc, TimeoutError) else ("transient_error" if transient else "error")
        DEPENDENCY_CALLS.labels(dependency, outcome).inc()
        raise
    DEPENDENCY_LATENCY.labels(dependency).observe(time.perf_counter() - t0)
    DEPENDENCY_CALLS.labels(dependency, "ok").inc()
    return result


class Bulkhead:
    """At most ``limit`` concurrent calls and at most ``max_waiting`` waiting; beyond that, reject."""

    def __init__(self, name: str, limit: int, max_waiting: int = 1000) -> None:
        self.name = name
        self._sem = asyncio.Semaphore(limit)
        self._waiting = 0
        self._max_waiting = max_waiting
        QUEUE_CAPACITY.labels(f"bulkhead:{name}").set(max_waiting)

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._waiting >= self._max_waiting:
            raise BulkheadFullError(f"bulkhead {self.name}: {self._waiting} calls already waiting")
        self._waiting += 1
        QUEUE_DEPTH.labels(f"bulkhead:{self.name}").set(self._waiting)
        entered = False
        try:
            await self._sem.acquire()
            entered = True
        finally:
            self._waiting -= 1
            QUEUE_DEPTH.labels(f"bulkhead:{self.name}").set(self._waiting)
        try:
            return await fn()
        finally:
            if entered:
                self._sem.release()


class TokenBucket:
    """Client- or server-side rate limit: ``rate_per_s`` tokens per second, up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self, tokens: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    def retry_after_s(self, tokens: float = 1.0) -> float:
        self._refill()
        return max(0.0, (tokens - self._tokens) / self.rate)

    async def acquire(self, tokens: float = 1.0, max_wait_s: float = 10.0) -> None:
        deadline = self._clock() + max_wait_s
        while not self.try_acquire(tokens):
            wait = self.retry_after_s(tokens)
            if self._clock() + wait > deadline:
                raise TimeoutError(f"rate limit: no token within {max_wait_s}s")
            await asyncio.sleep(wait)
