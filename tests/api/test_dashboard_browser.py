"""The dashboard in headless Chromium against a live uvicorn: sign in, fleet overview with the
current load, facility page whose chart renders load and forecast, DR timeline, CSV download."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import pytest

from api.app import create_app
from energy.observability.http import serve_app
from tests.api.conftest import PASSWORD, now_ns, reading_lines, rollup_line, wait_until_serving
from tests.api.test_exports import insert_event
from tests.api.test_forecasts_and_dr_events import insert_forecast

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MIN = 60 * 10**9


async def seed_facility(world, influx, pg_pool) -> str:
    fid = world.a.facility_ids[0]
    now = now_ns()
    start = (now // MIN - 360) * MIN
    lines = []
    for i in range(360):
        kw = 200 + 80 * ((i % 120) / 120)
        lines.append(rollup_line(fid, "1m", start + i * MIN, round(kw, 2)))
    await influx.write_lines(lines, retention_policy="rollups_2y")
    await influx.write_lines([reading_lines(fid, m, now - 30 * 10**9, 131.5) for m in world.a.meter_ids[fid]])
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await insert_forecast(pg_pool, fid, hour, 250.0, hours=24)
    await insert_event(
        pg_pool, [(fid, "active", 40.0, 280.0, None)], "active", datetime.now(UTC) - timedelta(minutes=30)
    )
    return fid


async def test_dashboard_renders_live_chart_with_forecast_and_downloads_csv(
    settings, world, influx, pg_pool, port, stack, browser
):
    fid = await seed_facility(world, influx, pg_pool)
    app = create_app(settings)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop))
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        await wait_until_serving(app, port)
        page = await browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}/dashboard")
        await page.fill("#email", world.a.emails["facility_manager"])
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        row = page.locator(f'tr[data-facility="{fid}"]')
        await row.wait_for(timeout=15_000)
        assert "263.0 kW" in await row.locator("td.current").inner_text()  # 2 meters x 131.5 kW
        assert await page.locator("#fleet tbody tr").count() == 1  # the manager sees one facility
        await page.screenshot(path=str(ARTIFACTS / "dashboard-fleet.png"), full_page=True)

        await row.locator("a").click()
        await page.wait_for_url(lambda url: "/dashboard/facility" in url)  # not the fleet page still
        chart = page.locator("#load-chart")
        await page.wait_for_function(
            "() => Number(document.getElementById('load-chart')?.dataset.points || 0) > 300"
            " && Number(document.getElementById('load-chart')?.dataset.forecastPoints || 0) >= 20",
            timeout=20_000,
        )
        points = int(await chart.get_attribute("data-points") or 0)
        assert 300 <= points <= 361
        drawn = await page.evaluate(
            "() => { const c = document.getElementById('load-chart'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"
        )
        assert drawn > 5000, "the chart canvas has pixels drawn"
        await page.locator("#dr-timeline li.event").first.wait_for(timeout=10_000)
        assert "active" in await page.locator("#dr-timeline").inner_text()
        assert "full" in await page.locator("#forecast-quality").inner_text()
        await page.screenshot(path=str(ARTIFACTS / "dashboard-facility.png"), full_page=True)

        # the export is of the range and granularity chosen on the page: 24 h at 1 minute
        await page.select_option("#range", "24")
        await page.select_option("#granularity", "1m")
        async with (
            page.expect_request(lambda r: "/api/exports/readings.csv" in r.url) as export_request,
            page.expect_download(timeout=20_000) as download_info,
        ):
            await page.click("#export-range")
        query = parse_qs(urlparse((await export_request.value).url).query)
        assert query["granularity"] == ["1m"]
        span = datetime.fromisoformat(query["end"][0]) - datetime.fromisoformat(query["start"][0])
        assert span == timedelta(hours=24)
        download = await download_info.value
        target = ARTIFACTS / "dashboard-export-1m.csv"
        await download.save_as(str(target))
        rows = list(csv.reader(io.StringIO(target.read_text())))
        assert rows[0][:5] == ["window_start_utc", "window_start_local", "facility_id", "window", "avg_kw"]
        assert len(rows) - 1 == 360 and {r[2] for r in rows[1:]} == {fid}
        # the local column is the UTC instant in the facility's zone (Europe/London), with its offset
        first_utc = datetime.fromisoformat(rows[1][0].replace("Z", "+00:00"))
        assert rows[1][1] == first_utc.astimezone(ZoneInfo("Europe/London")).isoformat()
        assert errors == []
    finally:
        stop.set()
        await server
