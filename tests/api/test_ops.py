"""API-3 and rate limiting: /healthz, /ready, /metrics, 429 with Retry-After, trace ids."""

from __future__ import annotations

from tests.api.conftest import running_app, with_overrides


async def test_healthz_ready_and_metrics(client):
    assert (await client.get("/healthz")).json()["alive"] is True
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"postgres", "influxdb", "redis"}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "energy_api_request_seconds" in metrics.text


async def test_ready_is_503_with_the_reason_when_a_dependency_is_down(settings, stack):
    broken = with_overrides(settings, influx={"url": "http://127.0.0.1:9"})
    async with running_app(broken) as (_, c):
        resp = await c.get("/ready")
    assert resp.status_code == 503
    body = resp.json()
    assert body["checks"]["influxdb"]["ok"] is False and body["checks"]["influxdb"]["error"]
    assert body["checks"]["postgres"]["ok"] is True


async def test_rate_limit_per_principal_gives_429_with_retry_after(settings, world, stack):
    limited = with_overrides(settings, api={"rate_limit_per_s": 1.0, "rate_limit_burst": 5})
    async with running_app(limited) as (_, c):
        codes = [(await c.get("/api/facilities", headers=world.a.headers["analyst"])).status_code for _ in range(8)]
        blocked = await c.get("/api/facilities", headers=world.a.headers["analyst"])
        other_principal = await c.get("/api/facilities", headers=world.a.headers["operator"])
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) >= 1
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert other_principal.status_code == 200


async def test_login_attempts_are_rate_limited_per_client(settings, stack):
    limited = with_overrides(settings, api={"login_rate_per_s": 0.1, "login_burst": 3})
    async with running_app(limited) as (_, c):
        codes = [
            (await c.post("/api/auth/token", json={"email": "x@example.test", "password": "y"})).status_code
            for _ in range(5)
        ]
    assert codes[:3] == [401] * 3 and codes[3:] == [429, 429]


async def test_response_carries_the_callers_trace_id(client):
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    resp = await client.get("/healthz", headers={"traceparent": trace})
    assert resp.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


async def test_repeated_failed_authentication_is_refused_with_429_before_any_lookup(settings, world, stack):
    limited = with_overrides(settings, api={"auth_failure_rate_per_s": 0.1, "auth_failure_burst": 5})
    async with running_app(limited) as (_, c):
        codes = [(await c.get("/api/facilities", headers={"X-Api-Key": f"guess-{i}"})).status_code for i in range(7)]
        # Even a valid key is refused from that address until the bucket refills.
        blocked = await c.get("/api/facilities", headers=world.a.headers["api_key"])
    assert codes == [401] * 5 + [429] * 2
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
