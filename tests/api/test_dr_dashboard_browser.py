"""What DR did, on the dashboard, in headless Chromium against a live uvicorn and real PostgreSQL and
InfluxDB: the facility page shades the event window over the load chart, draws the settlement's
baseline, metered load and target, shows the performance figure, labels times with the facility's
zone (UTC on hover), groups the timeline per facility; the fleet page lists the event with its
shed vs target. No request leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest

from api.app import create_app
from dr_coordinator.adapters import settlement_store
from dr_coordinator.domain.interval_baselines import Adjustment, Baseline, Method, event_intervals
from dr_coordinator.domain.settlement import RunKind, settle
from energy.observability.http import serve_app
from tests.api.conftest import PASSWORD, rollup_line, wait_until_serving
from tests.api.test_dashboard_browser import ARTIFACTS
from tests.api.test_exports import insert_event

pytestmark = pytest.mark.browser

LA = ZoneInfo("America/Los_Angeles")  # not the browser's zone (UTC here), so a wrong zone shows
MIN = timedelta(minutes=1)
BASELINE = (300.0, 280.0)  # kW per event hour
METERED = (270.0, 250.0)
TARGET_KW = 40.0

# Pixels of the canvas column at x (in data units) painted in the shading's orange tint.
SHADED_PIXELS = """([x]) => {
  const c = document.getElementById('load-chart'); const ch = Chart.getChart(c); const a = ch.chartArea;
  const px = Math.round(ch.scales.x.getPixelForValue(x) * c.width / c.clientWidth);
  const top = Math.round(a.top * c.height / c.clientHeight), bottom = Math.round(a.bottom * c.height / c.clientHeight);
  const d = c.getContext('2d').getImageData(px, top, 1, bottom - top).data; let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (d[i] > 200 && d[i + 1] > 100 && d[i + 1] < 200 && d[i + 2] < 80 && d[i + 3] > 0) n++;
  return n; }"""


def offset_label(ts: datetime) -> str:
    off = ts.astimezone(LA).utcoffset()
    assert off is not None
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


async def seed(world, influx, pg_pool) -> tuple[str, datetime, datetime]:
    fid = world.a.facility_ids[0]
    async with pg_pool.acquire() as conn:
        await conn.execute("UPDATE facilities SET timezone = 'America/Los_Angeles' WHERE facility_id = $1", fid)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now.replace(minute=0) - timedelta(hours=3)
    end = start + timedelta(hours=2)
    # 1-minute load over the last 6 h: 300 kW, lower during the event's two hours
    lines = []
    for k in range(360):
        t = now - (360 - k) * MIN
        kw = METERED[int((t - start) / timedelta(hours=1))] if start <= t < end else 300.0
        lines.append(rollup_line(fid, "1m", int(t.timestamp()) * 10**9, kw))
    await influx.write_lines(lines, retention_policy="rollups_2y")
    eid = await insert_event(pg_pool, [(fid, "restored", TARGET_KW, 290.0, None)], "completed", start)
    ivs = event_intervals(start, end, LA, 60)
    base = Baseline(Method.CAISO_10IN10, ivs, BASELINE, BASELINE, Adjustment.NONE, 1.0, False, ())
    quarter_hours = {start + timedelta(minutes=15 * q): METERED[q // 4] for q in range(8)}
    result = settle(base, quarter_hours, target_kw=TARGET_KW)
    async with pg_pool.acquire() as conn, conn.transaction():
        await settlement_store.write_run(conn, eid, fid, RunKind.SETTLEMENT, result, base, True, TARGET_KW, end)
    return fid, start, end


async def test_facility_and_fleet_pages_show_what_the_dr_event_did(
    settings, world, influx, pg_pool, port, stack, browser
):
    fid, start, end = await seed(world, influx, pg_pool)
    # worked by hand: hour 1 sheds 300 - 270 = 30 kW, hour 2 sheds 280 - 250 = 30 kW; 30 of 40 kW = 75 %
    shed_kw = ((BASELINE[0] - METERED[0]) + (BASELINE[1] - METERED[1])) / 2
    performance = 100.0 * shed_kw / TARGET_KW
    local_start = start.astimezone(LA).strftime("%Y-%m-%d %H:%M")

    app = create_app(settings)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop))
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        await wait_until_serving(app, port)
        page = await browser.new_page(viewport={"width": 1280, "height": 1300})
        errors: list[str] = []
        requested: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requested.append(r.url))
        await page.goto(f"{base}/dashboard/facility?id={fid}")
        await page.fill("#email", world.a.emails["analyst"])
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await page.wait_for_function(
            "() => document.getElementById('load-chart')?.dataset.settledEvents === '1'"
            " && Number(document.getElementById('load-chart')?.dataset.points || 0) >= 300",
            timeout=20_000,
        )

        perf = await page.locator("#dr-performance").inner_text()
        assert f"{performance:.1f} %" in perf
        assert f"shed {shed_kw:.1f} kW of {TARGET_KW:.1f} kW target" in perf

        series = await page.evaluate(
            "() => Chart.getChart(document.getElementById('load-chart')).data.datasets"
            ".map((d) => ({ label: d.label, ys: d.data.map((p) => p.y).filter((y) => y !== null) }))"
        )
        by_label = {s["label"].split(" (")[0]: s["ys"] for s in series}
        # one point per interval start and one at the event's end (step lines)
        assert by_label["DR baseline"] == [BASELINE[0], BASELINE[1], BASELINE[1]]
        assert by_label["DR metered load"] == [METERED[0], METERED[1], METERED[1]]
        targets = [b - TARGET_KW for b in BASELINE]
        assert by_label["DR target load: baseline − target"] == [targets[0], targets[1], targets[1]]

        # columns off the hourly grid lines, inside and outside the event
        middle_ms = (start + timedelta(minutes=37)).timestamp() * 1000
        outside_ms = (start - timedelta(minutes=23)).timestamp() * 1000
        assert await page.evaluate(SHADED_PIXELS, [middle_ms]) > 50, "the event window is shaded"
        assert await page.evaluate(SHADED_PIXELS, [outside_ms]) == 0, "nothing shaded outside the event"

        zone_label = (await page.locator("#zone-label").inner_text()).replace("\u2212", "-")
        assert zone_label == f"America/Los_Angeles ({offset_label(datetime.now(UTC))})"
        event_line = page.locator("#dr-timeline li.event")
        # the end shows its date only when the event crosses local midnight
        same_day = start.astimezone(LA).date() == end.astimezone(LA).date()
        local_end = end.astimezone(LA).strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")
        assert f"{local_start} – {local_end}" in await event_line.inner_text()
        first_time = event_line.locator("time").first
        assert await first_time.get_attribute("title") == start.strftime("%Y-%m-%d %H:%M UTC")
        # the timeline: one line for the event's own entries, one per facility
        groups = page.locator("#dr-timeline li.group")
        assert await groups.count() == 2
        assert "scheduled" in await groups.nth(0).inner_text()
        facility_line = await page.locator(f'#dr-timeline li.group[data-facility="{fid}"]').inner_text()
        assert "restored" in facility_line
        await page.screenshot(path=str(ARTIFACTS / "dashboard-facility-dr-event.png"), full_page=True)

        await page.goto(f"{base}/dashboard")
        row = page.locator(f'#dr-events tr[data-dr-facility="{fid}"]')
        await row.wait_for(timeout=15_000)
        assert f"{shed_kw:.1f} kW" in await row.locator("td.shed").inner_text()
        assert f"{performance:.1f} %" in await row.locator("td.performance").inner_text()
        assert local_start in await row.inner_text()
        await page.screenshot(path=str(ARTIFACTS / "dashboard-fleet-dr-events.png"), full_page=True)

        assert requested, "the pages made requests"
        elsewhere = [u for u in requested if urlparse(u).scheme not in ("data", "blob")]
        assert {urlparse(u).hostname for u in elsewhere} == {"127.0.0.1"}, elsewhere
        assert errors == []
    finally:
        stop.set()
        await server
