"""The capacity model (docs/capacity.md) is current, its arithmetic is right, and production
provisions at least its 10,000-facility row (issue 16)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bench import capacity
from tests.infra.conftest import missing_tool


@pytest.fixture(scope="module")
def model() -> tuple[str, dict]:
    import shutil

    if shutil.which("kubectl") is None:
        missing_tool("kubectl is not installed: the capacity model reads the rendered production overlay")
    return capacity.build()


def test_the_committed_capacity_document_is_regenerated_from_the_latest_results(model) -> None:
    text, _ = model
    assert capacity.DOC.read_text() == text, "run: python -m bench.capacity"


def test_production_carries_the_ten_thousand_facility_row(model) -> None:
    _, data = model
    row = next(r for r in data["rows"] if r["facilities"] == capacity.CHECKED_FLEET)
    provisioned = capacity.Provisioned(**data["provisioned"])
    gaps = [(what, need, have) for what, need, have, ok in capacity.checks(row, provisioned) if not ok]
    assert gaps == [], f"production is below the 10,000-facility row: {gaps}"


def test_a_smaller_provision_is_reported_as_a_gap(model) -> None:
    _, data = model
    row = next(r for r in data["rows"] if r["facilities"] == capacity.CHECKED_FLEET)
    provisioned = capacity.Provisioned(**data["provisioned"])
    shrunk = replace(provisioned, msk_volume_gb=1000.0, replicas={**provisioned.replicas, "ingestion": 1})
    failing = {what for what, _, _, ok in capacity.checks(row, shrunk) if not ok}
    assert failing == {"ingestion replicas", "MSK disk per broker, GB"}


def test_sizing_arithmetic_checked_by_hand(model) -> None:
    _, data = model
    m, p = data["measured"], data["provisioned"]
    row = next(r for r in data["rows"] if r["facilities"] == 10_000)
    readings_per_s = 10_000 * 10 / 15  # 10 meters each, one reading every 15 s
    assert row["readings_per_s"] == pytest.approx(readings_per_s, abs=0.1)
    ingest = json.loads((capacity.RESULTS / "ingest.json").read_text())["single_messages_per_cpu_s"]
    assert row["ingestion_pods"] == math.ceil(readings_per_s / (ingest * p["cpu_request"]["ingestion"] * 0.6))
    mb_s = readings_per_s * m["event_bytes"] / 1e6
    stored_gb = (mb_s * 86_400 * 7 + mb_s * 0.55 * 86_400 * 3) / 1e3  # 7 d of readings, 3 d of raw payloads
    assert row["msk_gb_per_broker"] == pytest.approx(stored_gb * 3 / 3 * 1.3, abs=1)  # RF 3 over 3 brokers, 30 % free
    assert row["dr_peak_facilities"] == 1_000
    assert 400 <= m["event_bytes"] <= 800  # a meter.reading envelope in JSON
