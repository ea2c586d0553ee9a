"""API-4 and API-5: no endpoint lets one tenant read another's data; hostile ids get 4xx and change nothing."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.api.conftest import now_ns, reading_lines
from tests.api.test_exports import insert_event

# Routes authenticated by other means (the utility's webhook) or not about tenant data.
NOT_TENANT_SCOPED = ("/api/auth/", "/api/utility/")

HOSTILE_IDS = [
    "fac-001' OR '1'='1",
    '"; DROP TABLE facilities; --',
    'x" OR facility_id =~ /.*/ --',
    "x' ; DROP MEASUREMENT readings",
    "$fid",
    "/.*/",
    "fäc-001",
    "fac\u0000001",
    "fac-001\nSELECT * FROM users",
    "😀",
    "a" * 300,
    "-leading-dash",
    "..",
]


def api_routes(app) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every tenant-data endpoint, from the OpenAPI document."""
    out = []
    for path, item in app.openapi()["paths"].items():
        if path.startswith("/api/") and not path.startswith(NOT_TENANT_SCOPED):
            for method, op in item.items():
                out.append((method.upper(), path, op))
    return out


def query_names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


def body_for(op: dict[str, Any], facility_id: str) -> dict[str, Any] | None:
    if "requestBody" not in op:
        return None
    ref = op["requestBody"]["content"]["application/json"]["schema"].get("$ref", "")
    if ref.endswith("/MeterCreate"):
        return {"meter_id": f"{facility_id}-mx", "rated_kw": 1}
    if ref.endswith("/FacilityCreate"):
        return {"facility_id": facility_id, "name": "x", "timezone": "UTC", "latitude": 0, "longitude": 0}
    return {}


def query_for(op: dict[str, Any], facility_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    names = query_names(op)
    if "facility_id" in names:
        params["facility_id"] = facility_id
    if "start" in names:
        params["start"] = "2026-01-01T00:00:00Z"
    if "end" in names:
        params["end"] = "2027-01-01T00:00:00Z"
    return params


async def test_every_endpoint_refuses_or_hides_the_other_tenants_data(api_app, client, world, pg_pool, influx):
    b_fid = world.b.facility_ids[0]
    b_meter = world.b.meter_ids[b_fid][0]
    await influx.write_lines([reading_lines(b_fid, b_meter, now_ns() - 60 * 10**9, 777.0)])
    b_event = await insert_event(pg_pool, [(b_fid, "active", 10, 100, None)], "active")
    secrets = [world.b.tenant_id, *world.b.facility_ids, b_meter, str(b_event), "777.0"]
    checked = 0
    for method, path, op in api_routes(api_app):
        url = path.replace("{facility_id}", b_fid).replace("{meter_id}", b_meter).replace("{dr_event_id}", str(b_event))
        targeted = url != path or "facility_id" in query_names(op)
        for role in ("operator", "analyst", "facility_manager", "api_key"):
            resp = await client.request(
                method, url, headers=world.a.headers[role], params=query_for(op, b_fid), json=body_for(op, b_fid)
            )
            assert resp.status_code < 500, (method, path, role, resp.text)
            if targeted and not (method == "POST" and path == "/api/facilities"):
                assert resp.status_code in (403, 404, 422), (method, path, role, resp.status_code)
            if resp.status_code < 300:
                leaked = [s for s in secrets if s in resp.text]
                assert not leaked, (method, path, role, leaked)
            checked += 1
    assert checked >= 4 * 15  # every API route, every role


async def test_other_tenants_facility_id_cannot_be_claimed_by_create(client, world):
    b_fid = world.b.facility_ids[0]
    body = {"facility_id": b_fid, "name": "x", "timezone": "UTC", "latitude": 0, "longitude": 0}
    resp = await client.post("/api/facilities", json=body, headers=world.a.headers["operator"])
    assert resp.status_code == 409
    detail = await client.get(f"/api/facilities/{b_fid}", headers=world.b.headers["operator"])
    assert detail.json()["tenant_id"] == world.b.tenant_id and detail.json()["name"] != "x"


async def snapshot(pg_pool, influx, world) -> tuple[Any, ...]:
    facilities = await pg_pool.fetchval("SELECT count(*) FROM facilities")
    meters = await pg_pool.fetchval("SELECT count(*) FROM meters WHERE deleted_at IS NULL")
    users = await pg_pool.fetchval("SELECT count(*) FROM users")
    names = await pg_pool.fetch(
        "SELECT facility_id, name, kind FROM facilities WHERE tenant_id = $1 ORDER BY 1", world.a.tenant_id
    )
    series = await influx.query(
        'SELECT count("active_power_kw") FROM "readings" WHERE "facility_id" = $f', {"f": world.a.facility_ids[0]}
    )
    return facilities, meters, users, [tuple(r) for r in names], [s.values for s in series]


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=lambda s: re.sub(r"\W", "_", s)[:20])
async def test_hostile_ids_get_4xx_and_change_nothing(api_app, client, world, pg_pool, influx, hostile):
    fid = world.a.facility_ids[0]
    await influx.write_lines([reading_lines(fid, world.a.meter_ids[fid][0], now_ns() - 60 * 10**9, 1.0)])
    before = await snapshot(pg_pool, influx, world)
    h = world.a.headers["operator"]
    window = {"start": "2026-01-01T00:00:00Z", "end": "2026-12-31T00:00:00Z"}
    for method, path, op in api_routes(api_app):
        if "{" not in path and "facility_id" not in query_names(op):
            continue
        segment = quote(hostile, safe="")
        url = path.replace("{facility_id}", segment).replace("{meter_id}", segment).replace("{dr_event_id}", segment)
        params = {**query_for(op, fid), **({"facility_id": hostile} if "{" not in path else {})}
        resp = await client.request(method, url, headers=h, params=params, json=body_for(op, fid))
        assert 400 <= resp.status_code < 500, (method, path, resp.status_code, resp.text)
        error = resp.json()["error"]
        if error["code"] == "forbidden":  # a route for another role refuses an operator before reading the id
            assert "operator" not in error["details"]["allowed_roles"], (method, path, resp.text)
        else:
            assert error["code"] in ("validation_error", "not_found", "method_not_allowed"), (method, path, resp.text)
    # Hostile values in query parameters and bodies, too.
    resp = await client.get(f"/api/facilities/{fid}/readings", headers=h, params={**window, "meter_id": hostile})
    assert resp.status_code == 422
    resp = await client.get("/api/facilities", headers=h, params={"q": hostile[:100]})
    assert resp.status_code in (200, 422)  # control characters are refused, the rest matches nothing
    if resp.status_code == 200:
        assert resp.json()["items"] == []
    resp = await client.post(
        "/api/facilities",
        headers=h,
        json={"facility_id": hostile, "name": "x", "timezone": "UTC", "latitude": 0, "longitude": 0},
    )
    assert resp.status_code == 422
    resp = await client.get("/api/dr-events", headers=h, params={"state": hostile})
    assert resp.status_code == 422
    assert await snapshot(pg_pool, influx, world) == before


async def test_sql_text_in_a_name_is_stored_verbatim(client, world):
    name = "Robert'); DROP TABLE facilities;-- \u00e9\u00e8 $1 %s"
    fid = world.a.facility_ids[0]
    resp = await client.patch(f"/api/facilities/{fid}", json={"name": name}, headers=world.a.headers["operator"])
    assert resp.status_code == 200 and resp.json()["name"] == name
    again = await client.get(f"/api/facilities/{fid}", headers=world.a.headers["analyst"])
    assert again.json()["name"] == name
