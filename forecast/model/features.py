"""Window features for the encoder-decoder (pure numpy, no torch, no I/O).

Series are concatenated into one long array; a sample is an *origin* ``o`` (last observed step).
Encoder: steps ``o-L+1..o`` with [load/scale, temperature, calendar]. Decoder: targets
``t = o+gap+1+k`` (k < horizon) with [calendar, temperature at t, day mean/max temperature, load one
week earlier, load at the most recent observed same time of day, lead]. Only load up to ``o`` is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from forecast.model.calendar import N_CALENDAR

QUANTILES = (0.1, 0.5, 0.9)
TEMP_CENTER_C = 15.0
TEMP_SCALE_C = 10.0


@dataclass(frozen=True)
class ModelSpec:
    steps_per_day: int  # 24 = hourly, 96 = 15 min
    lookback: int  # encoder steps
    gap: int  # steps between the last observation and the first target, minus one
    horizon: int  # decoder steps
    hidden: int = 64
    quantiles: tuple[float, ...] = field(default=QUANTILES)

    @property
    def week(self) -> int:
        return 7 * self.steps_per_day

    @property
    def history_needed(self) -> int:
        """Observed steps a forecast needs: the encoder window and one week before the first target."""
        return max(self.lookback, self.week - self.gap)

    @property
    def enc_features(self) -> int:
        return 2 + N_CALENDAR

    @property
    def dec_features(self) -> int:
        return N_CALENDAR + 3 + 2 + 1

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["quantiles"] = list(self.quantiles)
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> ModelSpec:
        values = dict(d)
        values["quantiles"] = tuple(values["quantiles"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class SeriesBank:
    """Concatenated series: load (NaN-free), normalised temperature, calendar features, and where each starts."""

    load: np.ndarray  # (N,) float32
    temp: np.ndarray  # (N,) float32, normalised
    temp_day_mean: np.ndarray
    temp_day_max: np.ndarray
    calendar: np.ndarray  # (N, N_CALENDAR)
    starts: np.ndarray  # (S,) start index of each series
    lengths: np.ndarray  # (S,)

    @classmethod
    def build(cls, series: list[tuple[np.ndarray, np.ndarray, np.ndarray]], steps_per_day: int) -> SeriesBank:
        """``series``: list of (load, temperature_c, calendar) with equal lengths, on a regular grid."""
        loads, temps, means, maxes, cals, starts, lengths = [], [], [], [], [], [], []
        pos = 0
        for load, temp_c, cal in series:
            n = len(load)
            if not (len(temp_c) == n == len(cal)):
                raise ValueError("load, temperature and calendar must have equal lengths")
            t = ((np.asarray(temp_c, dtype=np.float64) - TEMP_CENTER_C) / TEMP_SCALE_C).astype(np.float32)
            mean, mx = trailing_day_stats(t, steps_per_day)
            loads.append(np.asarray(load, dtype=np.float32))
            temps.append(t)
            means.append(mean)
            maxes.append(mx)
            cals.append(np.asarray(cal, dtype=np.float32))
            starts.append(pos)
            lengths.append(n)
            pos += n
        return cls(
            np.concatenate(loads),
            np.concatenate(temps),
            np.concatenate(means),
            np.concatenate(maxes),
            np.concatenate(cals),
            np.asarray(starts, dtype=np.int64),
            np.asarray(lengths, dtype=np.int64),
        )


def trailing_day_stats(temp: np.ndarray, steps_per_day: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max of the last day (inclusive) at each step; shorter windows at the start."""
    import pandas as pd

    s = pd.Series(temp)
    mean = s.rolling(steps_per_day, min_periods=1).mean().to_numpy(dtype=np.float32)
    mx = s.rolling(steps_per_day, min_periods=1).max().to_numpy(dtype=np.float32)
    return mean, mx


def valid_origins(bank: SeriesBank, spec: ModelSpec, need_targets: bool = True) -> np.ndarray:
    """Global origin indices whose encoder window and lags lie inside their own series."""
    out = []
    for start, n in zip(bank.starts, bank.lengths, strict=True):
        first = start + spec.history_needed - 1
        last = start + n - 1 - ((spec.gap + spec.horizon) if need_targets else 0)
        if last >= first:
            out.append(np.arange(first, last + 1, dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def lag_steps(spec: ModelSpec) -> np.ndarray:
    """For each lead k: steps back to the most recent observed same time of day (a multiple of a day)."""
    lead = spec.gap + 1 + np.arange(spec.horizon)
    return spec.steps_per_day * np.ceil(lead / spec.steps_per_day).astype(np.int64)


def make_batch(
    bank: SeriesBank, spec: ModelSpec, origins: np.ndarray, with_targets: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns (encoder (B,L,Fe), decoder (B,H,Fd), scale (B,), targets/scale (B,H) or None)."""
    enc_idx = origins[:, None] + np.arange(-spec.lookback + 1, 1)[None, :]
    tgt_idx = origins[:, None] + (spec.gap + 1 + np.arange(spec.horizon))[None, :]
    enc_load = bank.load[enc_idx]
    scale = enc_load.mean(axis=1)
    scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
    enc = np.concatenate(
        [(enc_load / scale[:, None])[..., None], bank.temp[enc_idx][..., None], bank.calendar[enc_idx]], axis=-1
    )
    week_lag = bank.load[tgt_idx - spec.week] / scale[:, None]
    day_lag = bank.load[tgt_idx - lag_steps(spec)[None, :]] / scale[:, None]
    lead = np.broadcast_to(
        ((spec.gap + 1 + np.arange(spec.horizon)) / (spec.gap + spec.horizon))[None, :], week_lag.shape
    )
    dec = np.concatenate(
        [
            bank.calendar[tgt_idx],
            bank.temp[tgt_idx][..., None],
            bank.temp_day_mean[tgt_idx][..., None],
            bank.temp_day_max[tgt_idx][..., None],
            week_lag[..., None],
            day_lag[..., None],
            lead[..., None],
        ],
        axis=-1,
    ).astype(np.float32)
    targets = (bank.load[tgt_idx] / scale[:, None]).astype(np.float32) if with_targets else None
    return enc.astype(np.float32), dec, scale, targets
