"""Long commands show a progress bar with ETA on stderr when asked (``energy --progress``), none when
stderr is not a terminal and nobody asked, and their stdout stays the command's own output."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from energy.stack.topics import ensure_topics_async

ROOT = Path(__file__).resolve().parents[2]
ENERGY = [sys.executable, "-m", "energy.cli"]


def energy(*args: str, timeout_s: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*ENERGY, *args], capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **env}, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def final_bar(stderr: str, desc: str) -> str:
    """The last state of the bar named ``desc`` (tqdm redraws it with carriage returns)."""
    states = [s for s in re.split(r"[\r\n]", stderr) if s.startswith(f"{desc}:")]
    assert states, f"no {desc!r} progress bar on stderr: {stderr[-1500:]!r}"
    return states[-1]


ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")  # [elapsed<remaining


def test_training_shows_steps_with_eta_on_stderr_and_prints_only_its_json(tmp_path) -> None:
    out = energy(
        "--progress",
        "forecast",
        "train",
        "--source",
        "synthetic",
        "--facilities",
        "1",
        "--days",
        "14",
        "--steps",
        "4",
        "--ensemble",
        "2",
        ENERGY_FORECAST__MODEL_DIR=str(tmp_path),
    )
    bar = final_bar(out.stderr, "train")
    assert "8/8" in bar and ETA.search(bar), bar  # 2 members x 4 steps
    result = json.loads(out.stdout)  # stdout is the JSON and nothing else
    assert result["ensemble"] == 2 and result["steps_per_member"] == [4, 4]


async def test_export_shows_rows_with_eta_only_when_asked_and_its_csv_is_the_same(stack, settings, influx) -> None:
    start = datetime(2025, 3, 1, 8, tzinfo=UTC)  # a morning of fac-001 that nothing else writes
    lines = [
        f"facility_rollups,facility_id=fac-001,window=15m avg_kw={40 + i}.0,sample_count=15i "
        f"{int((start + timedelta(minutes=15 * i)).timestamp()) * 10**9}"
        for i in range(8)
    ]
    await influx.write_lines(lines, retention_policy=settings.influx.rollup_retention_policy)
    period = ["--from", start.isoformat(), "--to", (start + timedelta(hours=2)).isoformat(), "--granularity", "15m"]
    shown = await asyncio.to_thread(energy, "--progress", "export", "readings", "--facility", "fac-001", *period)
    quiet = await asyncio.to_thread(energy, "export", "readings", "--facility", "fac-001", *period)  # stderr: a pipe
    bar = final_bar(shown.stderr, "export")
    assert "8/8" in bar and ETA.search(bar), bar  # 2 h of 15 min windows
    assert "export:" not in quiet.stderr
    rows = list(csv.reader(io.StringIO(shown.stdout)))
    assert len(rows) == 1 + 8, shown.stdout[:500]  # the header and the 8 windows: no bar in the CSV
    assert shown.stdout == quiet.stdout


async def test_backfill_shows_readings_with_eta_on_stderr(stack, settings, uid) -> None:
    from aggregation.backfill import publish
    from schemas.readings import MeterReading

    topic = f"t-readings-{uid}"
    await ensure_topics_async(settings.kafka.bootstrap_servers, {topic: 2}, timeout_s=20)
    s = settings.model_copy(update={"aggregation": settings.aggregation.model_copy(update={"readings_topic": topic})})
    start = datetime(2026, 11, 1, tzinfo=UTC)
    readings = [
        MeterReading(
            reading_id=uuid.uuid4(),
            meter_id=f"m-{uid}",
            facility_id=f"f-{uid}",
            ts=start + timedelta(minutes=15 * i),
            active_power_kw=10.0,
            reactive_power_kvar=1.0,
            voltage_v=230.0,
            current_a=40.0,
            energy_kwh=100.0 + i,
            seq=i,
            received_at=start + timedelta(minutes=15 * i, seconds=5),
        )
        for i in range(12)
    ]
    await publish(s, readings)
    out = await asyncio.to_thread(
        energy,
        "--progress",
        "aggregation",
        "backfill",
        "--facility",
        f"f-{uid}",
        "--from",
        start.isoformat(),
        "--to",
        (start + timedelta(hours=3)).isoformat(),
        "--source",
        "topic",
        "--wait-s",
        "0",
        ENERGY_AGGREGATION__READINGS_TOPIC=topic,
    )
    bar = final_bar(out.stderr, "backfill")
    assert "12/12" in bar and ETA.search(bar), bar
    assert out.stdout.startswith(f"backfill f-{uid} ") and "12 readings republished" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1, out.stdout
