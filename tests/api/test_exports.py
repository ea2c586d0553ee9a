"""API-6: CSV exports stream page by page and are correct to the row against the source."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.api.conftest import now_ns, reading_lines, rollup_line, running_app, with_overrides

SEC = 10**9
LONDON = ZoneInfo("Europe/London")  # the zone make_tenant gives every test facility


def utc_us(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def london(ns: int, fmt: str) -> str:
    local = datetime.fromtimestamp(ns // 1000 / 1e6, UTC).astimezone(LONDON)
    offset = local.strftime("%z")
    return local.strftime(fmt) + f"{offset[:3]}:{offset[3:]}"


def parse(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


async def test_raw_export_of_two_facilities_matches_the_source_row_for_row(settings, world, influx):
    fa, fb = world.a.facility_ids
    base = (now_ns() // SEC - 7200) * SEC
    expected = []
    lines = []
    for fid in (fa, fb):
        for i in range(150):  # 150 timestamps x 2 meters x 2 facilities = 600 rows, pages of 100
            ts = base + i * 15 * SEC
            for m in world.a.meter_ids[fid]:
                kw = round(0.1 * i + (0.5 if m.endswith("2") else 0.0), 3)
                lines.append(reading_lines(fid, m, ts, kw, i))
                expected.append(
                    [
                        utc_us(ts),
                        london(ts, "%Y-%m-%dT%H:%M:%S.%f"),
                        fid,
                        m,
                        repr(kw),
                        "1.0",
                        "230.0",
                        "10.0",
                        repr(1000.0 + i),
                    ]
                )
    await influx.write_lines(lines)
    start = datetime.fromtimestamp(base / 1e9, UTC)
    small_pages = with_overrides(settings, api={"export_page_rows": 100})
    async with running_app(small_pages) as (_, c):
        resp = await c.get(
            "/api/exports/readings.csv",
            headers=world.a.headers["analyst"],
            params={
                "facility_id": [fa, fb],
                "granularity": "raw",
                "start": start.isoformat(),
                "end": (start + timedelta(hours=1)).isoformat(),
            },
        )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    header, rows = parse(resp.text)
    assert header == [
        "timestamp_utc",
        "timestamp_local",
        "facility_id",
        "meter_id",
        "active_power_kw",
        "reactive_power_kvar",
        "voltage_v",
        "current_a",
        "energy_kwh",
    ]
    assert len(rows) == 600
    key = lambda r: (r[2], r[0], r[3])  # noqa: E731 - same meter order within a timestamp is not guaranteed
    assert sorted(rows, key=key) == sorted(expected, key=key)
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)  # one facility after the other
    assert {len(r[0]) for r in rows} == {len("2026-01-01T00:00:00.000000Z")}  # one fixed precision


async def test_1m_rollup_export_across_many_time_slices_is_complete_and_exact(settings, world, influx):
    fid = world.a.facility_ids[0]
    base = (now_ns() // (60 * SEC) - 600) * 60 * SEC
    lines = [rollup_line(fid, "1m", base + i * 60 * SEC, 10.0 + i / 8) for i in range(500)]
    await influx.write_lines(lines, retention_policy="rollups_2y")
    start = datetime.fromtimestamp(base / 1e9, UTC)
    small_pages = with_overrides(settings, api={"export_page_rows": 100})  # slices of 100 minutes
    async with running_app(small_pages) as (_, c):
        resp = await c.get(
            "/api/exports/readings.csv",
            headers=world.a.headers["analyst"],
            params={
                "facility_id": fid,
                "granularity": "1m",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=500)).isoformat(),
            },
        )
    assert resp.status_code == 200, resp.text
    header, rows = parse(resp.text)
    assert header[:7] == [
        "window_start_utc",
        "window_start_local",
        "facility_id",
        "window",
        "avg_kw",
        "min_kw",
        "max_kw",
    ]
    assert "coverage_ratio" in header
    assert len(rows) == 500
    minutes = [base + i * 60 * SEC for i in range(500)]
    assert [r[0] for r in rows] == [utc_us(t)[:19] + "Z" for t in minutes]
    assert [r[1] for r in rows] == [london(t, "%Y-%m-%dT%H:%M:%S") for t in minutes]
    assert [float(r[4]) for r in rows] == [10.0 + i / 8 for i in range(500)]
    assert {r[3] for r in rows} == {"1m"} and {r[9] for r in rows} == {"4"}


async def test_export_of_an_empty_range_has_only_the_header(client, world):
    resp = await client.get(
        "/api/exports/readings.csv",
        headers=world.a.headers["analyst"],
        params={
            "facility_id": world.a.facility_ids[0],
            "granularity": "15m",
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-02T00:00:00Z",
        },
    )
    assert resp.status_code == 200
    header, rows = parse(resp.text)
    assert header[0] == "window_start_utc" and rows == []


async def test_export_refuses_any_facility_outside_the_scope(client, world):
    resp = await client.get(
        "/api/exports/readings.csv",
        headers=world.a.headers["analyst"],
        params={
            "facility_id": [world.a.facility_ids[0], world.b.facility_ids[0]],
            "granularity": "raw",
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-02T00:00:00Z",
        },
    )
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/json")


async def insert_event(
    pg_pool,
    facilities: list[tuple[str, str, float | None, float | None, float | None]],
    state: str = "completed",
    start: datetime | None = None,
) -> uuid.UUID:
    event_id = uuid.uuid4()
    start = start or datetime(2026, 7, 1, 14, tzinfo=UTC)
    async with pg_pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, state, start_at, end_at, target_kw)
               VALUES ($1, 'util-sim', $2, $3, $4, $5, 100)""",
            event_id,
            f"evt-{event_id.hex[:12]}",
            state,
            start,
            start + timedelta(hours=2),
        )
        for fid, fstate, target, baseline, achieved in facilities:
            await conn.execute(
                """INSERT INTO dr_event_facilities
                     (dr_event_id, facility_id, state, target_kw, baseline_kw, achieved_kw)
                   VALUES ($1, $2, $3, $4, $5, $6)""",
                event_id,
                fid,
                fstate,
                target,
                baseline,
                achieved,
            )
        await conn.execute(
            """INSERT INTO dr_event_log (dr_event_id, entry_type, from_state, to_state)
               VALUES ($1, 'state_changed', 'received', 'scheduled')""",
            event_id,
        )
        for fid, fstate, *_ in facilities:
            await conn.execute(
                """INSERT INTO dr_event_log (dr_event_id, facility_id, entry_type, from_state, to_state, detail)
                   VALUES ($1, $2, 'facility_state_changed', 'pending', $3, '{"note": "x"}')""",
                event_id,
                fid,
                fstate,
            )
    return event_id


