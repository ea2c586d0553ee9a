"""The local Prometheus: it scrapes our processes, evaluates the project's own alert rules, and an
alert raised by a real outage links a runbook that resolves.

A private InfluxDB is stopped under a live API; the DependencyDown rule of
deploy/prometheus/alerts.yml must go pending for (service=api, dependency=influxdb) and for no other
dependency, and its runbook link must answer with the runbook's text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from api.app import create_app
from energy.observability.http import serve_app
from energy.stack import InfluxServer
from energy.stack.process import free_port
from energy.stack.servers import PrometheusServer
from energy.stack.stack import ALERT_RULES, scrape_targets
from tests.api.conftest import with_overrides
from tests.waiting import wait_until

ROOT_RUNBOOKS = ALERT_RULES.parents[2] / "docs" / "runbooks"


async def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """``condition`` (blocking HTTP to Prometheus) off the event loop, until it holds."""
    return await wait_until(lambda: asyncio.to_thread(condition), timeout_s=timeout_s, what=what, interval_s=0.5)


def dependency_alerts(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == "DependencyDown"]


async def test_stopping_influxdb_raises_dependency_down_with_a_runbook_that_resolves(
    settings, stack, private_server
) -> None:
    influx = private_server(InfluxServer)
    api_port = free_port()
    s = with_overrides(settings, influx={"url": f"http://127.0.0.1:{influx.port}"})
    app = create_app(s)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", api_port, stop))
    base = f"http://127.0.0.1:{api_port}/runbooks"
    prometheus = private_server(
        PrometheusServer,
        targets=(("energy-api", f"127.0.0.1:{api_port}"),),
        rule_files=(ALERT_RULES,),
        scrape_interval_s=1.0,
        evaluation_interval_s=1.0,
        runbook_base=base,
    )
    try:
        await wait_for(lambda: prometheus.targets_health().get("energy-api") == "up", 60, "the API target up")
        assert dependency_alerts(prometheus) == [], "no dependency is down yet"

        influx.stop()
        alerts = await wait_for(lambda: dependency_alerts(prometheus), 60, "DependencyDown to go pending")
        assert {(a["labels"]["service"], a["labels"]["dependency"]) for a in alerts} == {("api", "influxdb")}
        alert = alerts[0]
        assert alert["state"] in {"pending", "firing"}
        assert alert["labels"]["severity"] == "critical"
        url = alert["annotations"]["runbook_url"]
        assert url == f"{base}/dependency-down.md"
        async with httpx.AsyncClient(timeout=5) as http:  # the API runs on this event loop: never block it
            served = await http.get(url)
        assert served.status_code == 200
        assert served.text == (ROOT_RUNBOOKS / "dependency-down.md").read_text()
    finally:
        stop.set()
        await server


def test_the_stack_scrapes_every_process_that_serves_metrics(settings) -> None:
    from energy.runner import PROCESSES

    targets = dict(scrape_targets(settings))
    with_metrics = {f"energy-{p.name}" for p in PROCESSES if p.metrics}
    assert set(targets) == with_metrics
    assert {"energy-api", "energy-ingestion", "energy-aggregation", "energy-forecast", "energy-dr-coordinator"} <= set(
        targets
    )
    assert targets["energy-api"] == f"127.0.0.1:{settings.endpoints.api_port}"


def test_runbook_route_refuses_names_outside_the_runbooks(settings) -> None:
    async def check() -> None:
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as c:
            assert (await c.get("/runbooks/service-down.md")).status_code == 200
            for name in ("..%2FREADME.md", "README.md", "nope.md", "service-down.txt"):
                assert (await c.get(f"/runbooks/{name}")).status_code == 404, name

    asyncio.run(check())
