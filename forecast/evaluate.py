"""``energy forecast evaluate-vic-elec``: train on vic_elec, compare with seasonal-naive baselines, plot a test week."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.model.features import valid_origins
from forecast.model.train import TrainConfig, TrainResult, predict, train
from forecast.vic_elec import VIC_SPEC, VicData, bank_of, load_vic_elec, mape_pct, seasonal_naive_mape

VAL_FRACTION = 0.15  # of the training period, the most recent part
TRAIN_STRIDE = 2  # every other hourly origin: neighbouring windows are near duplicates; halves training time


@dataclass
class VicEvaluation:
    mape_pct: float  # every test hour forecast exactly 24 h ahead (rolling origin)
    mape_daily_issue_pct: float  # one forecast a day, leads 24..47 h
    snaive_day_mape_pct: float
    snaive_week_mape_pct: float
    coverage_pct: float  # P10-P90 coverage, rolling origin
    coverage_daily_issue_pct: float
    test_hours: int
    result: TrainResult
    times: np.ndarray
    actual: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray


def split_origins(data: VicData, stride: int = TRAIN_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    bank = bank_of(data)
    spec = VIC_SPEC
    origins = valid_origins(bank, spec)
    last_target = origins + spec.gap + spec.horizon
    train_val = origins[last_target < data.test_start]
    cut = int(len(train_val) * (1 - VAL_FRACTION))
    # drop the windows whose targets overlap the validation period (no leakage into early stopping)
    val = train_val[cut:]
    train_only = train_val[: max(0, cut - spec.gap - spec.horizon)]
    return train_only[::stride], val


def evaluate(
    cfg: TrainConfig | None = None, data: VicData | None = None, trained: TrainResult | None = None
) -> VicEvaluation:
    """Train (or take ``trained``, e.g. the committed artefact) and evaluate on the test split."""
    data = data or load_vic_elec()
    spec = VIC_SPEC
    bank = bank_of(data, pad=spec.horizon)
    if trained is None:
        train_o, val_o = split_origins(data)
        trained = train(bank, spec, train_o, val_o, cfg or TrainConfig())
    result = trained
    n = len(data.load)
    targets = np.arange(data.test_start, n)
    # rolling origin: target t forecast from o = t - gap - 1, lead k = 0 (24 h ahead)
    rolling = predict(result.net, bank, spec, targets - spec.gap - 1, result.band_scale)[:, 0, :]
    actual = data.load[targets]
    # daily issue: origins whose first target starts a local day, all 24 leads
    local_hour = data.times.tz_convert("Australia/Melbourne").hour.to_numpy()
    first_targets = targets[(local_hour[targets] == 0) & (targets + spec.horizon <= n)]
    daily = predict(result.net, bank, spec, first_targets - spec.gap - 1, result.band_scale)
    daily_idx = (first_targets[:, None] + np.arange(spec.horizon)[None, :]).ravel()
    daily_q = daily.reshape(-1, 3)
    return VicEvaluation(
        mape_pct=mape_pct(actual, rolling[:, 1]),
        mape_daily_issue_pct=mape_pct(data.load[daily_idx], daily_q[:, 1]),
        snaive_day_mape_pct=seasonal_naive_mape(data, 24),
        snaive_week_mape_pct=seasonal_naive_mape(data, 168),
        coverage_pct=float(np.mean((actual >= rolling[:, 0]) & (actual <= rolling[:, 2])) * 100),
        coverage_daily_issue_pct=float(
            np.mean((data.load[daily_idx] >= daily_q[:, 0]) & (data.load[daily_idx] <= daily_q[:, 2])) * 100
        ),
        test_hours=len(targets),
        result=result,
        times=data.times[targets].to_numpy(),
        actual=actual,
        p10=rolling[:, 0],
        p50=rolling[:, 1],
        p90=rolling[:, 2],
    )


def plot_week(ev: VicEvaluation, path: Path, start_hour: int = 24 * 7 * 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sl = slice(start_hour, start_hour + 24 * 7)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.fill_between(ev.times[sl], ev.p10[sl], ev.p90[sl], alpha=0.3, label="P10-P90")
    ax.plot(ev.times[sl], ev.p50[sl], label="P50 (24 h ahead)")
    ax.plot(ev.times[sl], ev.actual[sl], color="black", linewidth=1, label="actual")
    ax.set_ylabel("MWh per hour")
    ax.set_title(f"vic_elec test week, LSTM day-ahead (MAPE over the test set {ev.mape_pct:.2f} %)")
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
