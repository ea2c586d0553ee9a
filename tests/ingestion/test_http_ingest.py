"""POST /v1/readings: the second path in, same validation, authenticated, bounded (ING-4, ING-3)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx
import pytest

from energy.fleet import token_hash
from energy.stack.servers import KafkaServer
from ingestion.registry import upsert_gateway_key
from tests.ingestion.conftest import RECENT_DAY, ingest_settings, read_topic
from tests.waiting import wait_until


def reading(meter_id: str, seq: int, minutes: int = 0, **override):
    doc = {
        "meter_id": meter_id,
        "ts": (RECENT_DAY + timedelta(hours=9, minutes=minutes)).isoformat(),
        "active_power_kw": 20.0,
        "reactive_power_kvar": 8.0,
        "voltage_v": 230.0,
        "current_a": 94.0,
        "energy_kwh": 500.0 + seq,
        "seq": seq,
    }
    doc.update(override)
    return doc


@pytest.fixture
async def keys(pg_pool, uid):
    """A gateway key for fac-004 and a meter key for a meter of this test's own."""
    gateway_key, meter_key = f"gw-{uid}", f"mk-{uid}"
    meter_id = f"t-{uid}-m01"
    await upsert_gateway_key(pg_pool, f"t-{uid}", token_hash(gateway_key), "fac-004")
    async with pg_pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO meters (meter_id, facility_id, meter_type, rated_kw, api_key_hash)
               VALUES ($1, 'fac-005', 'plug', 50, $2)""",
            meter_id,
            token_hash(meter_key),
        )
    yield {"gateway": gateway_key, "meter": meter_key, "meter_id": meter_id}
    async with pg_pool.acquire() as conn:
        await conn.execute("UPDATE meters SET deleted_at = now() WHERE meter_id = $1", meter_id)
        await conn.execute("UPDATE ingestion_gateway_keys SET revoked_at = now() WHERE key_id = $1", f"t-{uid}")


async def test_http_gateway_batch_is_validated_and_published_like_mqtt(settings, uid, start_service, keys):
    s = ingest_settings(settings, uid)
    service = await start_service(s)
    batch = {"gateway_id": "gw-fac-004", "readings": [reading(f"fac-004-m0{i}", 1) for i in range(1, 4)]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        resp = await http.post("/v1/readings", json=batch, headers={"X-Api-Key": keys["gateway"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 3 and body["rejected"] == 0
    assert {r["status"] for r in body["results"]} == {"accepted"}
    records = await read_topic(s, s.ingestion.readings_topic, expect=3, idle_s=0.5)
    assert sorted(r.value["payload"]["meter_id"] for r in records) == ["fac-004-m01", "fac-004-m02", "fac-004-m03"]
    assert {r.key for r in records} == {b"fac-004"}
    assert {r.value["event_id"] for r in records} == {r["reading_id"] for r in body["results"]}


async def test_http_mixed_batch_answers_207_and_dead_letters_each_bad_reading(settings, uid, start_service, keys):
    s = ingest_settings(settings, uid)
    service = await start_service(s)
    good = reading("fac-004-m01", 2, minutes=1)
    wrong_type = reading("fac-004-m02", 2, minutes=1, voltage_v="230")
    unknown = reading("no-such-meter", 2)
    other_facility = reading("fac-006-m01", 2)  # valid, but the key is for fac-004 only
    batch = {"gateway_id": "gw-fac-004", "readings": [good, wrong_type, unknown, other_facility]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        resp = await http.post("/v1/readings", json=batch, headers={"X-Api-Key": keys["gateway"]})
    assert resp.status_code == 207, resp.text
    body = resp.json()
    assert body["accepted"] == 1 and body["rejected"] == 3
    reasons = sorted(r["reason"] for r in body["results"] if r["status"] == "rejected")
    assert reasons == ["not_authorised", "schema_mismatch", "unknown_meter"]
    dlq = await read_topic(s, s.ingestion.dlq_topic, expect=3, idle_s=0.5)
    assert sorted(d.value["payload"]["reason"] for d in dlq) == reasons
    wrong = next(d for d in dlq if d.value["payload"]["reason"] == "schema_mismatch")
    assert json.loads(base64.b64decode(wrong.value["payload"]["raw_b64"]))["voltage_v"] == "230"
    readings = await read_topic(s, s.ingestion.readings_topic, expect=1, idle_s=0.5)
    assert [r.value["payload"]["meter_id"] for r in readings] == ["fac-004-m01"]


async def test_http_rejects_missing_unknown_and_foreign_keys(settings, uid, start_service, keys):
    s = ingest_settings(settings, uid)
    service = await start_service(s)
    own = [reading(keys["meter_id"], 1)]
    foreign = [reading("fac-005-m01", 1)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        missing = await http.post("/v1/readings", json=own)
        unknown = await http.post("/v1/readings", json=own, headers={"X-Api-Key": "not-a-key"})
        forbidden = await http.post("/v1/readings", json=foreign, headers={"X-Api-Key": keys["meter"]})
        allowed = await http.post("/v1/readings", json=own, headers={"X-Api-Key": keys["meter"]})
    assert (missing.status_code, missing.json()["error"]) == (401, "missing_api_key")
    assert (unknown.status_code, unknown.json()["error"]) == (401, "invalid_api_key")
    assert (forbidden.status_code, forbidden.json()["error"]) == (403, "not_authorised")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["results"][0]["meter_id"] == keys["meter_id"]


async def test_http_bad_bodies_get_4xx_with_a_reason(settings, uid, start_service, keys):
    s = ingest_settings(settings, uid, max_message_bytes=10_000)
    service = await start_service(s)
    headers = {"X-Api-Key": keys["gateway"], "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        not_json = await http.post("/v1/readings", content=b'{"gateway_id": ', headers=headers)
        wrong_shape = await http.post("/v1/readings", json={"hello": "world"}, headers=headers)
        empty = await http.post("/v1/readings", json=[], headers=headers)
        too_big = await http.post("/v1/readings", content=b"[" + b" " * 20_000 + b"]", headers=headers)
        all_bad = await http.post("/v1/readings", json=[reading("fac-004-m01", 1, energy_kwh="x")], headers=headers)
    assert (not_json.status_code, not_json.json()["error"]) == (400, "invalid_json")
    assert (wrong_shape.status_code, wrong_shape.json()["error"]) == (422, "schema_mismatch")
    assert empty.status_code == 422
    assert (too_big.status_code, too_big.json()["error"]) == (413, "payload_too_large")
    assert all_bad.status_code == 422 and all_bad.json()["results"][0]["reason"] == "schema_mismatch"
    assert "detail" in wrong_shape.json() and wrong_shape.json()["detail"]


async def test_http_answers_503_with_retry_after_when_kafka_hangs_and_the_buffer_is_full(
    settings, uid, private_server, start_service, keys
):
    broker = private_server(KafkaServer)
    s = ingest_settings(
        settings, uid, bootstrap=f"127.0.0.1:{broker.port}", buffer_size=3, http_wait_s=1.0, publish_timeout_s=1.0
    )
    service = await start_service(s)
    broker.pause()
    try:
        headers = {"X-Api-Key": keys["gateway"]}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
            first = await http.post(
                "/v1/readings", json=[reading("fac-004-m01", i, minutes=i) for i in range(3)], headers=headers
            )
            second = await http.post("/v1/readings", json=[reading("fac-004-m02", 9)], headers=headers)
            # The HTTP wait and the publish timeout are both 1 s, and the publish timeout starts a little
            # later (after the publisher's linger): /ready turns 503 once it expires, so wait for that.
            ready = await wait_until(
                lambda: http.get("/ready"),
                accept=lambda r: r.status_code == 503,
                timeout_s=10,
                what="/ready turning 503",
                interval_s=0.05,
            )
        assert first.status_code == 503 and first.json()["error"] == "not_acknowledged"
        assert second.status_code == 503 and second.json()["error"] == "buffer_full"
        assert second.headers["Retry-After"] == str(s.ingestion.retry_after_s)
        assert ready.status_code == 503 and "kafka_backpressure" in ready.json()["conditions"]
        assert service.buffer.max_used <= 3
    finally:
        broker.resume()
    # The held readings are delivered once the broker answers again.
    await wait_until(lambda: service.buffer.used == 0, timeout_s=20, what="the held readings delivered")
    records = await read_topic(s, s.ingestion.readings_topic, expect=3, idle_s=0.5)
    assert sorted({r.value["payload"]["seq"] for r in records}) == [0, 1, 2]


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


async def test_metrics_count_received_valid_invalid_dlq_published_depth_and_latency(settings, uid, start_service, keys):
    s = ingest_settings(settings, uid)
    service = await start_service(s)
    names = {
        "received": ("energy_ingestion_messages_received_total", {"path": "http"}),
        "valid": ("energy_ingestion_readings_valid_total", {"path": "http"}),
        "invalid": ("energy_ingestion_readings_invalid_total", {"path": "http", "reason": "unknown_meter"}),
        "published": ("energy_ingestion_published_total", {"kind": "reading"}),
        "dlq": ("energy_ingestion_published_total", {"kind": "dlq"}),
        "latency": ("energy_ingestion_publish_latency_seconds_count", {}),
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        before_text = (await http.get("/metrics")).text
        resp = await http.post(
            "/v1/readings",
            json=[reading("fac-004-m01", 40, minutes=40), reading("nope-meter", 1)],
            headers={"X-Api-Key": keys["gateway"]},
        )
        after_text = (await http.get("/metrics")).text
    assert resp.status_code == 207
    delta = {k: _metric(after_text, n, **lb) - _metric(before_text, n, **lb) for k, (n, lb) in names.items()}
    assert delta == {"received": 1, "valid": 1, "invalid": 1, "published": 1, "dlq": 1, "latency": 1}
    assert 'energy_queue_depth{queue="ingestion_buffer"}' in after_text
    assert 'energy_queue_capacity{queue="ingestion_buffer"}' in after_text


async def test_http_never_answers_5xx_to_random_or_mutated_bodies(settings, uid, start_service, keys):
    import random

    s = ingest_settings(settings, uid)
    service = await start_service(s)
    rng = random.Random(1234)
    weird = [None, True, -1, 10**30, 1e308, "", "x" * 300, [], {}, [1, 2], {"a": 1}, "2026-13-45T99:00:00Z"]

    def mutated():
        doc = reading("fac-004-m0" + str(rng.randint(1, 9)), rng.randint(0, 10**6), minutes=rng.randint(0, 10**5))
        for _ in range(rng.randint(1, 3)):
            field = rng.choice([*doc, "extra"])
            action = rng.random()
            if action < 0.3:
                doc.pop(field, None)
            else:
                doc[field] = rng.choice(weird)
        return doc

    bodies = []
    for i in range(300):
        kind = i % 4
        if kind == 0:
            bodies.append(rng.randbytes(rng.randint(0, 300)))
        elif kind == 1:
            bodies.append(json.dumps([mutated() for _ in range(rng.randint(1, 5))]).encode())
        elif kind == 2:
            bodies.append(json.dumps({"gateway_id": rng.choice(["gw", "", 5]), "readings": [mutated()]}).encode())
        else:
            bodies.append(json.dumps(rng.choice(weird)).encode())
    statuses = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        for body in bodies:
            resp = await http.post(
                "/v1/readings", content=body, headers={"X-Api-Key": keys["gateway"], "Content-Type": "application/json"}
            )
            statuses.append(resp.status_code)
            assert resp.status_code in (200, 207, 400, 403, 413, 422), (resp.status_code, body[:200], resp.text)
            assert "error" in resp.json() or "results" in resp.json()
    assert {400, 422} <= set(statuses)


async def test_ingestion_api_docs_load_only_local_assets(settings, uid, start_service):
    from tests.api.test_offline_docs import assert_page_is_self_contained

    service = await start_service(ingest_settings(settings, uid))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10) as http:
        await assert_page_is_self_contained(http, "/docs", min_asset_bytes=500_000)
        spec = (await http.get("/openapi.json")).json()
    assert "/v1/readings" in spec["paths"]
