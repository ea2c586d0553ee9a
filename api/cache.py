"""Cache of each facility's current load (API-1).

- Two levels: a bounded in-process copy, then Redis (shared by every API replica). Redis holds
  ``{"v": value, "t": fetched_at}`` for ``keep_s``. A value younger than ``ttl_s`` (measured
  from when it was read from InfluxDB, whichever level holds it) is fresh; one younger than
  ``stale_max_s`` is served at once while a background query refreshes it
  (stale-while-revalidate); an older one is refreshed before answering.
- Single flight per key and process: any number of concurrent misses of one facility wait
  for the same InfluxDB query.
- Redis calls are bounded by the Redis timeout (100 ms) and a breaker; when Redis fails
  the cache goes to InfluxDB directly.
- The in-process copy answers first while within the TTL: under load most requests need no
  Redis round trip, and a Redis outage does not turn every request into an InfluxDB query.
- When InfluxDB fails, the last known value (from Redis or, if Redis is down too, from a
  bounded in-process copy) is served with its age; with nothing known, 503.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from redis.asyncio import Redis

from api.errors import UnavailableError
from energy.observability.metrics import Counter, Gauge
from energy.resilience import CircuitOpenError, guarded_call, make_breaker
from energy.singleflight import SingleFlight

log = structlog.get_logger("api.cache")

CACHE_RESULTS = Counter(
    "energy_api_current_cache_total",
    "Current-load lookups by outcome (hit, memory, revalidating, miss, fallback, unavailable)",
    ["outcome"],
)
CACHE_ERRORS = Counter("energy_api_current_cache_errors_total", "Cache errors by dependency", ["dependency"])
RESPONSE_CACHE = Counter(
    "energy_api_response_cache_total", "Short-lived response cache lookups by outcome", ["cache", "outcome"]
)
INFLIGHT = Gauge("energy_api_current_inflight", "Current-load queries in flight (single flight per facility)")
# One child per outcome, looked up once: ``labels()`` on every request was measurable on the cached path.
_RESULTS = {
    outcome: CACHE_RESULTS.labels(outcome)
    for outcome in ("hit", "memory", "revalidating", "miss", "fallback", "unavailable")
}

Outcome = Literal["hit", "memory", "revalidating", "miss", "fallback"]
Loader = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Entry:
    value: dict[str, Any]
    fetched_at: float  # unix seconds
    # What callers derive from this value once (e.g. its rendered JSON), kept as long as the value is.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class CacheResult:
    value: dict[str, Any]
    outcome: Outcome
    age_s: float
    stale: bool  # served because the source is unavailable
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the entry's memo


class CurrentCache:
    def __init__(
        self,
        redis: Redis,
        loader: Loader,
        *,
        ttl_s: float,
        stale_max_s: float,
        keep_s: int,
        redis_timeout_s: float,
        memory_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
        breaker_name: str = "redis_api_cache",
    ) -> None:
        self.redis = redis
        self.loader = loader
        self.ttl_s = ttl_s
        self.stale_max_s = max(stale_max_s, ttl_s)
        self.keep_s = keep_s
        self.redis_timeout_s = redis_timeout_s
        self._clock = clock
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._memory_entries = memory_entries
        self._inflight: SingleFlight[str, Entry] = SingleFlight(on_size=INFLIGHT.set)
        self._redis_reads: SingleFlight[str, Entry | None] = SingleFlight()
        self._background: set[asyncio.Task[Any]] = set()
        self.breaker = make_breaker(breaker_name, fail_max=3, reset_s=5.0)

    @staticmethod
    def key(facility_id: str) -> str:
        return f"energy:api:current:{facility_id}"

    async def get(self, facility_id: str) -> CacheResult:
        now = self._clock()
        local = self._memory.get(facility_id)
        if local is not None and now - local.fetched_at <= self.ttl_s:
            # This process holds a value within the TTL (read from Redis or loaded here): no round trip.
            _RESULTS["memory"].inc()
            return CacheResult(local.value, "memory", max(0.0, now - local.fetched_at), False, local.memo)
        if local is not None and now - local.fetched_at <= self.stale_max_s and facility_id in self._inflight:
            # Stale-while-revalidate, and this process is already revalidating it: the Redis copy was read
            # when this refresh began, so asking again for every request meanwhile only costs a round trip.
            _RESULTS["revalidating"].inc()
            return CacheResult(local.value, "revalidating", max(0.0, now - local.fetched_at), False, local.memo)
        # One Redis read per facility at a time: when the in-process copy expires under load, every request
        # that arrives before the first answer would otherwise send its own GET (and open a connection).
        read, _ = self._redis_reads.join(facility_id, lambda: self._redis_get(facility_id))
        entry = await read
        if entry is not None:
            if local is None or entry.fetched_at > local.fetched_at:
                self._remember(facility_id, entry)
            age = max(0.0, now - entry.fetched_at)
            if age <= self.ttl_s:
                _RESULTS["hit"].inc()
                return CacheResult(entry.value, "hit", age, False, entry.memo)
            if age <= self.stale_max_s:
                self._refresh_in_background(facility_id)
                _RESULTS["revalidating"].inc()
                return CacheResult(entry.value, "revalidating", age, False, entry.memo)
        local = self._memory.get(facility_id)
        if local is not None and self._clock() - local.fetched_at <= self.ttl_s:
            # Loaded by a concurrent request while this one waited for Redis.
            _RESULTS["memory"].inc()
            return CacheResult(local.value, "memory", max(0.0, self._clock() - local.fetched_at), False, local.memo)
        try:
            fresh = await self._single_flight(facility_id)
        except (UnavailableError, CircuitOpenError, TimeoutError, OSError, RuntimeError) as exc:
            last = self._newest(entry, self._memory.get(facility_id))
            if last is None:
                _RESULTS["unavailable"].inc()
                reason = f"no current value known for this facility ({type(exc).__name__})"
                raise UnavailableError("influxdb", reason) from exc
            _RESULTS["fallback"].inc()
            return CacheResult(last.value, "fallback", max(0.0, self._clock() - last.fetched_at), True, last.memo)
        _RESULTS["miss"].inc()
        return CacheResult(fresh.value, "miss", max(0.0, self._clock() - fresh.fetched_at), False, fresh.memo)

    @staticmethod
    def _newest(a: Entry | None, b: Entry | None) -> Entry | None:
        if a is None or (b is not None and b.fetched_at > a.fetched_at):
            return b
        return a

    # --- single flight ----------------------------------------------------------------------

    def _single_flight(self, facility_id: str) -> Awaitable[Entry]:
        flight, _ = self._inflight.join(
            facility_id, lambda: self._load(facility_id), lambda f: self._done(facility_id, f)
        )
        return flight

    def _done(self, facility_id: str, fut: asyncio.Future[Entry]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("current_load_failed", facility_id=facility_id, error=str(fut.exception())[:200])

    def _refresh_in_background(self, facility_id: str) -> None:
        if facility_id in self._inflight:
            return
        task = asyncio.ensure_future(self._single_flight(facility_id))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # already logged by _done; retrieve it so asyncio does not warn

    async def _load(self, facility_id: str) -> Entry:
        value = await self.loader(facility_id)
        entry = Entry(value, self._clock())
        self._remember(facility_id, entry)
        await self._redis_set(facility_id, entry)
        return entry

    def _remember(self, facility_id: str, entry: Entry) -> None:
        self._memory[facility_id] = entry
        self._memory.move_to_end(facility_id)
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)

    # --- Redis, bounded and never fatal -----------------------------------------------------

    async def _redis_get(self, facility_id: str) -> Entry | None:
        try:
            raw = await guarded_call(
                "redis",
                lambda: self.redis.get(self.key(facility_id)),
                timeout_s=self.redis_timeout_s,
                breaker=self.breaker,
            )
        except Exception as exc:
            CACHE_ERRORS.labels("redis").inc()
            log.debug("redis_get_failed", error=type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Entry(dict(data["v"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def _redis_set(self, facility_id: str, entry: Entry) -> None:
        payload = json.dumps({"v": entry.value, "t": entry.fetched_at})
        try:
            await guarded_call(
                "redis",
                lambda: self.redis.set(self.key(facility_id), payload, ex=self.keep_s),
                timeout_s=self.redis_timeout_s,
                breaker=self.breaker,
            )
        except Exception as exc:
            CACHE_ERRORS.labels("redis").inc()
            log.debug("redis_set_failed", error=type(exc).__name__)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


class ResponseCache:
    """Short-lived in-process cache of rendered responses, single flight per key.

    Dashboards of one facility poll the same window; with a few seconds of TTL, N viewers cost
    one InfluxDB query per window instead of N. Bounded (LRU); callers check access first, the
    cached bytes hold facility data only, never anything about the caller.
    """

    def __init__(
        self, ttl_s: float, max_entries: int = 2_000, clock: Callable[[], float] = time.monotonic, name: str = "range"
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.name = name
        self._clock = clock
        self._items: OrderedDict[tuple[Any, ...], tuple[float, bytes]] = OrderedDict()
        self._inflight: SingleFlight[tuple[Any, ...], bytes] = SingleFlight()

    async def get(self, key: tuple[Any, ...], load: Callable[[], Awaitable[bytes]]) -> tuple[bytes, bool]:
        """(body, hit)."""
        item = self._items.get(key)
        if item is not None and self._clock() - item[0] <= self.ttl_s:
            RESPONSE_CACHE.labels(self.name, "hit").inc()
            return item[1], True
        flight, joined = self._inflight.join(key, lambda: self._load(key, load))
        RESPONSE_CACHE.labels(self.name, "joined" if joined else "miss").inc()
        return await flight, False

    async def _load(self, key: tuple[Any, ...], load: Callable[[], Awaitable[bytes]]) -> bytes:
        body = await load()
        self._items[key] = (self._clock(), body)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return body
