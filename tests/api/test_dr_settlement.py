"""Settlement outputs: JSON per event (latest or a given version), CSV per event and per period with
local and UTC columns, scope of the caller's facilities, and the dashboard page."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dr_coordinator.adapters import settlement_store
from dr_coordinator.domain.interval_baselines import Adjustment, Baseline, Method, event_intervals
from dr_coordinator.domain.settlement import RunKind, settle
from tests.api.test_exports import insert_event

LONDON = ZoneInfo("Europe/London")  # the test tenants' facilities; BST (UTC+1) in July
START = datetime(2026, 7, 1, 14, tzinfo=UTC)  # insert_event's default: 15:00-17:00 London time


def readings(kw: list[float]) -> dict[datetime, float]:
    """15-minute readings from START, one per quarter."""
    return {START + timedelta(minutes=15 * k): v for k, v in enumerate(kw)}


async def write(pg_pool, event_id: uuid.UUID, fid: str, kind: RunKind, metered: list[float]) -> None:
    ivs = event_intervals(START, START + timedelta(hours=2), LONDON, 60)
    b = Baseline(Method.CAISO_10IN10, ivs, (300.0, 280.0), (300.0, 280.0), Adjustment.NONE, 1.0, False, ())
    s = settle(b, readings(metered), target_kw=40.0)
    async with pg_pool.acquire() as conn, conn.transaction():
        await settlement_store.write_run(conn, event_id, fid, kind, s, b, True, 40.0, START + timedelta(hours=3))


def parse(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


async def test_settlement_json_csv_and_scope(client, world, pg_pool):
    fa = world.a.facility_ids[0]
    fb = world.b.facility_ids[0]
    eid = await insert_event(pg_pool, [(fa, "restored", 40.0, 290.0, None), (fb, "restored", 10.0, 50.0, None)])
    # preliminary: the second hour has only half its readings; the true-up has them all
    await write(pg_pool, eid, fa, RunKind.PRELIMINARY, [260.0, 260.0, 260.0, 260.0, 250.0, 250.0])
    await write(pg_pool, eid, fa, RunKind.TRUE_UP, [260.0, 260.0, 260.0, 260.0, 250.0, 250.0, 230.0, 230.0])
    await write(pg_pool, eid, fb, RunKind.PRELIMINARY, [1.0] * 8)
    h = world.a.headers["analyst"]

    resp = await client.get(f"/api/dr-events/{eid}/settlement", headers=h)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [f["facility_id"] for f in body["facilities"]] == [fa]  # never the other tenant's facility
    f = body["facilities"][0]
    assert (f["version"], f["kind"], f["versions"]) == (2, "true_up", 2)
    # hour 1: 300 - 260 = 40 kW (100 %); hour 2: 280 - 240 = 40 kW; 80 kWh over two hours
    assert [i["reduction_kw"] for i in f["intervals"]] == [40.0, 40.0]
    assert [i["performance_pct"] for i in f["intervals"]] == [100.0, 100.0]
    assert f["reduction_kwh"] == 80.0 and f["coverage_pct"] == 100.0
    assert [i["local_start"] for i in f["intervals"]] == ["2026-07-01T15:00:00+01:00", "2026-07-01T16:00:00+01:00"]

    first = (await client.get(f"/api/dr-events/{eid}/settlement", headers=h, params={"version": 1})).json()
    f1 = first["facilities"][0]
    assert f1["kind"] == "preliminary" and f1["coverage_pct"] == 75.0
    assert [i["coverage_pct"] for i in f1["intervals"]] == [100.0, 50.0]
    assert f1["intervals"][1]["metered_kw"] == 250.0 and f1["intervals"][1]["reduction_kw"] == 30.0

    assert (await client.get(f"/api/dr-events/{uuid.uuid4()}/settlement", headers=h)).status_code == 404
    assert (await client.get(f"/api/dr-events/{eid}/settlement", headers=h, params={"version": 0})).status_code == 422

    csv_resp = await client.get("/api/exports/dr-settlement.csv", headers=h, params={"dr_event_id": str(eid)})
    assert csv_resp.status_code == 200, csv_resp.text
    header, rows = parse(csv_resp.text)
    assert header[9:19] == [
        "interval_start_utc",
        "interval_end_utc",
        "interval_start_local",
        "baseline_kw",
        "metered_kw",
        "reduction_kw",
        "target_kw",
        "performance_pct",
        "coverage_pct",
        "reduction_kwh",
    ]
    assert [(r[2], r[4], r[5]) for r in rows] == [(fa, "2", "true_up")] * 2
    assert [(r[9], r[11], r[14], r[18]) for r in rows] == [
        ("2026-07-01T14:00:00Z", "2026-07-01T15:00:00+01:00", "40.0", "40.0"),
        ("2026-07-01T15:00:00Z", "2026-07-01T16:00:00+01:00", "40.0", "40.0"),
    ]
    assert rows[0][3] == "Europe/London"

    period = await client.get(
        "/api/exports/dr-settlement.csv",
        headers=h,
        params={"start_after": "2026-07-01T00:00:00Z", "start_before": "2026-07-02T00:00:00Z"},
    )
    assert period.status_code == 200
    _, prow = parse(period.text)
    assert [(r[0], r[2], r[9]) for r in prow] == [
        (str(eid), fa, "2026-07-01T14:00:00Z"),
        (str(eid), fa, "2026-07-01T15:00:00Z"),
    ]
    empty = await client.get(
        "/api/exports/dr-settlement.csv",
        headers=h,
        params={"start_after": "2026-08-01T00:00:00Z", "start_before": "2026-08-02T00:00:00Z"},
    )
    assert empty.status_code == 200 and parse(empty.text)[1] == []  # this test's tenant has no August event

    bad = await client.get("/api/exports/dr-settlement.csv", headers=h)
    assert bad.status_code == 422 and "dr_event_id" in bad.json()["error"]["message"]
    both = await client.get(
        "/api/exports/dr-settlement.csv",
        headers=h,
        params={"dr_event_id": str(eid), "start_after": "2026-07-01T00:00:00Z"},
    )
    assert both.status_code == 422
    other = await client.get(
        "/api/exports/dr-settlement.csv", headers=h, params={"facility_id": fb, "dr_event_id": str(eid)}
    )
    assert other.status_code in (403, 404)


async def test_dr_event_dashboard_page_is_served(client):
    resp = await client.get("/dashboard/dr-event")
    assert resp.status_code == 200 and "event-chart" in resp.text
