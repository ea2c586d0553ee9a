"""`energy deploy rehearse` for real: every container of the production overlay started under
its pod's constraints (read-only root, volumes, uid 10001, no capabilities) against the local
stack, ready by its own readiness probe, stopped by preStop + SIGTERM within its grace period
with exit status 0 -- and the aggregation worker's shutdown commit proven by offsets that were
not committed before SIGTERM. With the Faust datadir fix undone the rehearsal names the
aggregation container and the read-only path."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from energy.deploy.manifest import POD_IP
from energy.deploy.rehearse import Report, rehearse
from energy.settings import Settings
from energy.stack import Stack
from energy.stack.topics import ensure_topics_async
from tests.aggregation.helpers import committed_total, make_readings, now_utc, produce
from tests.waiting import wait_until_sync

EXPECTED_CONTAINERS = {"aggregation", "api", "dr-coordinator", "forecast", "ingestion"}  # deploy/base


@pytest.fixture
def can_rehearse(kustomize_render: Any, mount_namespaces: None) -> None:
    kustomize_render("production")  # kubectl (or the CI rule in conftest)


def _isolated(uid: str) -> dict[str, str]:
    """The aggregation worker's topics and groups of this test only, so the shared stack's
    other users of `meter-readings` neither feed nor see it."""
    return {
        "ENERGY_AGGREGATION__READINGS_TOPIC": f"rehearsal-readings-{uid}",
        "ENERGY_AGGREGATION__DLQ_TOPIC": f"rehearsal-dlq-{uid}",
        "ENERGY_AGGREGATION__CONSUMER_GROUP": f"rehearsal-{uid}",
        "ENERGY_AGGREGATION__ARCHIVE_GROUP": f"rehearsal-{uid}-archive",
    }


def _handled(port: int) -> float:
    with urllib.request.urlopen(f"http://{POD_IP}:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    found = re.finditer(r"^energy_aggregation_readings_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(m.group(1)) for m in found)


def test_production_overlay_every_container_gets_ready_and_stops_cleanly(
    can_rehearse: None, stack: Stack, settings: Settings, uid: str, tmp_path: Path
) -> None:
    env = _isolated(uid)
    topic, group = env["ENERGY_AGGREGATION__READINGS_TOPIC"], env["ENERGY_AGGREGATION__CONSUMER_GROUP"]
    bootstrap = settings.kafka.bootstrap_servers
    asyncio.run(ensure_topics_async(bootstrap, {topic: 6, env["ENERGY_AGGREGATION__DLQ_TOPIC"]: 1}))
    # No commit on the timer before the stop: whatever is committed afterwards was committed by
    # the graceful shutdown itself.
    env["ENERGY_AGGREGATION__FAUST_COMMIT_INTERVAL_S"] = "3600"
    readings = make_readings(f"fac-{uid}", meters=3, start=now_utc() - timedelta(minutes=10), count=20)
    before_stop: dict[str, int] = {}

    def while_ready(report: Report) -> None:
        port = next(o for o in report.outcomes if o.container == "aggregation").ports["http"]
        produced = asyncio.run(produce(bootstrap, topic, readings))
        wait_until_sync(
            lambda: _handled(port),
            accept=lambda handled: handled >= produced,
            timeout_s=90,
            what=f"aggregation handling all {produced} readings",
            interval_s=0.3,
        )
        before_stop["committed"], _ = asyncio.run(committed_total(bootstrap, topic, group))
        before_stop["produced"] = produced

    report = rehearse("production", settings, extra_env=env, run_root=tmp_path / "rehearsal", while_ready=while_ready)

    assert report.ok, "\n".join(report.failures())
    assert {o.container for o in report.outcomes} == EXPECTED_CONTAINERS
    grace = {"aggregation": 90, "api": 30, "dr-coordinator": 90, "forecast": 60, "ingestion": 45}  # the manifests
    for outcome in report.outcomes:
        assert outcome.exit_code == 0, outcome.line()
        assert outcome.stopped_after_s is not None and outcome.stopped_after_s <= grace[outcome.container]
        assert outcome.ready_after_s is not None
    produced = before_stop["produced"]
    assert produced == 60
    assert before_stop["committed"] == 0, "offsets were committed before SIGTERM: the check proves nothing"
    committed, _ = asyncio.run(committed_total(bootstrap, topic, group))
    assert committed == produced, f"after SIGTERM the worker committed {committed} of {produced} handled readings"


def test_with_faust_state_in_the_read_only_working_dir_the_rehearsal_names_the_container_and_path(
    can_rehearse: None, stack: Stack, settings: Settings, uid: str, tmp_path: Path
) -> None:
    # The fix undone: Faust's default state directory, "<app id>-data" in the working directory.
    env = {**_isolated(uid), "ENERGY_AGGREGATION__FAUST_DATADIR": "/var/lib/energy/aggregation-data"}
    report = rehearse("production", settings, extra_env=env, only=["aggregation"], run_root=tmp_path / "rehearsal")
    assert not report.ok
    [failure] = report.failures()
    assert failure.startswith("aggregation (Deployment/aggregation): exited with status 1 before it was ready")
    assert "Read-only file system: '/var/lib/energy/aggregation-data'" in failure
