"""Graceful shutdown flushes and commits; lag per partition is exported; alert rules (AGG-6)."""

from __future__ import annotations

import re
import signal
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.aggregation.conftest import make_topics
from tests.aggregation.helpers import (
    committed_total,
    hour_floor,
    make_readings,
    new_names,
    now_utc,
    produce,
    raw_count,
    settings_for,
    start_worker,
)
from tests.aggregation.test_chaos import wait_http
from tests.waiting import wait_until

RULES = Path(__file__).resolve().parents[2] / "aggregation" / "prometheus-rules.yml"


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def lag_values(text: str, topic: str, group: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("energy_kafka_consumer_lag{") and f'topic="{topic}"' in line and f'group="{group}"' in line:
            part = re.search(r'partition="(\d+)"', line)
            assert part is not None
            out[part.group(1)] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.asyncio(loop_scope="session")
async def test_sigterm_finishes_the_batch_in_hand_commits_it_and_exports_lag_per_partition(
    settings, agg_db, agg_influx, uid, port, tmp_path
):
    n = new_names(uid)
    await make_topics(settings, n["topic"], n["dlq"], partitions=1)
    s = settings_for(
        settings,
        agg_db,
        n["topic"],
        n["dlq"],
        n["group"],
        batch_max_readings=200,
        archive_enabled=False,
        lag_update_s=0.2,
    )
    bootstrap = settings.kafka.bootstrap_servers
    fac = n["facility"]
    # A backlog big enough (60k readings in batches of 200) to stop the worker half way through it.
    readings = make_readings(fac, 20, hour_floor(now_utc()) - timedelta(hours=13), 3000, seed=30)
    await produce(bootstrap, n["topic"], readings)
    proc = start_worker(s, port, tmp_path / "worker.log")
    try:
        await wait_http(port)

        async def lag_once_committing() -> dict[str, float] | None:
            lag = lag_values(metrics_text(port), n["topic"], n["group"])
            done, _ = await committed_total(bootstrap, n["topic"], n["group"])
            return lag if lag and done > 0 else None

        lag_seen = await wait_until(
            lag_once_committing, timeout_s=60, what="lag reported once the worker commits", interval_s=0.05
        )
        assert set(lag_seen) == {"0"}
        assert lag_seen["0"] > 0, "a backlog shows as lag"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    done, _ = await committed_total(bootstrap, n["topic"], n["group"])
    assert 0 < done < len(readings), done
    # Everything written was committed and everything committed was written: no batch half done.
    assert await raw_count(agg_influx, fac) == done


def test_lag_alert_rules_are_graduated_warn_1k_critical_5k_page_10k():
    doc = yaml.safe_load(RULES.read_text())
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}
    lag = {name: r for name, r in rules.items() if "energy_kafka_consumer_lag" in r["expr"]}
    got = sorted((r["labels"]["severity"], int(re.search(r">\s*(\d+)", r["expr"]).group(1))) for r in lag.values())
    assert got == [("critical", 5000), ("page", 10000), ("warning", 1000)]
    assert all(r.get("for") for r in lag.values())
    assert any("energy_aggregation_backpressure" in r["expr"] for r in rules.values())
