"""Facilities and meters: list with filters and pagination, detail, operator changes, soft delete."""

from __future__ import annotations


async def test_list_facilities_shows_exactly_the_callers_scope_with_pagination(client, world):
    resp = await client.get("/api/facilities", headers=world.a.headers["analyst"], params={"limit": 1})
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert page["total"] == 2 and page["limit"] == 1 and len(page["items"]) == 1
    second = await client.get("/api/facilities", headers=world.a.headers["analyst"], params={"limit": 1, "offset": 1})
    ids = [page["items"][0]["facility_id"], second.json()["items"][0]["facility_id"]]
    assert sorted(ids) == sorted(world.a.facility_ids)
    assert page["items"][0]["meter_count"] == 2
    manager = await client.get("/api/facilities", headers=world.a.headers["facility_manager"])
    assert [f["facility_id"] for f in manager.json()["items"]] == world.a.facility_ids[:1]


async def test_list_facilities_filters_by_kind_name_and_active(client, world):
    h = world.a.headers["operator"]
    fid = world.a.facility_ids[1]
    resp = await client.patch(f"/api/facilities/{fid}", json={"kind": "hospital", "name": "St Mary 50%_off"}, headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.json()["kind"] == "hospital"
    by_kind = await client.get("/api/facilities", params={"kind": "hospital"}, headers=h)
    assert [f["facility_id"] for f in by_kind.json()["items"]] == [fid]
    by_name = await client.get("/api/facilities", params={"q": "50%_"}, headers=h)
    assert [f["facility_id"] for f in by_name.json()["items"]] == [fid]
    wildcard_is_literal = await client.get("/api/facilities", params={"q": "%"}, headers=h)
    assert [f["facility_id"] for f in wildcard_is_literal.json()["items"]] == [fid]
    await client.patch(f"/api/facilities/{fid}", json={"active": False}, headers=h)
    active = await client.get("/api/facilities", params={"active": "true"}, headers=h)
    assert [f["facility_id"] for f in active.json()["items"]] == world.a.facility_ids[:1]


async def test_facility_detail_and_unknown_facility_404(client, world):
    fid = world.a.facility_ids[0]
    resp = await client.get(f"/api/facilities/{fid}", headers=world.a.headers["facility_manager"])
    assert (
        resp.status_code == 200 and resp.json()["facility_id"] == fid and resp.json()["tenant_id"] == world.a.tenant_id
    )
    missing = await client.get("/api/facilities/does-not-exist", headers=world.a.headers["operator"])
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    out_of_scope = await client.get(
        f"/api/facilities/{world.a.facility_ids[1]}", headers=world.a.headers["facility_manager"]
    )
    assert out_of_scope.status_code == 404


async def test_operator_creates_facility_which_joins_its_scope_and_duplicate_is_409(client, world, uid):
    h = world.a.headers["operator"]
    body = {
        "facility_id": f"c{uid}",
        "name": "Created",
        "kind": "school",
        "timezone": "Europe/Berlin",
        "latitude": 52.5,
        "longitude": 13.4,
        "peak_kw": 120.5,
    }
    resp = await client.post("/api/facilities", json=body, headers=h)
    assert resp.status_code == 201, resp.text
    assert resp.json()["kind"] == "school" and resp.json()["meter_count"] == 0
    listed = await client.get(f"/api/facilities/c{uid}", headers=h)
    assert listed.status_code == 200
    again = await client.post("/api/facilities", json=body, headers=h)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    # The other tenant's operator cannot see it.
    other = await client.get(f"/api/facilities/c{uid}", headers=world.b.headers["operator"])
    assert other.status_code == 404


async def test_invalid_facility_body_gets_422_with_field_details(client, world):
    resp = await client.post(
        "/api/facilities",
        json={"facility_id": "x", "name": "", "timezone": "UTC", "latitude": 200, "longitude": 0},
        headers=world.a.headers["operator"],
    )
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "validation_error"
    fields = {d["loc"][-1] for d in err["details"]}
    assert {"name", "latitude"} <= fields


async def test_meters_create_update_soft_delete(client, world, uid, pg_pool):
    h = world.a.headers["operator"]
    fid = world.a.facility_ids[0]
    created = await client.post(
        f"/api/facilities/{fid}/meters", json={"meter_id": f"m{uid}", "rated_kw": 42.0}, headers=h
    )
    assert created.status_code == 201, created.text
    assert created.json()["deleted_at"] is None
    dup = await client.post(f"/api/facilities/{fid}/meters", json={"meter_id": f"m{uid}", "rated_kw": 1}, headers=h)
    assert dup.status_code == 409
    patched = await client.patch(f"/api/facilities/{fid}/meters/m{uid}", json={"rated_kw": 50.5}, headers=h)
    assert patched.status_code == 200 and patched.json()["rated_kw"] == 50.5
    listed = await client.get(f"/api/facilities/{fid}/meters", headers=h)
    assert listed.json()["total"] == 3
    deleted = await client.delete(f"/api/facilities/{fid}/meters/m{uid}", headers=h)
    assert deleted.status_code == 204
    after = await client.get(f"/api/facilities/{fid}/meters", headers=h)
    assert f"m{uid}" not in [m["meter_id"] for m in after.json()["items"]] and after.json()["total"] == 2
    with_deleted = await client.get(f"/api/facilities/{fid}/meters", params={"include_deleted": True}, headers=h)
    gone = [m for m in with_deleted.json()["items"] if m["meter_id"] == f"m{uid}"]
    assert gone and gone[0]["deleted_at"] is not None
    # Soft delete keeps the row (its history stays addressable).
    assert await pg_pool.fetchval("SELECT count(*) FROM meters WHERE meter_id = $1", f"m{uid}") == 1
    detail = await client.get(f"/api/facilities/{fid}/meters/m{uid}", headers=world.a.headers["analyst"])
    assert detail.status_code == 200 and detail.json()["deleted_at"] is not None
    analyst_delete = await client.delete(
        f"/api/facilities/{fid}/meters/{world.a.meter_ids[fid][0]}", headers=world.a.headers["analyst"]
    )
    assert analyst_delete.status_code == 403
    unknown = await client.delete(f"/api/facilities/{fid}/meters/nope-{uid}", headers=h)
    assert unknown.status_code == 404


async def test_meter_list_filters_by_type(client, world, uid):
    h = world.a.headers["operator"]
    fid = world.a.facility_ids[0]
    await client.post(
        f"/api/facilities/{fid}/meters", json={"meter_id": f"h{uid}", "rated_kw": 5, "meter_type": "hvac"}, headers=h
    )
    resp = await client.get(f"/api/facilities/{fid}/meters", params={"meter_type": "hvac"}, headers=h)
    assert [m["meter_id"] for m in resp.json()["items"]] == [f"h{uid}"]


async def test_unknown_time_zone_is_a_422_naming_the_field_on_create_and_update(client, world, uid):
    h = world.a.headers["operator"]
    body = {"facility_id": f"z{uid}", "name": "Zoned", "timezone": "Mars/Olympus_Mons", "latitude": 1, "longitude": 2}
    created = await client.post("/api/facilities", json=body, headers=h)
    assert created.status_code == 422, created.text
    details = created.json()["error"]["details"]
    assert [d["loc"][-1] for d in details] == ["timezone"]
    assert "unknown time zone" in details[0]["msg"]
    fid = world.a.facility_ids[0]
    patched = await client.patch(f"/api/facilities/{fid}", json={"timezone": "Europe/Londres"}, headers=h)
    assert patched.status_code == 422, patched.text
    unchanged = await client.get(f"/api/facilities/{fid}", headers=h)
    assert unchanged.json()["timezone"] == "Europe/London"
    fine = await client.patch(f"/api/facilities/{fid}", json={"timezone": "Australia/Melbourne"}, headers=h)
    assert fine.status_code == 200 and fine.json()["timezone"] == "Australia/Melbourne"


async def test_database_refuses_an_unknown_time_zone_whoever_writes_it(pg_pool, world, uid):
    import asyncpg
    import pytest

    async with pg_pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="unknown time zone"):
            await conn.execute(
                """INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude)
                   VALUES ($1, $2, 'x', 'office', 'Nowhere/Atlantis', 0, 0)""",
                f"db{uid}",
                world.a.tenant_id,
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE facilities SET timezone = 'Europe/Londres' WHERE facility_id = $1", world.a.facility_ids[0]
            )
        await conn.execute(
            "UPDATE facilities SET timezone = 'America/Los_Angeles' WHERE facility_id = $1", world.a.facility_ids[1]
        )
        assert (
            await conn.fetchval("SELECT timezone FROM facilities WHERE facility_id = $1", world.a.facility_ids[1])
            == "America/Los_Angeles"
        )
