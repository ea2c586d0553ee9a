"""Issue 15's evidence, in headless Chromium on a freshly started whole system.

Started as ``make run`` starts it (``energy db migrate``, ``energy seed --history-days``, ``energy run``:
the same entrypoint), on this test's own PostgreSQL and Redis servers, InfluxDB database, MQTT prefix,
Kafka topics and ports, with a small fleet (3 facilities of 2 meters, 20 days of history). Then:
- the fleet page shows a current load for every facility the analyst sees;
- a facility page shows >= 14 days of history on the range selector, and a forecast whose P50 varies over
  the day with a flag that says which model served (the same as the API's latest run);
- ``energy dr demo`` (the simulated utility's real VTN path): the facility page then shades the event and
  draws baseline, metered load and target, with a performance figure;
- ``/docs`` renders;
- no request of any page leaves 127.0.0.1; the background training of the first model is reported by
  ``energy status``; it trains on the history with the retrain command and the forecast then serves what is
  CURRENT (or seasonal naive, flagged); ``energy stop`` leaves no process behind.
Screenshots: test-artifacts/system-*.png. Takes ~3-3.5 min (most of it starting the processes, the demo
event's own minute and the settlement after it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from energy.first_model import trained_on_history
from energy.runner import FIRST_MODEL, PROCESSES
from energy.stack.process import free_port, pid_alive, read_pid
from energy.stack.servers import PostgresServer, RedisServer
from energy.stack.topics import ensure_topics_async
from tests.aggregation.conftest import create_influx_db, influx_admin
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(480)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FACILITIES, METERS, HISTORY_DAYS = 3, 2, 20
ANALYST = ("analyst@tenant-a.example", "analyst-tenant-a-dev-password")  # seeded (decision 0501)
TENANT_A = ["fac-001", "fac-003"]  # build_fleet alternates tenants: 1 and 3 are tenant-a's
SERVED_BY = {  # the dashboard's wording per forecast method (decision 0951), written out here
    "seasonal_naive_backtest": "seasonal naive (it beat the model in this facility's backtest)",
    "seasonal_naive_no_model": "seasonal naive (no model for this meter interval)",
    "seasonal_naive_sparse_data": "seasonal naive (too few recent readings for the model)",
    "insufficient_history": "seasonal naive (too little history)",
}
T0 = time.monotonic()


def step(what: str) -> None:
    print(f"{time.monotonic() - T0:7.1f}s {what}", flush=True)


def energy(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "energy.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


async def test_a_fresh_system_shows_history_a_real_forecast_and_what_the_demo_event_did(
    stack, settings, private_server, uid, tmp_path, browser
) -> None:
    global T0
    T0 = time.monotonic()
    pg, redis = private_server(PostgresServer), private_server(RedisServer)
    db, topic = f"fresh_{uid}", f"fresh-readings-{uid}"
    create_influx_db(settings.influx.url, db)
    await ensure_topics_async(settings.kafka.bootstrap_servers, {topic: 6, f"{topic}-dlq": 1, f"{topic}-late": 1})
    ports = {spec.port_field: free_port() for spec in PROCESSES}
    env = {
        **os.environ,
        "ENERGY_STACK__DATA_DIR": str(tmp_path / "stack"),
        "ENERGY_POSTGRES__PORT": str(pg.port),
        "ENERGY_POSTGRES__COMMAND_TIMEOUT_S": "15",  # nine processes start at once on a loaded machine
        "ENERGY_REDIS__PORT": str(redis.port),
        "ENERGY_INFLUX__DATABASE": db,
        "ENERGY_SEED__FACILITIES": str(FACILITIES),
        "ENERGY_SEED__METERS_PER_FACILITY": str(METERS),
        "ENERGY_MQTT__TOPIC_PREFIX": f"fresh-{uid}",
        "ENERGY_INGESTION__MQTT_CLIENT_ID": f"fresh-ingestion-{uid}",
        "ENERGY_INGESTION__MQTT_SHARED_GROUP": f"fresh{uid}",
        "ENERGY_INGESTION__READINGS_TOPIC": topic,
        "ENERGY_INGESTION__DLQ_TOPIC": f"{topic}-dlq",
        "ENERGY_AGGREGATION__READINGS_TOPIC": topic,
        "ENERGY_AGGREGATION__DLQ_TOPIC": f"{topic}-dlq",
        "ENERGY_AGGREGATION__LATE_WINDOWS_TOPIC": f"{topic}-late",
        "ENERGY_AGGREGATION__CONSUMER_GROUP": f"fresh-agg-{uid}",
        "ENERGY_AGGREGATION__ARCHIVE_GROUP": f"fresh-archive-{uid}",
        "ENERGY_AGGREGATION__ARCHIVE_URI": str(tmp_path / "archive"),
        "ENERGY_DR__LATE_WINDOWS_TOPIC": f"{topic}-late",
        "ENERGY_DR__LATE_WINDOWS_GROUP": f"fresh-dr-{uid}",
        **{f"ENERGY_ENDPOINTS__{field.upper()}": str(port) for field, port in ports.items()},
    }
    env.pop("ENERGY_FORECAST__MODEL_DIR", None)  # as on a newcomer's machine: energy run chooses the folder
    env["ENERGY_FORECAST__WEATHER_PRIMARY_URL"] = f"http://127.0.0.1:{ports['weather_sim_port']}/weatherapi"
    env["ENERGY_FORECAST__WEATHER_SECONDARY_URL"] = f"http://127.0.0.1:{ports['weather_sim_port']}/openmeteo"
    (tmp_path / "stack").mkdir()
    run_dir = tmp_path / "stack" / "run"
    api = f"http://127.0.0.1:{ports['api_port']}"
    ARTIFACTS.mkdir(exist_ok=True)
    pids: list[int | None] = []
    try:
        for args in (("db", "migrate"), ("seed", "--history-days", str(HISTORY_DAYS)), ("run",)):
            done = energy(env, *args)
            assert done.returncode == 0, f"energy {' '.join(args)}: {done.stdout}{done.stderr}"
            step(f"energy {' '.join(args)}")
        assert "NOT ANSWERING" not in done.stdout
        assert "first model on the seeded history: started in the background" in done.stdout

        # The demo event first (the simulated utility, through its real VTN), so its minute runs while the
        # pages are checked; a kW target makes the performance figure a ratio.
        demo = energy(env, "dr", "demo", "--facility", "fac-001", "--in", "15s", "--for", "1m", "--shed-kw", "10")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "the platform took it as DR event" in demo.stdout
        step("demo event taken")

        async with httpx.AsyncClient(base_url=api, headers={"X-Api-Key": "dev-key-tenant-a-analyst"}) as client:
            latest_run = await wait_until(
                lambda: _latest_run(client, "fac-001"), timeout_s=120, what="a forecast run for fac-001", interval_s=1.0
            )
            assert latest_run["method"] != "insufficient_history", "the seeded history feeds the first forecast"
            step(f"forecast run: {latest_run['method']} {latest_run['model_version']}")

            page = await browser.new_page(viewport={"width": 1280, "height": 1300})
            hosts: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: hosts.append(urlparse(r.url).hostname or r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))

            # --- the fleet: a current load for every facility ------------------------------------
            await page.goto(f"{api}/dashboard")
            await page.fill("#email", ANALYST[0])
            await page.fill("#password", ANALYST[1])
            await page.click("#sign-in")
            for fid in TENANT_A:
                await page.locator(f'tr[data-facility="{fid}"]').wait_for(timeout=30_000)
            assert await page.locator("#fleet tbody tr").count() == len(TENANT_A)

            async def every_facility_has_load() -> bool:
                texts = [await page.locator(f'tr[data-facility="{f}"] td.current').inner_text() for f in TENANT_A]
                if all(re.fullmatch(r"\d[\d,]*\.\d kW", t.strip()) for t in texts):
                    return True
                await page.reload()
                await page.locator(f'tr[data-facility="{TENANT_A[-1]}"]').wait_for(timeout=30_000)
                return False

            await wait_until(
                every_facility_has_load, timeout_s=120, what="a current load on every fleet row", interval_s=3
            )
            await page.screenshot(path=str(ARTIFACTS / "system-fleet.png"), full_page=True)
            step("fleet page")

            # --- a facility: 14 days of history, a forecast that follows the day ------------------
            await page.goto(f"{api}/dashboard/facility?id=fac-001")
            await page.wait_for_function(
                "() => Number(document.getElementById('load-chart')?.dataset.forecastPoints || 0) >= 90",
                timeout=30_000,
            )
            await page.select_option("#range", "336")
            assert await page.locator("#granularity").input_value() == "1h"
            await page.wait_for_function(
                "() => Number(document.getElementById('load-chart')?.dataset.points || 0) >= 320",
                timeout=30_000,
            )
            span = await page.evaluate(
                "() => { const ch = Chart.getChart(document.getElementById('load-chart'));"
                " const xs = ch.data.datasets[0].data.map((p) => p.x);"
                " return { first: Math.min(...xs), min: ch.options.scales.x.min, n: xs.length }; }"
            )
            # 14 days of hours (336) less a few for the hour between history and live data
            assert span["n"] >= 330 and span["first"] - span["min"] <= 2 * 3600 * 1000, span
            p50 = await page.evaluate(
                "() => Chart.getChart(document.getElementById('load-chart')).data.datasets[3].data.map((p) => p.y)"
            )
            assert len(p50) >= 90
            day = p50[:96]
            mean = sum(day) / len(day)
            assert (max(day) - min(day)) / mean > 0.2, f"the P50 is flat over the day: {day}"
            latest_run = (await client.get("/api/facilities/fac-001/forecast")).json()["latest_run"]
            served = (
                f"model {latest_run['model_version']}"
                if latest_run["method"] == "model"
                else SERVED_BY[latest_run["method"]]
            )
            flag = page.locator("#forecast-quality")
            await page.reload()  # the flag of the run the API just answered (the page reads it at load)
            await page.wait_for_function(
                f"() => document.getElementById('forecast-quality').dataset.modelVersion === "
                f"'{latest_run['model_version']}'",
                timeout=30_000,
            )
            text = (await flag.inner_text()).splitlines()[0]
            assert text == f"{latest_run['quality'].replace('_', ' ')} · {served}", text
            await page.screenshot(path=str(ARTIFACTS / "system-facility-history.png"), full_page=True)
            step(f"facility page: {text}")

            # --- what the demo event did ---------------------------------------------------------
            async def settled_on_page() -> bool:
                await page.reload()
                try:
                    await page.wait_for_function(
                        "() => document.getElementById('load-chart')?.dataset.settledEvents === '1'",
                        timeout=5_000,
                    )
                except Exception:
                    return False
                return True

            await wait_until(
                settled_on_page, timeout_s=240, what="the demo event settled on the facility page", interval_s=5
            )
            series = await page.evaluate(
                "() => Chart.getChart(document.getElementById('load-chart')).data.datasets"
                ".map((d) => ({ label: d.label, n: d.data.filter((p) => p.y !== null).length }))"
            )
            drawn = {s["label"].split(" (")[0]: s["n"] for s in series}
            for label in ("DR baseline", "DR metered load", "DR target load: baseline − target"):
                assert drawn[label] >= 2, (label, drawn)
            perf = (await page.locator("#dr-performance").inner_text()).splitlines()
            assert re.fullmatch(r"-?\d+(\.\d)? %", perf[0].strip()), perf
            assert re.search(r"shed -?\d+\.\d kW of 10\.0 kW target", perf[1]), perf
            assert int(await page.locator("#load-chart").get_attribute("data-events") or 0) == 1
            await page.select_option("#range", "6")
            await page.screenshot(path=str(ARTIFACTS / "system-facility-dr-event.png"), full_page=True)
            step(f"demo event on the page: {' / '.join(perf)}")

            # --- offline API docs ----------------------------------------------------------------
            await page.goto(f"{api}/docs")
            await page.locator(".swagger-ui .info .title").wait_for(timeout=30_000)
            assert await page.locator(".opblock").count() > 10
            await page.screenshot(path=str(ARTIFACTS / "system-api-docs.png"))
            assert set(hosts) == {"127.0.0.1"}, f"requests left the host: {sorted(set(hosts))}"
            assert errors == []
        status = energy(env, "status")
        assert re.search(rf"^{FIRST_MODEL}\s+(training|finished): ", status.stdout, re.M), status.stdout

        # The first model (usually done by now): trained on the history by the retrain command, promoted only
        # if it backtests better, then a forecast run serves what is CURRENT (or seasonal naive, flagged).
        async def job_finished() -> bool:
            return not pid_alive(read_pid(run_dir / f"{FIRST_MODEL}.pid"))

        await wait_until(job_finished, timeout_s=180, what="the first model's training", interval_s=1.0)
        job_log = (run_dir / f"{FIRST_MODEL}.log").read_text(errors="replace")
        assert "first model: forecast run done" in job_log, job_log[-3000:]
        models = tmp_path / "stack" / "models"
        trained = trained_on_history(models, "platform")
        assert trained is not None, "a version trained on this stack's rollups"
        current = "platform-" + (models / "platform" / "CURRENT").read_text().strip()
        assert ("first model: the new version is CURRENT" in job_log) == (current == trained)
        async with httpx.AsyncClient(base_url=api, headers={"X-Api-Key": "dev-key-tenant-a-analyst"}) as client:
            latest = await _latest_run(client, "fac-001")
        assert latest is not None
        assert latest["model_version"] == (current if latest["method"] == "model" else "seasonal-naive-v1"), latest
        step(f"first model: {trained}, CURRENT {current}, served {latest['method']} {latest['model_version']}")
    finally:
        pids = [read_pid(run_dir / f"{name}.pid") for name in [*(s.name for s in PROCESSES), FIRST_MODEL]]
        stopped = energy(env, "stop", timeout=240)
        influx_admin(settings.influx.url, f'DROP DATABASE "{db}"')
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in pids), "energy stop left a process behind"
    step("stopped")


async def _latest_run(client: httpx.AsyncClient, facility_id: str) -> dict[str, Any] | None:
    r = await client.get(f"/api/facilities/{facility_id}/forecast")
    return r.json().get("latest_run") if r.status_code == 200 else None
