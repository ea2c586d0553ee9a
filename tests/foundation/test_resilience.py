"""Bounded calls: timeouts, retries only for transient errors, breakers, bulkheads, rate limits."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from energy.observability.metrics import BREAKER_STATE, REGISTRY
from energy.resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitOpenError,
    RetryPolicy,
    TokenBucket,
    backoff_delays,
    guarded_call,
    make_breaker,
)


class Rejected(Exception):
    """Stands for a 4xx: the caller's fault, never retried."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | TimeoutError)


async def test_transient_errors_are_retried_then_succeed() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused")
        return "ok"

    result = await guarded_call(
        "t-flaky", flaky, timeout_s=1, retry=RetryPolicy(3, 0.001, 0.01), is_transient=_transient
    )
    assert result == "ok" and calls == 3


async def test_non_transient_errors_are_not_retried() -> None:
    calls = 0

    async def bad_request() -> None:
        nonlocal calls
        calls += 1
        raise Rejected("400")

    with pytest.raises(Rejected):
        await guarded_call(
            "t-4xx", bad_request, timeout_s=1, retry=RetryPolicy(5, 0.001, 0.01), is_transient=_transient
        )
    assert calls == 1


async def test_timeout_bounds_a_hung_call() -> None:
    async def hangs() -> None:
        await asyncio.sleep(30)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        await guarded_call("t-hang", hangs, timeout_s=0.05)
    assert loop.time() - t0 < 5


async def test_breaker_opens_on_a_refusing_server_and_fails_fast(port: int) -> None:
    breaker = make_breaker("t-refused", fail_max=3, reset_s=60)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

        async def call() -> httpx.Response:
            return await client.get("/")

        for _ in range(3):
            with pytest.raises((httpx.ConnectError, CircuitOpenError)):
                await guarded_call("t-refused", call, timeout_s=1, breaker=breaker, is_transient=_transient)
        with pytest.raises(CircuitOpenError) as err:
            await guarded_call("t-refused", call, timeout_s=1, breaker=breaker, is_transient=_transient)
    assert err.value.dependency == "t-refused"
    assert REGISTRY.get_sample_value("energy_breaker_open", {"breaker": "t-refused"}) == 1
    assert BREAKER_STATE.labels("t-refused")._value.get() == 1


async def test_excluded_errors_do_not_open_the_breaker() -> None:
    breaker = make_breaker("t-excluded", fail_max=2, reset_s=60, exclude=[Rejected])

    async def bad() -> None:
        raise Rejected("422")

    for _ in range(5):
        with pytest.raises(Rejected):
            await guarded_call("t-excluded", bad, timeout_s=1, breaker=breaker)
    assert REGISTRY.get_sample_value("energy_breaker_open", {"breaker": "t-excluded"}) == 0


def test_backoff_is_bounded_exponential_full_jitter() -> None:
    delays = backoff_delays(6, 0.1, 1.0, random.Random(1))
    assert len(delays) == 5
    caps = [0.1, 0.2, 0.4, 0.8, 1.0]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))


async def test_bulkhead_limits_concurrency_and_rejects_beyond_its_queue() -> None:
    bulkhead = Bulkhead("t-bulkhead", limit=2, max_waiting=3)
    running = peak = 0
    gate = asyncio.Event()

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    tasks = [asyncio.create_task(bulkhead.run(work)) for _ in range(5)]
    await asyncio.sleep(0.01)
    with pytest.raises(BulkheadFullError):
        await bulkhead.run(work)
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 2


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=10, burst=5, clock=lambda: now[0])
    assert sum(bucket.try_acquire() for _ in range(20)) == 5
    assert bucket.retry_after_s() == pytest.approx(0.1)
    now[0] += 0.5
    assert sum(bucket.try_acquire() for _ in range(20)) == 5


async def test_retry_after_hint_sets_the_wait_capped_at_the_policy_maximum() -> None:
    import time

    from energy.resilience import RetryPolicy, guarded_call

    class Throttled(ConnectionError):
        def __init__(self, after_s: float) -> None:
            super().__init__("429")
            self.after_s = after_s

    calls: list[float] = []

    async def throttled_twice() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise Throttled(0.4)  # the hint: wait 0.4 s
        if len(calls) == 2:
            raise Throttled(60.0)  # longer than the policy allows: wait at most max_delay_s
        return "ok"

    result = await guarded_call(
        "throttled",
        throttled_twice,
        timeout_s=1,
        retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.6),
        retry_after=lambda exc: exc.after_s if isinstance(exc, Throttled) else None,
    )
    assert result == "ok" and len(calls) == 3
    first_wait, second_wait = calls[1] - calls[0], calls[2] - calls[1]
    assert 0.4 <= first_wait < 5, first_wait  # the hint, not the 10 ms base
    assert 0.6 <= second_wait < 5, second_wait  # capped at max_delay_s, not the hinted 60 s
