"""Current load and readings/rollups over a range, checked against data written to InfluxDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.timeseries import iso_ns
from tests.api.conftest import now_ns, reading_lines, rollup_line, running_app, with_overrides

MIN = 60 * 10**9


async def test_current_is_sum_of_each_meters_latest_reading_plus_latest_1m_rollup(client, world, influx):
    fid = world.a.facility_ids[0]
    m1, m2 = world.a.meter_ids[fid]
    t = now_ns() - 5 * MIN
    await influx.write_lines(
        [
            reading_lines(fid, m1, t, 10.0, 1),
            reading_lines(fid, m1, t + MIN, 12.5, 2),
            reading_lines(fid, m2, t, 7.0, 1),
            reading_lines(fid, m2, t + 2 * MIN, 8.25, 2),
        ]
    )
    await influx.write_lines(
        [rollup_line(fid, "1m", t - MIN, 99.0), rollup_line(fid, "1m", t, 20.0), rollup_line(fid, "15m", t, 555.0)],
        retention_policy="rollups_2y",
    )
    resp = await client.get(f"/api/facilities/{fid}/current", headers=world.a.headers["facility_manager"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["current_kw"] == 12.5 + 8.25
    assert body["meters_reporting"] == 2
    assert datetime.fromisoformat(body["as_of"]) == datetime.fromisoformat(iso_ns(t + 2 * MIN))
    assert body["rollup_1m"]["avg_kw"] == 20.0 and body["rollup_1m"]["window"] == "1m"
    assert body["stale"] is False
    assert resp.headers["X-Cache"] == "miss"
    assert float(resp.headers["X-Data-Staleness-Seconds"]) < 5
    again = await client.get(f"/api/facilities/{fid}/current", headers=world.a.headers["analyst"])
    assert again.headers["X-Cache"] in ("hit", "memory") and again.json()["current_kw"] == body["current_kw"]


async def test_current_without_any_data_is_empty_not_an_error(client, world):
    fid = world.a.facility_ids[1]
    resp = await client.get(f"/api/facilities/{fid}/current", headers=world.a.headers["analyst"])
    assert resp.status_code == 200
    assert resp.json()["current_kw"] is None and resp.json()["meters_reporting"] == 0


async def test_raw_readings_in_range_are_returned_oldest_first_and_limited(client, world, influx):
    fid = world.a.facility_ids[0]
    m1, m2 = world.a.meter_ids[fid]
    base = (now_ns() // 10**9 - 3600) * 10**9
    lines = [reading_lines(fid, m, base + i * 15 * 10**9, 1.0 + i, i) for i in range(20) for m in (m1, m2)]
    await influx.write_lines(lines)
    start = datetime.fromtimestamp(base / 1e9, UTC)
    params = {"start": start.isoformat(), "end": (start + timedelta(seconds=150)).isoformat(), "granularity": "raw"}
    resp = await client.get(f"/api/facilities/{fid}/readings", params=params, headers=world.a.headers["analyst"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["raw"]) == 20 and body["truncated"] is False  # 10 timestamps x 2 meters in [start, start+150s)
    times = [r["ts"] for r in body["raw"]]
    assert times == sorted(times)
    assert {r["meter_id"] for r in body["raw"]} == {m1, m2}
    limited = await client.get(
        f"/api/facilities/{fid}/readings", params={**params, "limit": 5}, headers=world.a.headers["analyst"]
    )
    assert len(limited.json()["raw"]) == 5 and limited.json()["truncated"] is True
    one_meter = await client.get(
        f"/api/facilities/{fid}/readings", params={**params, "meter_id": m2}, headers=world.a.headers["analyst"]
    )
    assert len(one_meter.json()["raw"]) == 10 and {r["meter_id"] for r in one_meter.json()["raw"]} == {m2}


async def test_rollups_for_each_window_come_from_facility_rollups(client, world, influx):
    fid = world.a.facility_ids[0]
    base = (now_ns() // (3600 * 10**9) - 5) * 3600 * 10**9
    lines = [rollup_line(fid, "1m", base + i * MIN, 100.0 + i) for i in range(30)]
    lines += [rollup_line(fid, "15m", base + i * 15 * MIN, 200.0 + i) for i in range(4)]
    lines += [rollup_line(fid, "1h", base, 300.0)]
    await influx.write_lines(lines, retention_policy="rollups_2y")
    start = datetime.fromtimestamp(base / 1e9, UTC)
    end = start + timedelta(hours=1)
    h = world.a.headers["analyst"]
    for granularity, expected in (
        ("1m", [100.0 + i for i in range(30)]),
        ("15m", [200.0, 201.0, 202.0, 203.0]),
        ("1h", [300.0]),
    ):
        resp = await client.get(
            f"/api/facilities/{fid}/readings",
            headers=h,
            params={"start": start.isoformat(), "end": end.isoformat(), "granularity": granularity},
        )
        assert resp.status_code == 200, resp.text
        assert [r["avg_kw"] for r in resp.json()["rollups"]] == expected, granularity
        assert all(r["window"] == granularity for r in resp.json()["rollups"])


async def test_bad_ranges_and_granularities_get_422(client, world):
    fid = world.a.facility_ids[0]
    h = world.a.headers["analyst"]
    url = f"/api/facilities/{fid}/readings"
    cases = [
        {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00"},
        {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "granularity": "5m"},
        {"start": "1900-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        {"start": "not a date", "end": "2026-01-02T00:00:00Z"},
        {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "limit": 0},
    ]
    for params in cases:
        resp = await client.get(url, params=params, headers=h)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["error"]["code"] == "validation_error"
    unknown_meter = await client.get(
        url,
        headers=h,
        params={"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "meter_id": "other-meter"},
    )
    assert unknown_meter.status_code == 404


async def test_a_range_query_that_does_not_finish_in_time_is_shed_with_503_naming_influxdb(settings, world):
    # No InfluxDB answer arrives within a microsecond: the API must shed the request (503 + Retry-After), not 500.
    impatient = with_overrides(settings, api={"range_query_timeout_s": 1e-6})
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    params = {"start": (end - timedelta(hours=6)).isoformat(), "end": end.isoformat(), "granularity": "1m"}
    async with running_app(impatient) as (_, c):
        resp = await c.get(
            f"/api/facilities/{world.a.facility_ids[0]}/readings", params=params, headers=world.a.headers["analyst"]
        )
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["code"] == "dependency_unavailable"
    assert error["details"] == {"dependency": "influxdb"}
    assert "did not finish within 1e-06 s" in error["message"]
    assert resp.headers["Retry-After"] == "5"
