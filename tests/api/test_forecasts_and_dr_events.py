"""Forecast band of the latest run; DR events list with filters and detail with the full timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.api.test_exports import insert_event


async def insert_forecast(pg_pool, fid: str, run_at: datetime, base: float, hours: int = 4, quality: str = "full"):
    async with pg_pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO forecast_runs
                 (facility_id, run_at, model_version, quality, weather_available, sensor_coverage)
               VALUES ($1, $2, 'lstm-test', $3, true, 0.98)""",
            fid,
            run_at,
            quality,
        )
        await conn.executemany(
            """INSERT INTO load_forecasts (facility_id, target_ts, run_at, p10_kw, p50_kw, p90_kw, model_version,
                                           quality, weather_available, sensor_coverage)
               VALUES ($1, $2, $3, $4, $5, $6, 'lstm-test', $7, true, 0.98)
               ON CONFLICT (facility_id, target_ts) DO UPDATE SET run_at = EXCLUDED.run_at,
                 p10_kw = EXCLUDED.p10_kw, p50_kw = EXCLUDED.p50_kw, p90_kw = EXCLUDED.p90_kw,
                 quality = EXCLUDED.quality""",
            [
                (fid, run_at + timedelta(hours=h), run_at, base + h - 5, base + h, base + h + 5, quality)
                for h in range(1, hours + 1)
            ],
        )


async def test_forecast_returns_latest_run_and_the_p10_p50_p90_band(client, world, pg_pool):
    fid = world.a.facility_ids[0]
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await insert_forecast(pg_pool, fid, now - timedelta(hours=2), 100.0)
    await insert_forecast(pg_pool, fid, now - timedelta(hours=1), 200.0, quality="degraded_no_weather")
    resp = await client.get(f"/api/facilities/{fid}/forecast", headers=world.a.headers["facility_manager"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["latest_run"]["quality"] == "degraded_no_weather"
    assert datetime.fromisoformat(body["latest_run"]["run_at"]) == now - timedelta(hours=1)
    pts = body["points"]
    # Newest run wins per target time; the older run's earlier target (now - 1 h) stays.
    assert [p["p50_kw"] for p in pts] == [101.0, 201.0, 202.0, 203.0, 204.0]
    assert [p["quality"] for p in pts] == ["full"] + ["degraded_no_weather"] * 4
    assert all(p["p10_kw"] < p["p50_kw"] < p["p90_kw"] for p in pts)
    window = await client.get(
        f"/api/facilities/{fid}/forecast",
        headers=world.a.headers["analyst"],
        params={"start": (now + timedelta(minutes=90)).isoformat(), "end": (now + timedelta(hours=3)).isoformat()},
    )
    assert [p["p50_kw"] for p in window.json()["points"]] == [203.0]  # target now + 2 h


async def test_forecast_of_a_facility_without_runs_is_empty(client, world):
    resp = await client.get(f"/api/facilities/{world.a.facility_ids[1]}/forecast", headers=world.a.headers["analyst"])
    assert resp.status_code == 200 and resp.json() == {
        "facility_id": world.a.facility_ids[1],
        "latest_run": None,
        "points": [],
    }


async def test_dr_events_list_filters_and_shows_only_facilities_in_scope(client, world, pg_pool):
    fa, fa2 = world.a.facility_ids
    fb = world.b.facility_ids[0]
    t0 = datetime(2026, 8, 1, 12, tzinfo=UTC)
    both = await insert_event(pg_pool, [(fa, "active", 10, 100, None), (fb, "active", 5, 50, None)], "active", t0)
    only_a2 = await insert_event(pg_pool, [(fa2, "restored", 10, 100, 8)], "completed", t0 + timedelta(days=1))
    only_b = await insert_event(pg_pool, [(fb, "restored", 10, 100, 8)], "completed", t0 + timedelta(days=2))
    h = world.a.headers["analyst"]
    resp = await client.get("/api/dr-events", headers=h)
    assert resp.status_code == 200
    items = {i["dr_event_id"]: i for i in resp.json()["items"]}
    assert str(both) in items and str(only_a2) in items and str(only_b) not in items
    assert items[str(both)]["facility_ids"] == [fa]
    active = await client.get("/api/dr-events", headers=h, params={"state": "active"})
    assert str(only_a2) not in {i["dr_event_id"] for i in active.json()["items"]}
    by_facility = await client.get("/api/dr-events", headers=h, params={"facility_id": fa2})
    assert [i["dr_event_id"] for i in by_facility.json()["items"]] == [str(only_a2)]
    by_time = await client.get(
        "/api/dr-events",
        headers=h,
        params={
            "start_after": (t0 + timedelta(hours=12)).isoformat(),
            "start_before": (t0 + timedelta(days=3)).isoformat(),
        },
    )
    assert str(both) not in {i["dr_event_id"] for i in by_time.json()["items"]}
    assert str(only_a2) in {i["dr_event_id"] for i in by_time.json()["items"]}


async def test_dr_event_detail_has_the_full_timeline_limited_to_the_scope(client, world, pg_pool):
    fa = world.a.facility_ids[0]
    fb = world.b.facility_ids[0]
    event = await insert_event(pg_pool, [(fa, "restored", 10, 100, 11), (fb, "failed", 5, 50, None)])
    resp = await client.get(f"/api/dr-events/{event}", headers=world.a.headers["analyst"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["event"]["dr_event_id"] == str(event)
    assert [f["facility_id"] for f in body["facilities"]] == [fa]
    assert body["facilities"][0]["achieved_kw"] == 11
    timeline = body["timeline"]
    assert [(e["entry_type"], e["facility_id"], e["to_state"]) for e in timeline] == [
        ("state_changed", None, "scheduled"),
        ("facility_state_changed", fa, "restored"),
    ]
    assert timeline[1]["detail"] == {"note": "x"}
    assert [e["seq"] for e in timeline] == sorted(e["seq"] for e in timeline)
    other = await client.get(f"/api/dr-events/{event}", headers=world.b.headers["analyst"])
    assert [f["facility_id"] for f in other.json()["facilities"]] == [fb]
    missing = await client.get(
        "/api/dr-events/00000000-0000-0000-0000-000000000000", headers=world.a.headers["analyst"]
    )
    assert missing.status_code == 404
    bad = await client.get("/api/dr-events/not-a-uuid", headers=world.a.headers["analyst"])
    assert bad.status_code == 422
