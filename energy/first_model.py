"""The first forecast model of a local run, trained on the seeded history (decision 0951).

``energy run`` starts ``energy first-model`` in the background once every process answers, so
``make run`` waits no longer. It calls the same command the weekly retrain CronJob runs (``energy
forecast train --source influx``: the new version becomes CURRENT only if it backtests better than the
current one), then one forecast run (``energy forecast once``) so the service's output uses the new
version at once rather than at its next quarter hour. Until then the forecast service serves the shipped
model or seasonal naive, each flagged (``forecast_runs.method`` and ``model_version``).

A local run keeps its models in ``<stack data dir>/models`` (a copy of the shipped ``artifacts/models``
made once), so training never rewrites the repository's tracked artefacts.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from energy.settings import Settings

MAX_DAYS = 56  # what the 0820 measurement trained on (a week of the 60 seeded days is the backtest's)
MIN_DAYS = 11  # forecast/training_data.MIN_DAYS: 8 days a forecast needs plus windows to train and validate on
STEPS = 300  # one member of 300 steps won the gate on the seeded fleet (0820); the weekly retrain does the rest
ENSEMBLE = 1
MODEL_DIR_VARIABLE = "ENERGY_FORECAST__MODEL_DIR"


def local_model_dir(settings: Settings, environ: dict[str, str] | None = None) -> Path:
    """Where a local run's forecast models live: the configured folder when ``ENERGY_FORECAST__MODEL_DIR``
    is set, else ``<stack data dir>/models``, filled once with the shipped artefacts (their CURRENT too)."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(MODEL_DIR_VARIABLE):
        return settings.forecast.model_dir
    target = settings.stack.data_dir / "models"
    shipped = settings.forecast.model_dir
    if shipped.is_dir():
        for model in sorted(p for p in shipped.iterdir() if p.is_dir()):
            if not (target / model.name / "CURRENT").exists():
                shutil.copytree(model, target / model.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tmp"))
    target.mkdir(parents=True, exist_ok=True)
    return target


def trained_on_history(model_dir: Path, name: str) -> str | None:
    """A version of ``name`` already trained on this stack's own rollups (``source: influx``), if any."""
    for meta_file in sorted((model_dir / name).glob("*/meta.json")):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("source") == "influx":
            return f"{name}-{meta_file.parent.name}"
    return None


def history_days(spans: list[tuple[datetime, datetime]], now: datetime) -> int:
    """Whole days of history every seeded facility has up to ``now``, at most :data:`MAX_DAYS`; 0 without any."""
    if not spans:
        return 0
    return min(MAX_DAYS, math.floor(min((now - start).total_seconds() for start, _ in spans) / 86_400))


async def _seeded_spans(settings: Settings) -> list[tuple[datetime, datetime]]:
    from energy.adapters.postgres import create_pool

    pool = await create_pool(settings.postgres, min_size=1, max_size=1)
    try:
        rows = await pool.fetch(
            "SELECT h.start_at, h.end_at FROM fleet_history h JOIN facilities f USING (facility_id) WHERE f.active"
        )
    finally:
        await pool.close()
    return [(r["start_at"], r["end_at"]) for r in rows]


def _energy(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("energy")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "energy.cli", *args]


def first_model(settings: Settings, steps: int = STEPS, ensemble: int = ENSEMBLE, progress: bool = True) -> int:
    """Train the 15 min platform model on the seeded history unless a version trained on it exists; then
    forecast once. Prints what it did; the exit code is the train command's (0 when nothing to do)."""
    from forecast.service import model_name_for

    name = model_name_for(settings.forecast.model_name, 15)
    done = trained_on_history(settings.forecast.model_dir, name)
    if done is not None:
        print(f"first model: {done} was already trained on this fleet's history; nothing to do", flush=True)
        return 0
    days = history_days(asyncio.run(_seeded_spans(settings)), datetime.now(UTC))
    if days < MIN_DAYS:
        print(
            f"first model: {days} days of seeded history (fewer than {MIN_DAYS}); the forecast keeps the shipped "
            "model or seasonal naive until the weekly retrain (energy forecast train)",
            flush=True,
        )
        return 0
    print(f"first model: training {name} on {days} days of the fleet's history (energy forecast train)", flush=True)
    train = [*_energy("--progress" if progress else "--no-progress", "forecast", "train")]
    train += ["--source", "influx", "--interval", "15", "--days", str(days)]
    train += ["--steps", str(steps), "--ensemble", str(ensemble)]
    trained = subprocess.run(train, stdout=subprocess.PIPE, text=True, check=False)
    print(trained.stdout, end="", flush=True)
    if trained.returncode != 0:
        print(f"first model: training failed (exit {trained.returncode}); the shipped model stays", flush=True)
        return trained.returncode
    promoted = '"promoted": true' in trained.stdout
    print(
        "first model: the new version is CURRENT"
        if promoted
        else "first model: the current model backtests "
        "better on this history and stays CURRENT (the new version is kept as a candidate)",
        flush=True,
    )
    once = subprocess.run(_energy("forecast", "once"), stdout=subprocess.PIPE, text=True, check=False)
    print(
        "first model: forecast run done; the dashboard's forecast flag names the model that served"
        if once.returncode == 0
        else f"first model: the forecast run failed (exit {once.returncode}); the service runs again within 15 min",
        flush=True,
    )
    return 0
