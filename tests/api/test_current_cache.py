"""API-1: current-load cache: single flight per key, TTL, stale-while-revalidate, fallbacks."""

from __future__ import annotations

import asyncio

import pytest

from api.cache import CurrentCache
from energy.adapters.redis import make_redis
from tests.api.conftest import now_ns, reading_lines, running_app, with_overrides
from tests.waiting import wait_until

MIN = 60 * 10**9


class CountingInflux:
    """The real InfluxDB client, counting the queries it is asked to make."""

    def __init__(self, inner):
        self.inner = inner
        self.queries = 0

    async def query(self, *args, **kwargs):
        self.queries += 1
        return await self.inner.query(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_200_concurrent_misses_make_exactly_one_influxdb_query(client, api_app, world, influx):
    fid = world.a.facility_ids[0]
    for m in world.a.meter_ids[fid]:
        await influx.write_lines([reading_lines(fid, m, now_ns() - MIN, 5.0)])
    counting = CountingInflux(api_app.state.influx)
    api_app.state.influx = counting
    try:
        h = world.a.headers["analyst"]
        responses = await asyncio.gather(*(client.get(f"/api/facilities/{fid}/current", headers=h) for _ in range(200)))
    finally:
        api_app.state.influx = counting.inner
    assert [r.status_code for r in responses] == [200] * 200
    assert counting.queries == 1
    assert {r.json()["current_kw"] for r in responses} == {10.0}
    assert len({r.json()["fetched_at"] for r in responses}) == 1


async def test_single_flight_holds_inside_the_cache_itself(settings, world, influx):
    fid = world.a.facility_ids[1]
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow_loader(facility_id):
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return {"facility_id": facility_id, "current_kw": 1.0}

    redis = make_redis(settings.redis)
    cache = CurrentCache(redis, slow_loader, ttl_s=10, stale_max_s=60, keep_s=60, redis_timeout_s=0.1)
    joins = 0
    join = cache._inflight.join

    def counted_join(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal joins
        joins += 1
        return join(*args, **kwargs)

    cache._inflight.join = counted_join  # type: ignore[method-assign]
    try:
        waiting = [asyncio.ensure_future(cache.get(fid)) for _ in range(200)]
        await asyncio.wait_for(started.wait(), 5)
        # Every caller missed Redis and joined the one load before it finishes (a witness, not a pause).
        await wait_until(lambda: joins == 200, timeout_s=10, what="200 callers joined the load", interval_s=0.01)
        release.set()
        results = await asyncio.gather(*waiting)
    finally:
        await redis.delete(cache.key(fid))
        await redis.aclose()
    assert calls == 1
    assert {r.value["current_kw"] for r in results} == {1.0}
    # Callers whose Redis read finished after the load see it as a hit; none made a query of its own.
    assert {r.outcome for r in results} <= {"miss", "hit", "memory"}


async def test_stale_value_is_served_at_once_while_one_background_query_refreshes_it(settings, uid):
    now = [1_000_000.0]
    values = iter([1.0, 2.0, 3.0])
    calls = 0

    async def loader(facility_id):
        nonlocal calls
        calls += 1
        return {"facility_id": facility_id, "current_kw": next(values)}

    redis = make_redis(settings.redis)
    cache = CurrentCache(redis, loader, ttl_s=10, stale_max_s=60, keep_s=600, redis_timeout_s=0.1, clock=lambda: now[0])
    fid = f"swr-{uid}"
    try:
        first = await cache.get(fid)
        assert (first.outcome, first.value["current_kw"]) == ("miss", 1.0)
        now[0] += 5
        hit = await cache.get(fid)
        assert (hit.outcome, hit.value["current_kw"], hit.age_s) == ("memory", 1.0, 5.0)
        now[0] += 20  # older than the TTL, younger than stale_max
        stale = await cache.get(fid)
        assert (stale.outcome, stale.value["current_kw"], stale.stale) == ("revalidating", 1.0, False)
        await wait_until(
            lambda: calls == 2 and not cache._inflight, timeout_s=5, what="the background refresh", interval_s=0.01
        )
        refreshed = await cache.get(fid)
        assert (refreshed.outcome, refreshed.value["current_kw"]) == ("memory", 2.0)
        now[0] += 120  # older than stale_max: refreshed before answering
        old = await cache.get(fid)
        assert (old.outcome, old.value["current_kw"]) == ("miss", 3.0)
    finally:
        await redis.delete(cache.key(fid))
        await redis.aclose()


class CountingRedis:
    """The real Redis client, counting GETs."""

    def __init__(self, inner):
        self.inner = inner
        self.gets = 0

    async def get(self, key):
        self.gets += 1
        return await self.inner.get(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_while_this_process_revalidates_a_stale_value_it_answers_without_a_redis_round_trip(settings, uid):
    now = [1_000_000.0]
    release = asyncio.Event()
    calls = 0

    async def loader(facility_id):
        nonlocal calls
        calls += 1
        if calls == 2:  # the background refresh: held until the test lets it finish
            await release.wait()
        return {"facility_id": facility_id, "current_kw": float(calls)}

    redis = CountingRedis(make_redis(settings.redis))
    cache = CurrentCache(redis, loader, ttl_s=10, stale_max_s=60, keep_s=600, redis_timeout_s=0.1, clock=lambda: now[0])
    fid = f"swr-inflight-{uid}"
    try:
        assert (await cache.get(fid)).outcome == "miss"
        now[0] += 20  # stale: the first request reads Redis, answers the stale value and starts one refresh
        gets_before = redis.gets
        first = await cache.get(fid)
        assert (first.outcome, first.value["current_kw"], redis.gets - gets_before) == ("revalidating", 1.0, 1)
        during = [await cache.get(fid) for _ in range(20)]
        assert {(r.outcome, r.value["current_kw"], r.age_s) for r in during} == {("revalidating", 1.0, 20.0)}
        assert redis.gets - gets_before == 1  # none of those 20 asked Redis
        release.set()
        await wait_until(lambda: fid not in cache._inflight, timeout_s=5, what="the refresh finished", interval_s=0.01)
        refreshed = await cache.get(fid)
        assert (refreshed.outcome, refreshed.value["current_kw"], calls) == ("memory", 2.0, 2)
        now[0] += 120  # beyond stale_max with nothing in flight: Redis is read again, then InfluxDB
        gets_before = redis.gets
        assert (await cache.get(fid)).outcome == "miss"
        assert redis.gets - gets_before == 1
    finally:
        release.set()
        await cache.close()
        await redis.delete(cache.key(fid))
        await redis.aclose()


async def test_nothing_known_and_influxdb_unreachable_gives_503_with_reason(settings, world, stack):
    dead = with_overrides(settings, influx={"url": "http://127.0.0.1:9"})
    async with running_app(dead) as (_, c):
        resp = await c.get(f"/api/facilities/{world.a.facility_ids[0]}/current", headers=world.a.headers["analyst"])
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "dependency_unavailable"
    assert "influxdb" in resp.json()["error"]["message"]
    assert "Retry-After" in resp.headers


@pytest.mark.parametrize("redis_port", [9])
async def test_redis_unreachable_falls_back_to_influxdb(settings, world, influx, redis_port, stack):
    fid = world.a.facility_ids[0]
    for m in world.a.meter_ids[fid]:
        await influx.write_lines([reading_lines(fid, m, now_ns() - MIN, 2.5)])
    no_redis = with_overrides(settings, redis={"port": redis_port})
    async with running_app(no_redis) as (_, c):
        resp = await c.get(f"/api/facilities/{fid}/current", headers=world.a.headers["analyst"])
    assert resp.status_code == 200
    assert resp.json()["current_kw"] == 5.0 and resp.json()["stale"] is False


async def test_identical_range_queries_share_one_influxdb_read_for_the_ttl():
    from api.cache import ResponseCache

    now = [0.0]
    loads = 0
    gate = asyncio.Event()

    async def render():
        nonlocal loads
        loads += 1
        await gate.wait()
        return f"body-{loads}".encode()

    cache = ResponseCache(ttl_s=5, clock=lambda: now[0])
    waiting = [asyncio.ensure_future(cache.get(("f", "1m"), render)) for _ in range(50)]
    # The load starts only after every caller has joined it (they join without I/O, before it runs).
    await wait_until(lambda: loads == 1, timeout_s=5, what="the one load started", interval_s=0.01)
    gate.set()
    results = await asyncio.gather(*waiting)
    assert loads == 1 and {body for body, _ in results} == {b"body-1"}
    assert (await cache.get(("f", "1m"), render)) == (b"body-1", True)
    assert (await cache.get(("g", "1m"), render))[0] == b"body-2"  # another key, another read
    now[0] = 6.0  # past the TTL
    assert (await cache.get(("f", "1m"), render)) == (b"body-3", False)


async def test_a_value_cached_by_one_replica_is_a_redis_hit_for_another(settings, uid):
    calls = 0

    async def loader(facility_id):
        nonlocal calls
        calls += 1
        return {"facility_id": facility_id, "current_kw": 7.0}

    redis = make_redis(settings.redis)
    replicas = [CurrentCache(redis, loader, ttl_s=10, stale_max_s=60, keep_s=60, redis_timeout_s=0.1) for _ in range(2)]
    fid = f"replica-{uid}"
    try:
        first = await replicas[0].get(fid)
        second = await replicas[1].get(fid)
        again = await replicas[1].get(fid)
    finally:
        await redis.delete(CurrentCache.key(fid))
        await redis.aclose()
    assert (first.outcome, second.outcome, again.outcome) == ("miss", "hit", "memory")
    assert calls == 1 and second.value == first.value


async def test_concurrent_requests_for_an_expired_copy_share_one_redis_read(settings, uid):
    now = [1_000_000.0]
    redis = CountingRedis(make_redis(settings.redis))

    async def loader(facility_id):
        return {"facility_id": facility_id, "current_kw": 7.0}

    cache = CurrentCache(redis, loader, ttl_s=10, stale_max_s=60, keep_s=600, redis_timeout_s=1.0, clock=lambda: now[0])
    fid = f"redis-sf-{uid}"
    try:
        assert (await cache.get(fid)).outcome == "miss"
        now[0] += 30  # the in-process copy is past its TTL: the next requests must look at Redis first
        gets_before = redis.gets
        answers = await asyncio.gather(*(cache.get(fid) for _ in range(50)))
        # All 50 arrived before the first Redis answer: one GET served them (before: one GET each).
        assert redis.gets - gets_before == 1
        assert {(a.outcome, a.value["current_kw"], a.age_s) for a in answers} == {("revalidating", 7.0, 30.0)}
    finally:
        await cache.close()
        await redis.delete(cache.key(fid))
        await redis.aclose()