async def test_dr_report_lists_each_event_and_facility_with_target_baseline_reduction_and_status(
    client, world, pg_pool
):
    fa, fa2 = world.a.facility_ids
    fb = world.b.facility_ids[0]
    e1 = await insert_event(
        pg_pool,
        [(fa, "restored", 40.0, 300.0, 42.5), (fa2, "failed", 60.0, 200.0, None), (fb, "restored", 10.0, 50.0, 9.0)],
    )
    resp = await client.get("/api/exports/dr-events.csv", headers=world.a.headers["analyst"])
    assert resp.status_code == 200, resp.text
    header, rows = parse(resp.text)
    assert header == [
        "dr_event_id",
        "utility_id",
        "utility_event_id",
        "event_state",
        "start_utc",
        "start_local",
        "end_utc",
        "end_local",
        "facility_id",
        "facility_state",
        "target_kw",
        "baseline_kw",
        "achieved_reduction_kw",
        "achieved_pct_of_target",
    ]
    mine = [r for r in rows if r[0] == str(e1)]
    assert [(r[8], r[9], r[10], r[11], r[12], r[13]) for r in mine] == [
        (fa, "restored", "40.0", "300.0", "42.5", "106.25"),
        (fa2, "failed", "60.0", "200.0", "", ""),
    ]
    assert mine[0][4] == "2026-07-01T14:00:00Z" and mine[0][3] == "completed"
    assert mine[0][5] == "2026-07-01T15:00:00+01:00"  # London is on BST in July
    assert all(r[8] in world.a.facility_ids for r in rows)  # never the other tenant's facility
    manager = await client.get("/api/exports/dr-events.csv", headers=world.a.headers["facility_manager"])
    _, mrows = parse(manager.text)
    assert {r[8] for r in mrows if r[0] == str(e1)} == {fa}


async def test_cli_export_writes_the_same_file_as_the_api(settings, world, influx, client, tmp_path):
    import asyncio
    import os
    import sys

    fid = world.a.facility_ids[0]
    base = (now_ns() // (3600 * SEC) - 30) * 3600 * SEC
    lines = [rollup_line(fid, "1h", base + i * 3600 * SEC, 50.0 + i) for i in range(24)]
    await influx.write_lines(lines, retention_policy="rollups_2y")
    start = datetime.fromtimestamp(base / 1e9, UTC)
    end = start + timedelta(hours=24)
    via_api = await client.get(
        "/api/exports/readings.csv",
        headers=world.a.headers["analyst"],
        params={"facility_id": fid, "granularity": "1h", "start": start.isoformat(), "end": end.isoformat()},
    )
    assert via_api.status_code == 200
    target = tmp_path / "export.csv"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "energy.cli",
        "export",
        "readings",
        "--facility",
        fid,
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--granularity",
        "1h",
        "--out",
        str(target),
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert err.decode().strip().endswith(f"24 rows -> {target}")
    header, rows = parse(target.read_text())
    assert (header, rows) == parse(via_api.text)
    assert [float(r[4]) for r in rows] == [50.0 + i for i in range(24)]
