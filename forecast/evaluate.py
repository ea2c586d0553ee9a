"""Day-ahead backtest of any data set with the same defaults: train only on the past (targets before the
test start), forecast every test step from an origin exactly one day before it, and compare with the two
seasonal-naive baselines on the same targets (used by ``energy forecast evaluate-vic-elec`` and
``bench/forecast.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.dataset import SeriesData, build_bank, extend
from forecast.model.calendar import spans_a_year
from forecast.model.features import ModelSpec, SeriesBank, spec_for, valid_origins
from forecast.model.train import TARGET_HIGH, TARGET_LOW, TrainConfig, TrainResult, raw_predict, train

VAL_FRACTION = 0.15  # of each series' training period, the most recent part (early stopping, calibration)
ROLLING_CALIBRATION_DAYS = 28  # the band of a forecast is calibrated on the errors of the 28 days before it
ACI_GAMMA = 0.02  # adaptive conformal step: how fast the quantile levels follow the observed miss rates


@dataclass
class Evaluation:
    name: str
    spec: ModelSpec
    mape_pct: float  # P50, every test step forecast exactly one day ahead (rolling origin)
    naive_day_pct: float  # same time yesterday, same targets
    naive_week_pct: float  # same time last week, same targets
    coverage_pct: float  # P10-P90, rolling conformal calibration (the errors known at forecast time)
    coverage_static_pct: float  # P10-P90 with the offsets fixed at training time (validation split)
    train_s: float
    test_steps: int
    train_cpu_s: float  # CPU seconds of this process while training (one torch thread by default)
    result: TrainResult
    times: np.ndarray  # of the first series' test steps (for the plot)
    actual: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray


def mape_pct(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(actual - forecast) / np.abs(actual)) * 100)


def day_ahead_spec(series: list[SeriesData], test_start: pd.Timestamp) -> ModelSpec:
    train_times = series[0].times[series[0].times < test_start]
    return spec_for(series[0].interval_minutes, day_ahead=True, day_of_year=spans_a_year(train_times))


def split_origins(bank: SeriesBank, spec: ModelSpec, first_test: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per series: origins whose targets all lie before its test start; the last VAL_FRACTION validate, and
    the training windows whose targets reach into the validation period are dropped (no leakage)."""
    train_o, val_o = [], []
    for start, n, test_at in zip(bank.starts, bank.lengths, first_test, strict=True):
        sub = SeriesBank(
            bank.load, bank.temp, bank.temp_day_mean, bank.temp_day_max, bank.calendar, np.array([start]), np.array([n])
        )
        origins = valid_origins(sub, spec)
        origins = origins[origins + spec.gap + spec.horizon < start + test_at]
        cut = int(len(origins) * (1 - VAL_FRACTION))
        train_o.append(origins[: max(0, cut - spec.gap - spec.horizon)])
        val_o.append(origins[cut:])
    return np.concatenate(train_o), np.concatenate(val_o)


def day_ahead_backtest(
    name: str,
    series: list[SeriesData],
    test_start: pd.Timestamp,
    cfg: TrainConfig | None = None,
    trained: TrainResult | None = None,
) -> Evaluation:
    """``trained``: a model this function trained before on the same data (re-evaluates without training)."""
    spec = day_ahead_spec(series, test_start)
    first_test = [int(np.searchsorted(s.times, test_start)) for s in series]
    bank = build_bank([extend(s, spec.horizon) for s in series], spec)
    train_o, val_o = split_origins(bank, spec, first_test)
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = trained or train(bank, spec, train_o, val_o, cfg or TrainConfig())
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    actual_all, p_all, static_all, day_all, week_all = [], [], [], [], []
    for i, (s, start, test_at) in enumerate(zip(series, bank.starts, first_test, strict=True)):
        own_val = val_o[(val_o >= start) & (val_o < start + len(s.times))]
        # errors of targets the model was fitted on are smaller than out-of-sample ones: never calibrate on them
        calib_from = int(own_val.min() - start) + spec.gap + 1 if len(own_val) else test_at
        q, static, targets = _rolling_forecasts(result, bank, int(start), test_at, len(s.times), s.load, calib_from)
        filled = bank.load[start : start + len(s.times)]
        actual_all.append(s.load[targets])
        p_all.append(q)
        static_all.append(static)
        day_all.append(filled[targets - spec.steps_per_day])
        week_all.append(filled[targets - spec.week])
        if i == 0:
            first = (s.times[targets].to_numpy(), s.load[targets], q)
    actual, q, static, day, week = (np.concatenate(x) for x in (actual_all, p_all, static_all, day_all, week_all))
    return Evaluation(
        name=name,
        spec=spec,
        mape_pct=mape_pct(actual, q[:, 1]),
        naive_day_pct=mape_pct(actual, day),
        naive_week_pct=mape_pct(actual, week),
        coverage_pct=float(np.mean((actual >= q[:, 0]) & (actual <= q[:, 2])) * 100),
        coverage_static_pct=float(np.mean((actual >= static[:, 0]) & (actual <= static[:, 2])) * 100),
        train_s=train_s,
        test_steps=len(actual),
        train_cpu_s=train_cpu_s,
        result=result,
        times=first[0],
        actual=first[1],
        p10=first[2][:, 0],
        p50=first[2][:, 1],
        p90=first[2][:, 2],
    )


