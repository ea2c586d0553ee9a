"""The DR event page in headless Chromium against a live uvicorn: baseline, metered load and target
over the event on one chart, with the performance figure of the latest settlement version."""

from __future__ import annotations

import asyncio

import pytest

from api.app import create_app
from energy.observability.http import serve_app
from tests.api.conftest import PASSWORD, wait_until_serving
from tests.api.test_dashboard_browser import ARTIFACTS
from tests.api.test_dr_settlement import write
from tests.api.test_exports import insert_event

pytestmark = pytest.mark.browser


async def test_dr_event_page_charts_baseline_load_and_target_with_performance(
    settings, world, pg_pool, port, stack, browser
):
    from dr_coordinator.domain.settlement import RunKind

    fid = world.a.facility_ids[0]
    eid = await insert_event(pg_pool, [(fid, "restored", 40.0, 290.0, None)])
    # baseline 300 / 280 kW per hour; metered 270 then 250 kW: 30 kW reduction of 40 kW = 75 %
    await write(pg_pool, eid, fid, RunKind.SETTLEMENT, [270.0] * 4 + [250.0] * 4)
    app = create_app(settings)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop))
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await wait_until_serving(app, port)
        await page.goto(f"{base}/dashboard/dr-event?id={eid}&facility={fid}")
        await page.fill("#email", world.a.emails["analyst"])
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await page.wait_for_function(
            "() => document.getElementById('event-chart').dataset.intervals === '2'", timeout=20_000
        )
        assert "75.0 %" in await page.locator("#performance").inner_text()
        assert "30.0 kW" in await page.locator("#reduction").inner_text()
        assert "1 (settlement)" in await page.locator("#run").inner_text()
        drawn = await page.evaluate(
            "() => { const c = document.getElementById('event-chart'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"
        )
        assert drawn > 2000, "the chart canvas has pixels drawn"
        await page.screenshot(path=str(ARTIFACTS / "dashboard-dr-event.png"), full_page=True)
        assert errors == []
    finally:
        stop.set()
        await server
