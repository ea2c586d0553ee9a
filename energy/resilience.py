"""Bounded network calls: timeout, retry with backoff (transient errors only; stamina, the one
retry policy of the code base, honouring Retry-After hints), circuit breaker
per dependency (aiobreaker), bulkhead (bounded concurrency) and a token-bucket rate limiter.

The retry policy has three entry points, all with the same rules (decision 0840):

- :func:`guarded_call`: one request, a bounded number of attempts; an open breaker fails fast.
- :func:`keep_trying`: work that must eventually succeed (a consumer session, a reconnect, a
  delivery that must not drop anything): unbounded attempts, waits out an open breaker, stops
  when the ``stop`` event is set, and starts the backoff afresh after a long healthy run.
- :meth:`RetryPolicy.min_delay_s`: the same backoff for retries scheduled in the database
  (a row's ``not_before``), where no coroutine waits.

Every retry is counted in ``energy_retries_total{dependency, error}`` and logged.

Typical use in an adapter::

    breaker = make_breaker("influxdb", fail_max=5, reset_s=10)
    policy = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)
    result = await guarded_call("influxdb", lambda: client.post(...), timeout_s=5,
                                breaker=breaker, retry=policy, is_transient=is_transient_http)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import stamina
import stamina.instrumentation
from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener, CircuitBreakerState
from stamina.instrumentation import RetryDetails

from energy.observability.logging import get_logger
from energy.observability.metrics import (
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    DEPENDENCY_CALLS,
    DEPENDENCY_LATENCY,
    QUEUE_CAPACITY,
    QUEUE_DEPTH,
    RETRIES,
)

T = TypeVar("T")

__all__ = [
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreakerError",
    "CircuitOpenError",
    "RetryPolicy",
    "TokenBucket",
    "guarded_call",
    "keep_trying",
    "make_breaker",
]

log = get_logger(__name__)


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
    """Exponential backoff: the wait before retry n (1-based) is ``min(max, base * 2^(n-1) + jitter)``
    with jitter uniform in [0, base]; ``attempts`` counts the first call (None: no limit, for
    :func:`keep_trying`). A Retry-After hint replaces the computed wait, capped at ``max_delay_s``."""

    attempts: int | None = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def min_delay_s(self, retry_number: int) -> float:
        """The wait before retry ``retry_number`` (1-based) without jitter: for retries kept in the
        database, whose due time must not move each time it is checked."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** max(0, retry_number - 1))

    def delay_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry_number`` (1-based), jittered as stamina does in-process."""
        jitter = (rng or random).uniform(0, self.base_delay_s)
        return min(self.max_delay_s, self.min_delay_s(retry_number) + jitter)


NO_RETRY = RetryPolicy(attempts=1)


def _default_transient(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | ConnectionError | OSError)


def _any_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception)


def _count_retry(details: RetryDetails) -> None:
    """stamina's hook before each retry's wait: the one place retries are counted and logged."""
    error = type(details.caused_by).__name__
    RETRIES.labels(details.name, error).inc()
    log.info(
        "retry_scheduled",
        dependency=details.name,
        retry=details.retry_num,
        wait_s=round(details.wait_for, 3),
        error=f"{error}: {details.caused_by}"[:300],
    )


# Our counter replaces stamina's default one, whose ``retry_num`` label grows without bound under
# keep_trying; retries are named by dependency (``with_name``), not "<context block>".
stamina.instrumentation.set_on_retry_hooks([_count_retry])


def _hinted_wait(
    exc: BaseException, policy: RetryPolicy, retry_after: Callable[[BaseException], float | None] | None
) -> bool | float:
    """Retry after the hint (Retry-After, an open breaker's remaining time), capped at the policy's
    maximum; without a hint, stamina's exponential backoff (True)."""
    hinted = retry_after(exc) if retry_after else None
    return min(max(0.0, hinted), policy.max_delay_s) if hinted is not None else True


def _retry_context(dependency: str, policy: RetryPolicy, on: Callable[[Exception], bool | float]) -> Any:
    return stamina.retry_context(
        on=on,
        attempts=policy.attempts,
        timeout=None,
        wait_initial=policy.base_delay_s,
        wait_max=policy.max_delay_s,
        wait_jitter=policy.base_delay_s,
    ).with_name(dependency, (), {})


async def guarded_call(
    dependency: str,
    fn: Callable[[], Awaitable[T]],
    *,
    timeout_s: float | None,
    breaker: CircuitBreaker | None = None,
    retry: RetryPolicy = NO_RETRY,
    is_transient: Callable[[BaseException], bool] = _default_transient,
    retry_after: Callable[[BaseException], float | None] | None = None,
) -> T:
    """Call ``fn`` with a timeout, through the breaker, retrying transient failures with backoff.

    Non-transient errors are raised at once. When the breaker is open, raises
    :class:`CircuitOpenError` without calling. Each attempt is counted in
    ``energy_dependency_calls_total{dependency, outcome}``. ``timeout_s=None`` only for calls
    bounded by their own client (a database pool's command timeout).
    """
    if retry.attempts is None:
        raise ValueError("guarded_call needs a bounded number of attempts; use keep_trying for unbounded work")

    def backoff(exc: Exception) -> bool | float:
        if isinstance(exc, CircuitOpenError) or not is_transient(exc):
            return False
        return _hinted_wait(exc, retry, retry_after)

    def call() -> Awaitable[T]:
        return _attempt(dependency, fn, timeout_s, breaker, is_transient)

    return await _retrying(dependency, retry, backoff, call)


async def _retrying(
    dependency: str, policy: RetryPolicy, on: Callable[[Exception], bool | float], call: Callable[[], Awaitable[T]]
) -> T:
    """``call`` under the policy. The first attempt runs before any retry context exists: setting
    one up costs more than a fast call itself, and ingestion's publisher makes one call per Kafka
    chunk (decision 0961). A failure enters stamina's context, whose first attempt re-raises it, so
    stamina decides on it exactly as if it had made that attempt: the same attempt count, backoff,
    hints and retry counting."""
    try:
        return await call()
    except Exception as exc:
        failure: Exception | None = exc
    async for attempt in _retry_context(dependency, policy, on):
        with attempt:
            if failure is not None:
                replayed, failure = failure, None
                raise replayed
            return await call()
    raise AssertionError("unreachable: stamina raises the last error when attempts run out")


@dataclass
class _Progress:
    started: float = 0.0
    in_call: bool = False
    ran_long: bool = False


async def keep_trying(
    dependency: str,
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool] = _any_error,
    retry_after: Callable[[BaseException], float | None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    stop: asyncio.Event | None = None,
    fresh_after_s: float | None = None,
) -> T | None:
    """Call ``fn`` until it returns, retrying transient errors with the policy's backoff.

    For work that must eventually succeed: a consumer or subscription session (``fn`` runs for
    as long as the connection lasts), a reconnect, a delivery that must not drop anything.

    - ``policy.attempts`` None: no limit. Non-transient errors are raised at once.
    - An open breaker (:class:`CircuitOpenError`) is waited out: its remaining time is the hint,
      at least ``policy.base_delay_s``; other hints come from ``retry_after``.
    - ``on_error`` sees every failure before the wait (health, metrics of the caller).
    - For sessions: a call that ran ``fresh_after_s`` before failing was healthy, so it is retried
      at once and the backoff starts over (None: never; a slow failing call is still a failure).
    - ``stop`` set: a wait is cut short, a failure is not retried, and the result is None; a call
      in progress is not interrupted (it watches ``stop`` itself).
    """
    fresh_after = math.inf if fresh_after_s is None else fresh_after_s
    state = _Progress()

    def backoff(exc: Exception) -> bool | float:
        if not is_transient(exc) or (stop is not None and stop.is_set()):
            return False
        if time.monotonic() - state.started >= fresh_after:
            state.ran_long = True
            return False
        if isinstance(exc, CircuitOpenError):
            return min(max(policy.base_delay_s, exc.retry_after_s), policy.max_delay_s)
        return _hinted_wait(exc, policy, retry_after)

    async def call() -> T:
        state.started, state.in_call = time.monotonic(), True
        try:
            return await fn()
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            raise
        finally:
            state.in_call = False

    async def loop() -> T | None:
        while True:
            state.ran_long = False
            try:
                return await _retrying(dependency, policy, backoff, call)
            except Exception:
                if stop is not None and stop.is_set():
                    return None
                if state.ran_long:
                    RETRIES.labels(dependency, "session_ended").inc()
                    continue
                raise

    if stop is None:
        return await loop()
    task = asyncio.ensure_future(loop())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and not state.in_call:
            task.cancel()  # stop during a backoff wait: do not sit it out
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        return await task
    finally:
        stopped.cancel()
        task.cancel()


async def _attempt(
    dependency: str,
    fn: Callable[[], Awaitable[T]],
    timeout_s: float | None,
    breaker: CircuitBreaker | None,
    is_transient: Callable[[BaseException], bool],
) -> T:
    """One bounded call through the breaker, counted and timed."""

    async def bounded() -> T:
        # A timeout scope in the caller's task rather than wait_for's extra task per call: the same
        # TimeoutError when it expires, at a fraction of the cost on the success path (decision 0961).
        async with asyncio.timeout(timeout_s):
            return await fn()

    t0 = time.perf_counter()
    try:
        result = await (breaker.call_async(bounded) if breaker is not None else bounded())
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
