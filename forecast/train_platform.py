"""``energy forecast train``: the platform model of one meter interval (24 h ahead from now), trained
globally across facilities on their own rollups and recorded temperatures, saved as a versioned artefact.
The new version only becomes CURRENT when it backtests better than the current one on the newest data;
otherwise it is kept beside it as a rejected candidate (see decision 0302)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import structlog

from forecast.dataset import SeriesData, build_bank
from forecast.evaluate import split_origins
from forecast.model.artifact import ModelLoadError, load_model, save_model, set_current
from forecast.model.calendar import spans_a_year
from forecast.model.features import ModelSpec, spec_for
from forecast.model.train import ForecastModel, StepsDone, TrainConfig, TrainResult, predict, train

log = structlog.get_logger("forecast.train_platform")
PLATFORM_SPEC = spec_for(15, day_ahead=False)


def platform_spec(series: list[SeriesData]) -> ModelSpec:
    """24 h from now at the series' interval; day of year only when the history spans a year."""
    if not series:
        raise ValueError("no series to train on")
    return spec_for(series[0].interval_minutes, day_ahead=False, day_of_year=spans_a_year(series[0].times))


def train_platform(
    series: list[SeriesData], cfg: TrainConfig, spec: ModelSpec | None = None, on_steps: StepsDone | None = None
) -> TrainResult:
    spec = spec or platform_spec(series)
    bank = build_bank(series, spec)
    train_o, val_o = split_origins(bank, spec, [len(s.times) for s in series])
    return train(bank, spec, train_o, val_o, cfg, on_steps)


def synthetic_fleet(
    facilities: int, days: int, seed: int, end: pd.Timestamp | None = None, interval_minutes: int = 15
) -> list[SeriesData]:
    """Seeded synthetic facilities (tests, benchmarks, and a first artefact before real history exists)."""
    from energy.fleet import build_fleet
    from forecast.synthetic import synthetic_load, synthetic_temperature

    end = end or pd.Timestamp.now(tz="UTC").floor("D")
    per_day = 1440 // interval_minutes
    times = pd.date_range(end - pd.Timedelta(days=days), periods=days * per_day, freq=f"{interval_minutes}min")
    fleet = build_fleet(max(facilities, 1), 3)
    out = []
    for i in range(facilities):
        f = fleet[i % len(fleet)]
        temp = synthetic_temperature(times, f.latitude, seed + i)
        load = synthetic_load(times, f.timezone, temp, f.peak_kw, seed + 1000 + i)
        out.append(SeriesData(f"{f.facility_id}-syn{i}", f.timezone, times, load, temp))
    return out


def same_targets(a: ModelSpec, b: ModelSpec) -> bool:
    """Two specs forecast the same targets from the same inputs (they may differ in the recurrent patch), so
    their holdout MAPEs on the same data compare."""
    return replace(a, patch=b.patch) == b


@dataclass
class Promotion:
    version: str
    promoted: bool
    candidate_mape_pct: float
    current_mape_pct: float | None  # None: there was no usable current model of the same spec
    current_version: str | None


def holdout_mape(model: ForecastModel, series: list[SeriesData]) -> float:
    """P50 MAPE over the validation windows (the newest part) of ``series``: what decides a promotion."""
    spec = model.spec
    bank = build_bank(series, spec)
    _, val_o = split_origins(bank, spec, [len(s.times) for s in series])
    q = predict(model, bank, val_o)
    tgt = val_o[:, None] + spec.gap + 1 + np.arange(spec.horizon)[None, :]
    actual = bank.load[tgt]
    return float(np.mean(np.abs(q[..., 1] - actual) / np.maximum(np.abs(actual), 1e-6)) * 100)


def train_and_save(
    series: list[SeriesData],
    cfg: TrainConfig,
    model_dir: Path,
    name: str,
    source: str,
    on_steps: StepsDone | None = None,
) -> tuple[Promotion, TrainResult]:
    """Train, save a new version, and make it CURRENT only if it backtests better than the current one on
    the newest part of the same data (or there is no usable current model of the same spec)."""
    result = train_platform(series, cfg, on_steps=on_steps)
    candidate_mape = holdout_mape(result.model, series)
    current = None
    try:
        current = load_model(model_dir, name)
    except ModelLoadError as exc:
        log.warning("current_model_unusable", model=name, error=str(exc))
    current_mape = None
    if current is not None and same_targets(current.spec, result.model.spec):
        current_mape = holdout_mape(current.model, series)
    promoted = current_mape is None or candidate_mape < current_mape
    extra: dict[str, Any] = {
        "source": source,
        "seed": cfg.seed,
        "facilities": len(series),
        "days": round(len(series[0].times) / result.model.spec.steps_per_day, 1) if series else 0,
        "holdout_mape_pct": round(candidate_mape, 3),
        "previous_version": current.version if current else None,
        "previous_holdout_mape_pct": None if current_mape is None else round(current_mape, 3),
    }
    version = save_model(model_dir, name, result, extra, make_current=False)
    if promoted:
        set_current(model_dir, name, version)
    log.info("platform_model_trained", model=name, version=version, promoted=promoted, **extra)
    return Promotion(version, promoted, candidate_mape, current_mape, current.version if current else None), result
