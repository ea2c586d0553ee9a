"""Window features for the encoder-decoder (pure numpy, no torch, no I/O).

Series are concatenated into one long array; a sample is an *origin* ``o`` (last observed step).
Encoder: steps ``o-L+1..o`` with [load/scale, temperature, calendar, and (``encoder_reference``) the load
and temperature a week before each step]. Decoder: targets ``t = o+gap+1+k`` (k < horizon) with [calendar,
temperature at t, day mean/max temperature, temperature one week earlier, load one week earlier, load at
the most recent observed same time of day, lead, and (``reference_day_type``) the day type of the day a
week earlier, (``degrees``) heating/cooling degrees at t and a week earlier]. Only load up to ``o`` is used.
The load one week before each target is also returned on its own: it is the seasonal-naive reference
the network adds its residual to (``net.QuantileLSTM``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from forecast.model.calendar import SUNDAY_COLUMN, n_calendar, year_end_column

QUANTILES = (0.1, 0.5, 0.9)
TEMP_CENTER_C = 15.0
TEMP_SCALE_C = 10.0
# Heating and cooling degrees (the usual bases): load grows on either side of a comfortable band, and the
# residual over last week's load follows the change of these, not of the temperature itself.
HEATING_BASE_C = 18.0
COOLING_BASE_C = 22.0


@dataclass(frozen=True)
class ModelSpec:
    steps_per_day: int  # 24 = hourly, 96 = 15 min
    lookback: int  # encoder steps
    gap: int  # steps between the last observation and the first target, minus one
    horizon: int  # decoder steps
    hidden: int = 64
    quantiles: tuple[float, ...] = field(default=QUANTILES)
    day_of_year: bool = False  # only when the training history spans a year (calendar.spans_a_year)
    patch: int = 1  # steps per recurrent step (net.QuantileLSTM); artefacts saved before it had 1
    # decoder inputs added later (artefacts saved before them have them off): the year-end break in the
    # calendar, the day type (holiday-or-Sunday, year-end) of the reference day a week before each target,
    # heating/cooling degrees at the target and a week before it
    year_end: bool = False
    reference_day_type: bool = False
    degrees: bool = False
    # the encoder also sees the load and temperature a week before each of its steps, so it can tell how far
    # the latest day strayed from its own seasonal-naive reference (such misses persist into the next day)
    encoder_reference: bool = False

    def __post_init__(self) -> None:
        if self.patch < 1 or self.lookback % self.patch or self.horizon % self.patch:
            raise ValueError("lookback and horizon must be multiples of the patch")
        if self.gap + self.horizon > self.week:
            raise ValueError("the seasonal-naive reference needs every target within a week of the origin")

    @property
    def interval_minutes(self) -> int:
        return 1440 // self.steps_per_day

    @property
    def n_calendar(self) -> int:
        return n_calendar(self.day_of_year, self.year_end)

    @property
    def day_type_columns(self) -> list[int]:
        """Calendar columns that say what kind of day it is (beyond the day of week)."""
        return [SUNDAY_COLUMN] + ([year_end_column(self.day_of_year)] if self.year_end else [])

    @property
    def week(self) -> int:
        return 7 * self.steps_per_day

    @property
    def history_needed(self) -> int:
        """Observed steps a forecast needs: the encoder window (and the week before it, with the encoder's
        reference) and one week before the first target."""
        return max(self.lookback + (self.week if self.encoder_reference else 0), self.week - self.gap)

    @property
    def enc_features(self) -> int:
        return 2 + self.n_calendar + (2 if self.encoder_reference else 0)

    @property
    def dec_features(self) -> int:
        extra = (len(self.day_type_columns) if self.reference_day_type else 0) + (4 if self.degrees else 0)
        return self.n_calendar + 4 + 2 + 1 + extra

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["quantiles"] = list(self.quantiles)
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> ModelSpec:
        values = dict(d)
        values["quantiles"] = tuple(values["quantiles"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


INTERVALS_MINUTES = (5, 15, 30, 60)


def spec_for(interval_minutes: int, day_ahead: bool, day_of_year: bool = False, hidden: int = 32) -> ModelSpec:
    """The one rule for every data set and meter interval: a day of targets, a day of encoder (the decoder
    sees the load a week and a day before each target, so a longer encoder adds cost, not information), and
    an hour per recurrent step (the patch: 12 steps at 5 min, 4 at 15, 2 at 30, 1 hourly).
    ``day_ahead``: the first target is a full day after the last observation (gap = one day - 1 step),
    else the targets start right after it (the platform's service forecasts from now)."""
    if interval_minutes not in INTERVALS_MINUTES:
        raise ValueError(f"interval of {interval_minutes} min not supported; one of {INTERVALS_MINUTES}")
    per_day = 1440 // interval_minutes
    return ModelSpec(
        steps_per_day=per_day,
        lookback=per_day,
        gap=per_day - 1 if day_ahead else 0,
        horizon=per_day,
        hidden=hidden,
        day_of_year=day_of_year,
        patch=max(1, 60 // interval_minutes),
        year_end=day_of_year,
        reference_day_type=True,
        degrees=True,
        encoder_reference=True,
    )


@dataclass
class SeriesBank:
    """Concatenated series: load (NaN-free), normalised temperature, calendar features, and where each starts."""

    load: np.ndarray  # (N,) float32
    temp: np.ndarray  # (N,) float32, normalised
    temp_day_mean: np.ndarray
    temp_day_max: np.ndarray
    calendar: np.ndarray  # (N, spec.n_calendar)
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
    n = len(temp)
    csum = np.concatenate([[0.0], np.cumsum(temp, dtype=np.float64)])
    idx = np.arange(n)
    lo = np.maximum(0, idx - steps_per_day + 1)
    mean = ((csum[idx + 1] - csum[lo]) / (idx + 1 - lo)).astype(np.float32)
    return mean, trailing_max(temp, steps_per_day).astype(np.float32)


def trailing_max(values: np.ndarray, window: int) -> np.ndarray:
    """Max of the last ``window`` values (inclusive) at each step, shorter windows at the start; by doubling
    (log2(window) vector maxima instead of a window-wide reduction per step)."""
    pad = np.full(window - 1, -np.inf, dtype=np.float64)
    x = np.concatenate([pad, np.asarray(values, dtype=np.float64)])
    span, m = 1, x.copy()  # m[i] = max of x[i-span+1 .. i]
    while 2 * span <= window:
        m[span:] = np.maximum(m[span:], m[:-span])
        span *= 2
    # window = span + rest with rest < span: the max of two overlapping spans of length ``span``
    out = np.maximum(m[window - 1 :], m[span - 1 : len(m) - window + span]) if window > span else m[window - 1 :]
    return out


def valid_origins(bank: SeriesBank, spec: ModelSpec, need_targets: bool = True) -> np.ndarray:
    """Global origin indices whose encoder window and lags lie inside their own series."""
    out = []
    for start, n in zip(bank.starts, bank.lengths, strict=True):
        first = start + spec.history_needed - 1
        last = start + n - 1 - ((spec.gap + spec.horizon) if need_targets else 0)
        if last >= first:
            out.append(np.arange(first, last + 1, dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def degrees(temp: np.ndarray) -> np.ndarray:
    """(..., 2) heating and cooling degrees of normalised temperatures, in the same units (10 C)."""
    heating = np.maximum((HEATING_BASE_C - TEMP_CENTER_C) / TEMP_SCALE_C - temp, 0.0)
    cooling = np.maximum(temp - (COOLING_BASE_C - TEMP_CENTER_C) / TEMP_SCALE_C, 0.0)
    return np.stack([heating, cooling], axis=-1)


def lag_steps(spec: ModelSpec) -> np.ndarray:
    """For each lead k: steps back to the most recent observed same time of day (a multiple of a day)."""
    lead = spec.gap + 1 + np.arange(spec.horizon)
    return spec.steps_per_day * np.ceil(lead / spec.steps_per_day).astype(np.int64)


@dataclass
class Batch:
    enc: np.ndarray  # (B, L, Fe)
    dec: np.ndarray  # (B, H, Fd)
    reference: np.ndarray  # (B, H) load one week before each target / scale (seasonal naive)
    scale: np.ndarray  # (B,)
    targets: np.ndarray | None  # (B, H) load / scale


def make_batch(bank: SeriesBank, spec: ModelSpec, origins: np.ndarray, with_targets: bool = True) -> Batch:
    """Features of the windows ending at ``origins``, everything divided by the encoder window's mean load."""
    if bank.calendar.shape[1] != spec.n_calendar:
        raise ValueError(f"calendar has {bank.calendar.shape[1]} columns, the spec needs {spec.n_calendar}")
    enc_idx = origins[:, None] + np.arange(-spec.lookback + 1, 1)[None, :]
    tgt_idx = origins[:, None] + (spec.gap + 1 + np.arange(spec.horizon))[None, :]
    enc_load = bank.load[enc_idx]
    scale = enc_load.mean(axis=1)
    scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
    enc_parts = [(enc_load / scale[:, None])[..., None], bank.temp[enc_idx][..., None], bank.calendar[enc_idx]]
    if spec.encoder_reference:
        enc_parts.append((bank.load[enc_idx - spec.week] / scale[:, None])[..., None])
        enc_parts.append(bank.temp[enc_idx - spec.week][..., None])
    enc = np.concatenate(enc_parts, axis=-1)
    week_lag = bank.load[tgt_idx - spec.week] / scale[:, None]
    day_lag = bank.load[tgt_idx - lag_steps(spec)[None, :]] / scale[:, None]
    lead = np.broadcast_to(
        ((spec.gap + 1 + np.arange(spec.horizon)) / (spec.gap + spec.horizon))[None, :], week_lag.shape
    )
    parts = [
        bank.calendar[tgt_idx],
        bank.temp[tgt_idx][..., None],
        bank.temp_day_mean[tgt_idx][..., None],
        bank.temp_day_max[tgt_idx][..., None],
        bank.temp[tgt_idx - spec.week][..., None],  # what the reference's load saw: the residual's driver
        week_lag[..., None],
        day_lag[..., None],
        lead[..., None],
    ]
    if spec.reference_day_type:  # a holiday a week ago made the reference low for a working day
        parts.append(bank.calendar[tgt_idx - spec.week][..., spec.day_type_columns])
    if spec.degrees:
        parts.append(degrees(bank.temp[tgt_idx]))
        parts.append(degrees(bank.temp[tgt_idx - spec.week]))
    dec = np.concatenate(parts, axis=-1).astype(np.float32)
    targets = (bank.load[tgt_idx] / scale[:, None]).astype(np.float32) if with_targets else None
    return Batch(enc.astype(np.float32), dec, week_lag.astype(np.float32), scale, targets)
