"""``energy forecast train``: the platform model (96 steps of 15 min from now), trained globally across
facilities on their 15 min rollups and temperatures, saved as a versioned artefact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.model.artifact import save_model
from forecast.model.calendar import calendar_features
from forecast.model.features import ModelSpec, SeriesBank, valid_origins
from forecast.model.train import TrainConfig, TrainResult, train
from forecast.prepare import fill_gaps

PLATFORM_SPEC = ModelSpec(steps_per_day=96, lookback=192, gap=0, horizon=96, hidden=48)
VAL_FRACTION = 0.15


@dataclass
class FacilitySeries:
    facility_id: str
    timezone: str
    times: pd.DatetimeIndex  # regular 15 min grid, UTC
    load_kw: np.ndarray  # NaN where missing
    temp_c: np.ndarray


def build_bank(series: list[FacilitySeries], spec: ModelSpec) -> SeriesBank:
    return SeriesBank.build(
        [(fill_gaps(s.load_kw), s.temp_c, calendar_features(s.times, s.timezone)) for s in series], spec.steps_per_day
    )


def split(bank: SeriesBank, spec: ModelSpec, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series: the last VAL_FRACTION of origins validate (a time-based split), earlier ones train."""
    train_o, val_o = [], []
    for start, n in zip(bank.starts, bank.lengths, strict=True):
        sub = SeriesBank(
            bank.load, bank.temp, bank.temp_day_mean, bank.temp_day_max, bank.calendar, np.array([start]), np.array([n])
        )
        origins = valid_origins(sub, spec)[::stride]
        cut = int(len(origins) * (1 - VAL_FRACTION))
        gap_windows = (spec.gap + spec.horizon) // stride + 1
        train_o.append(origins[: max(0, cut - gap_windows)])
        val_o.append(origins[cut:])
    return np.concatenate(train_o), np.concatenate(val_o)


def train_platform(
    series: list[FacilitySeries], cfg: TrainConfig, stride: int = 4, spec: ModelSpec = PLATFORM_SPEC
) -> TrainResult:
    bank = build_bank(series, spec)
    train_o, val_o = split(bank, spec, stride)
    return train(bank, spec, train_o, val_o, cfg)


def synthetic_fleet(facilities: int, days: int, seed: int, end: pd.Timestamp | None = None) -> list[FacilitySeries]:
    from energy.fleet import build_fleet
    from forecast.synthetic import synthetic_load, synthetic_temperature

    end = end or pd.Timestamp.now(tz="UTC").floor("D")
    times = pd.date_range(end - pd.Timedelta(days=days), periods=days * 96, freq="15min")
    fleet = build_fleet(max(facilities, 1), 3)
    out = []
    for i in range(facilities):
        f = fleet[i % len(fleet)]
        temp = synthetic_temperature(times, f.latitude, seed + i)
        load = synthetic_load(times, f.timezone, temp, f.peak_kw, seed + 1000 + i)
        out.append(FacilitySeries(f"{f.facility_id}-syn{i}", f.timezone, times, load, temp))
    return out


def train_and_save(
    series: list[FacilitySeries], cfg: TrainConfig, model_dir: Path, name: str, source: str, stride: int = 4
) -> tuple[str, TrainResult]:
    result = train_platform(series, cfg, stride)
    version = save_model(
        model_dir,
        name,
        PLATFORM_SPEC,
        result,
        {
            "source": source,
            "seed": cfg.seed,
            "facilities": len(series),
            "days": int(len(series[0].times) / 96) if series else 0,
        },
    )
    return version, result
