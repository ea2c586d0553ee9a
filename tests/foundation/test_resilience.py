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
    guarded_call,
    keep_trying,
    make_breaker,
)
from tests.waiting import wait_until


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
        await asyncio.sleep(30)  # the hung call the timeout is about: the cause, not a wait

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
    await wait_until(  # two calls inside, three waiting: the bulkhead is full
        lambda: running == 2 and REGISTRY.get_sample_value("energy_queue_depth", {"queue": "bulkhead:t-bulkhead"}) == 3,
        timeout_s=5,
        what="2 calls running and 3 waiting",
        interval_s=0.001,
    )
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


def _retries(dependency: str, error: str) -> float:
    return REGISTRY.get_sample_value("energy_retries_total", {"dependency": dependency, "error": error}) or 0.0


async def test_keep_trying_reconnects_to_a_server_that_comes_up_later(port: int) -> None:
    """A refused connection is retried (unbounded) until the server listens; each retry is counted."""
    errors: list[BaseException] = []
    connected = asyncio.Event()

    async def connect() -> str:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        return "connected"

    async def serve_after_three_refusals() -> asyncio.Server:
        await wait_until(lambda: len(errors) >= 3, timeout_s=10, what="three refused attempts", interval_s=0.01)
        return await asyncio.start_server(lambda r, w: connected.set(), "127.0.0.1", port)

    before = _retries("t-reconnect", "ConnectionRefusedError")
    server_task = asyncio.create_task(serve_after_three_refusals())
    result = await keep_trying("t-reconnect", connect, policy=RetryPolicy(None, 0.01, 0.05), on_error=errors.append)
    server = await server_task
    server.close()
    assert result == "connected"
    assert len(errors) >= 3 and all(isinstance(e, ConnectionRefusedError) for e in errors)
    assert _retries("t-reconnect", "ConnectionRefusedError") - before == len(errors)


async def test_keep_trying_raises_a_permanent_error_at_once() -> None:
    calls = 0

    async def rejected() -> None:
        nonlocal calls
        calls += 1
        raise Rejected("422")

    with pytest.raises(Rejected):
        await keep_trying(
            "t-permanent",
            rejected,
            policy=RetryPolicy(None, 0.01, 0.05),
            is_transient=lambda e: not isinstance(e, Rejected),
        )
    assert calls == 1


async def test_keep_trying_waits_out_an_open_breaker_for_its_remaining_time() -> None:
    """The breaker opens after two failures (reset 0.5 s): the next attempt waits for the reset,
    not the 10 ms backoff, and the half-open trial call succeeds."""
    import time

    breaker = make_breaker("t-wait-breaker", fail_max=2, reset_s=0.5)
    calls: list[float] = []

    async def through_breaker() -> str:
        async def call() -> str:
            calls.append(time.monotonic())
            if len(calls) <= 2:
                raise ConnectionError("down")
            return "ok"

        return await guarded_call("t-wait-breaker", call, timeout_s=1, breaker=breaker, is_transient=_transient)

    result = await keep_trying("t-wait-breaker", through_breaker, policy=RetryPolicy(None, 0.01, 2.0))
    assert result == "ok" and len(calls) == 3
    assert calls[2] - calls[1] >= 0.4, calls  # waited for the breaker, not 10-20 ms


async def test_keep_trying_returns_none_when_stopped_during_a_wait() -> None:
    stop = asyncio.Event()
    calls = 0

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        asyncio.get_running_loop().call_later(0.05, stop.set)  # set while the 30 s wait runs
        raise ConnectionError("down")

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # the policy would wait 30 s before the third call: stop cuts the wait short
    result = await keep_trying("t-stop", always_down, policy=RetryPolicy(None, 30.0, 30.0), stop=stop)
    assert result is None
    assert calls == 1
    assert loop.time() - t0 < 20


async def test_keep_trying_starts_the_backoff_over_after_a_long_healthy_session() -> None:
    """Sessions 1-3 fail at once (backoff grows towards 0.4 s); session 4 runs 0.3 s (> fresh_after_s)
    then fails: session 5 starts at once, not after the grown backoff."""
    import time

    starts: list[float] = []

    async def session() -> str:
        starts.append(time.monotonic())
        if len(starts) == 4:
            await asyncio.sleep(0.3)  # the healthy session's length is the subject (> fresh_after_s)
            raise ConnectionError("dropped after a healthy run")
        if len(starts) < 5:
            raise ConnectionError("refused")
        return "done"

    before = _retries("t-fresh", "session_ended")
    policy = RetryPolicy(None, 0.2, 0.4)
    result = await keep_trying("t-fresh", session, policy=policy, fresh_after_s=0.25)
    assert result == "done"
    assert starts[3] - starts[2] >= 0.2  # third retry waited (min(0.4, 0.2*2^2) >= 0.4 capped; >= base anyway)
    # The session's own 0.3 s, then at once: a grown backoff would add at least min_delay_s(4) = 0.4 s,
    # the bound below (a loaded machine's scheduling delay stays well under it).
    assert starts[4] - starts[3] < 0.3 + policy.min_delay_s(4)
    assert _retries("t-fresh", "session_ended") - before == 1


def test_policy_delays_are_exponential_capped_and_jittered_by_at_most_the_base() -> None:
    policy = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=3.0)
    assert [policy.min_delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(7)
    for n, floor in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0)):
        d = policy.delay_s(n, rng)
        assert floor <= d <= min(3.0, floor + 0.5), (n, d)


async def test_guarded_call_refuses_an_unbounded_policy() -> None:
    async def ok() -> int:
        return 1

    with pytest.raises(ValueError, match="keep_trying"):
        await guarded_call("t-unbounded", ok, timeout_s=1, retry=RetryPolicy(attempts=None))


async def test_a_failing_call_gets_exactly_the_policys_attempts_and_each_retry_is_counted() -> None:
    """The first attempt runs outside stamina and its failure is handed to stamina (decision 0961):
    it must count as attempt 1, so 3 attempts are 3 calls and 2 counted retries, not 4 and 3."""
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("refused")

    before = _retries("t-exhaust", "ConnectionRefusedError")
    with pytest.raises(ConnectionRefusedError):
        await guarded_call("t-exhaust", refused, timeout_s=1, retry=RetryPolicy(3, 0.001, 0.01))
    assert calls == 3
    assert _retries("t-exhaust", "ConnectionRefusedError") - before == 2


async def test_a_call_that_succeeds_at_once_sets_up_no_retry_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The success path pays no retry machinery; the first failure does enter it."""
    import energy.resilience as resilience

    contexts: list[str] = []
    real = resilience._retry_context

    def counting(dependency: str, policy: RetryPolicy, on: object) -> object:
        contexts.append(dependency)
        return real(dependency, policy, on)  # type: ignore[arg-type]

    monkeypatch.setattr(resilience, "_retry_context", counting)
    policy = RetryPolicy(None, 0.001, 0.01)
    calls = 0

    async def ok() -> str:
        return "ok"

    async def fails_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return "ok"

    assert await keep_trying("t-fast-ok", ok, policy=policy) == "ok"
    assert await guarded_call("t-fast-ok", ok, timeout_s=1, retry=RetryPolicy(3, 0.001, 0.01)) == "ok"
    assert contexts == []
    assert await keep_trying("t-fast-retry", fails_once, policy=policy) == "ok"
    assert contexts == ["t-fast-retry"] and calls == 2