def adaptive_conformal_offsets(
    below: np.ndarray,
    above: np.ndarray,
    lag: int,
    window: int,
    min_count: int,
    fallback: tuple[float, float],
    gamma: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per step ``i``, the offsets of P10 and P90 from the errors known at its origin (steps ``<= i - lag``,
    the last ``window`` of them; NaN = not usable): adaptive conformal inference (Gibbs and Candes, 2021).
    The quantile level of each side starts at 80 % coverage's (0.9) and moves by ``gamma`` times the gap
    between the target miss rate (0.1) and whether the newest known target fell outside its own band, so
    errors that grow or shrink over time are followed instead of lagging a fixed-level window quantile.
    ``below``: calibrated P10 minus actual (a miss when > the offset); ``above``: actual minus P90.
    Fewer than ``min_count`` known errors: ``fallback`` (the training-time offsets)."""
    gamma = ACI_GAMMA if gamma is None else gamma
    n = len(below)
    lo_off, hi_off = np.empty(n), np.empty(n)
    miss_lo, miss_hi = TARGET_LOW, 1.0 - TARGET_HIGH  # allowed share below P10 and above P90
    level_lo, level_hi = 1.0 - miss_lo, 1.0 - miss_hi
    for i in range(n):
        j = i - lag  # the newest target whose actual is known at this step's origin
        if j >= 0 and np.isfinite(below[j]):
            level_lo += gamma * (float(below[j] > lo_off[j]) - miss_lo)
            level_hi += gamma * (float(above[j] > hi_off[j]) - miss_hi)
        lo_vals = below[max(0, j + 1 - window) : j + 1] if j >= 0 else below[:0]
        hi_vals = above[max(0, j + 1 - window) : j + 1] if j >= 0 else above[:0]
        lo_vals, hi_vals = lo_vals[np.isfinite(lo_vals)], hi_vals[np.isfinite(hi_vals)]
        if len(lo_vals) < min_count:
            lo_off[i], hi_off[i] = fallback
            continue
        lo_off[i] = np.quantile(lo_vals, min(max(level_lo, 0.0), 1.0), method="higher")
        hi_off[i] = np.quantile(hi_vals, min(max(level_hi, 0.0), 1.0), method="higher")
    return lo_off, hi_off


def _rolling_forecasts(
    result: TrainResult, bank: SeriesBank, start: int, test_at: int, n: int, load: np.ndarray, calib_from: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lead-0 (one day ahead) quantiles of every observed test step of one series, calibrated two ways:
    rolling (per target, the adaptive conformal offsets of the lead-0 errors whose targets were already
    observed at its origin, over the last ROLLING_CALIBRATION_DAYS, only targets from ``calib_from`` on, i.e.
    not fitted by training; :func:`adaptive_conformal_offsets`) and static (the training-time offsets)."""
    model, spec = result.model, result.model.spec
    window = ROLLING_CALIBRATION_DAYS * spec.steps_per_day
    begin = max(test_at - window - spec.gap - 1, spec.history_needed + spec.gap)
    steps = np.arange(begin, n)
    raw, scale = raw_predict(model.nets, bank, spec, start + steps - spec.gap - 1)
    pred = raw[:, 0, :] * scale[:, None]  # load units
    actual = load[steps]
    observed = np.isfinite(actual) & (actual > 0)
    rel = pred / scale[:, None]
    usable = observed & (steps >= calib_from)
    below = pd.Series(np.where(usable, rel[:, 0] - actual / scale, np.nan))
    above = pd.Series(np.where(usable, actual / scale - rel[:, 2], np.nan))
    # known at the origin o = t - gap - 1: errors of targets <= o, i.e. shifted by gap + 1 steps
    lo_off, hi_off = adaptive_conformal_offsets(
        below.to_numpy(),
        above.to_numpy(),
        lag=spec.gap + 1,
        window=window,
        min_count=spec.steps_per_day * 7,
        fallback=(float(model.low_offset[0]), float(model.high_offset[0])),
    )
    keep = (steps >= test_at) & observed
    mid = pred[:, 1]
    rolling = np.stack(
        [np.minimum(pred[:, 0] - lo_off * scale, mid), mid, np.maximum(pred[:, 2] + hi_off * scale, mid)], axis=-1
    )
    static = np.stack(
        [
            np.minimum(pred[:, 0] - model.low_offset[0] * scale, mid),
            mid,
            np.maximum(pred[:, 2] + model.high_offset[0] * scale, mid),
        ],
        axis=-1,
    )
    return np.maximum(rolling[keep], 0.0), np.maximum(static[keep], 0.0), steps[keep]


def plot_week(ev: Evaluation, path: Path, unit: str, start_day: int = 28) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_day = ev.spec.steps_per_day
    begin = min(start_day * per_day, max(0, len(ev.times) - 7 * per_day))
    sl = slice(begin, begin + 7 * per_day)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.fill_between(ev.times[sl], ev.p10[sl], ev.p90[sl], alpha=0.3, label="P10-P90")
    ax.plot(ev.times[sl], ev.p50[sl], label="P50 (one day ahead)")
    ax.plot(ev.times[sl], ev.actual[sl], color="black", linewidth=1, label="actual")
    ax.set_ylabel(unit)
    ax.set_title(
        f"{ev.name}: a test week, LSTM day-ahead (test MAPE {ev.mape_pct:.2f} %, "
        f"best seasonal naive {min(ev.naive_day_pct, ev.naive_week_pct):.2f} %)"
    )
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
