"""Training (seeded, deterministic; a budget in optimiser steps with early stopping on a time-based
validation split), a small ensemble of seeds, conformal band calibration, and batched inference."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
import torch

from forecast.model.features import Batch, ModelSpec, SeriesBank, make_batch
from forecast.model.net import QuantileLSTM, training_loss

TARGET_LOW, TARGET_HIGH = 0.1, 0.9  # P10 and P90: 80 % of actuals inside the band
MAX_EVAL_WINDOWS = 2048  # validation windows used for early stopping (evenly spaced); calibration uses all
log = structlog.get_logger("forecast.train")


@dataclass
class TrainConfig:
    """Defaults are the same for every data set (bench/forecast.py): the budget counts optimiser steps, so
    it does not depend on how much history there is."""

    seed: int = 7
    ensemble: int = 3  # members, seeds seed..seed+ensemble-1; their quantiles are averaged
    max_steps: int = 800  # per member
    eval_every: int = 100  # steps between validation passes
    patience_steps: int = 300  # stop when the validation loss has not improved for this many steps
    batch_size: int = 128
    lr: float = 3e-3
    threads: int = 1  # two threads on a shared 2-core machine were 8x slower (spinning), measured
    max_seconds: float = 900.0  # hard cap on wall time per member; the best state so far is kept
    calibrate: bool = True  # conformal P10/P90 offsets from the validation windows


@dataclass
class ForecastModel:
    """An ensemble of networks and the conformal offsets (per lead, in scaled units) of its band."""

    spec: ModelSpec
    nets: list[QuantileLSTM]
    low_offset: np.ndarray  # (H,) subtracted from P10 (negative narrows the band)
    high_offset: np.ndarray  # (H,) added to P90

    @classmethod
    def uncalibrated(cls, spec: ModelSpec, nets: list[QuantileLSTM]) -> ForecastModel:
        return cls(spec, nets, np.zeros(spec.horizon, np.float32), np.zeros(spec.horizon, np.float32))


@dataclass
class TrainResult:
    model: ForecastModel
    metrics: dict[str, Any] = field(default_factory=dict)


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _forward(net: QuantileLSTM, b: Batch) -> torch.Tensor:
    return net(torch.from_numpy(b.enc), torch.from_numpy(b.dec), torch.from_numpy(b.reference))


def raw_predict(
    nets: list[QuantileLSTM], bank: SeriesBank, spec: ModelSpec, origins: np.ndarray, batch: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble-mean scaled quantiles (B,H,3), before calibration, and the scales (B,)."""
    preds, scales = [], []
    for net in nets:
        net.eval()
    with torch.inference_mode():
        for i in range(0, len(origins), batch):
            b = make_batch(bank, spec, origins[i : i + batch], with_targets=False)
            preds.append(np.mean([_forward(net, b).numpy() for net in nets], axis=0))
            scales.append(b.scale)
    if not preds:
        return np.zeros((0, spec.horizon, 3), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return np.concatenate(preds), np.concatenate(scales)


def apply_offsets(pred: np.ndarray, low_offset: np.ndarray, high_offset: np.ndarray) -> np.ndarray:
    """Calibrated band in the same units as ``pred`` (B,H,3); P10 <= P50 <= P90 is kept."""
    mid = pred[..., 1]
    lo = np.minimum(pred[..., 0] - low_offset[None, :], mid)
    hi = np.maximum(pred[..., 2] + high_offset[None, :], mid)
    return np.stack([lo, mid, hi], axis=-1)


def predict(model: ForecastModel, bank: SeriesBank, origins: np.ndarray) -> np.ndarray:
    """Quantile forecasts (B,H,3) in the load's own unit for every origin, in batches; never negative."""
    pred, scale = raw_predict(model.nets, bank, model.spec, origins)
    calibrated = apply_offsets(pred, model.low_offset, model.high_offset)
    return np.maximum(calibrated * scale[:, None, None], 0.0)


def conformal_offsets(
    pred: np.ndarray, actual: np.ndarray, low: float = TARGET_LOW, high: float = TARGET_HIGH
) -> tuple[np.ndarray, np.ndarray]:
    """Per lead, the offsets that make the share of actuals below P10 ``low`` and above P90 ``1-high`` on
    this holdout (conformalised quantile regression, with the finite-sample level). No floor and no cap:
    a band too wide comes out narrower (negative offsets)."""
    n = pred.shape[0]
    if n == 0:
        raise ValueError("no holdout windows to calibrate on")
    below = pred[..., 0] - actual  # > offset => actual under the calibrated P10
    above = actual - pred[..., 2]
    level_lo = min(1.0, math.ceil((n + 1) * (1 - low)) / n)
    level_hi = min(1.0, math.ceil((n + 1) * high) / n)
    return (
        np.quantile(below, level_lo, axis=0).astype(np.float32),
        np.quantile(above, level_hi, axis=0).astype(np.float32),
    )


def _eval_subset(origins: np.ndarray) -> np.ndarray:
    if len(origins) <= MAX_EVAL_WINDOWS:
        return origins
    return origins[np.linspace(0, len(origins) - 1, MAX_EVAL_WINDOWS).astype(np.int64)]


StepsDone = Callable[[int], None]  # progress: this many more optimiser steps are behind us


def train_member(
    bank: SeriesBank,
    spec: ModelSpec,
    train_origins: np.ndarray,
    val_origins: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    on_steps: StepsDone | None = None,
) -> tuple[QuantileLSTM, dict[str, float]]:
    """One network: ``cfg.max_steps`` optimiser steps on batches drawn at random from ``train_origins``,
    validated every ``cfg.eval_every`` steps; the best validated state is kept."""
    set_determinism(seed, cfg.threads)
    rng = np.random.default_rng(seed)
    net = QuantileLSTM(spec.enc_features, spec.dec_features, spec.hidden, spec.patch)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    val = make_batch(bank, spec, _eval_subset(val_origins))
    assert val.targets is not None
    val_y = torch.from_numpy(val.targets)
    with torch.inference_mode():
        best_loss = float(training_loss(_forward(net, val), val_y, spec.quantiles))  # step 0 = seasonal naive
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    best_step, step = 0, 0
    started = time.monotonic()
    while step < cfg.max_steps:
        net.train()
        b = make_batch(bank, spec, train_origins[rng.integers(0, len(train_origins), cfg.batch_size)])
        assert b.targets is not None
        opt.zero_grad()
        loss = training_loss(_forward(net, b), torch.from_numpy(b.targets), spec.quantiles)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if on_steps is not None:
            on_steps(1)
        if step % cfg.eval_every and step < cfg.max_steps:
            continue
        net.eval()
        with torch.inference_mode():
            val_loss = float(training_loss(_forward(net, val), val_y, spec.quantiles))
        sched.step(val_loss)
        if val_loss < best_loss - 1e-6:
            best_loss, best_step = val_loss, step
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        log.debug("validation", seed=seed, step=step, val_pinball=round(val_loss, 6), best_step=best_step)
        if step - best_step >= cfg.patience_steps or time.monotonic() - started > cfg.max_seconds:
            break
    if on_steps is not None and step < cfg.max_steps:
        on_steps(cfg.max_steps - step)  # stopped early: this member's share is done
    net.load_state_dict(best_state)
    net.eval()
    return net, {"steps": step, "best_step": best_step, "val_pinball": best_loss}


def train(
    bank: SeriesBank,
    spec: ModelSpec,
    train_origins: np.ndarray,
    val_origins: np.ndarray,
    cfg: TrainConfig,
    on_steps: StepsDone | None = None,
) -> TrainResult:
    """Train ``cfg.ensemble`` members; ``on_steps`` hears of ``cfg.ensemble * cfg.max_steps`` steps in all."""
    if len(train_origins) == 0 or len(val_origins) == 0:
        raise ValueError("not enough history to train: no training or validation windows")
    started = time.monotonic()
    nets, member_metrics = [], []
    for i in range(cfg.ensemble):
        net, m = train_member(bank, spec, train_origins, val_origins, cfg, cfg.seed + i, on_steps)
        nets.append(net)
        member_metrics.append(m)
    model = ForecastModel.uncalibrated(spec, nets)
    val_pred, _ = raw_predict(nets, bank, spec, val_origins)
    val_y = make_batch(bank, spec, val_origins).targets
    assert val_y is not None
    raw_cov = float(np.mean((val_y >= val_pred[..., 0]) & (val_y <= val_pred[..., 2])))
    if cfg.calibrate:
        model.low_offset, model.high_offset = conformal_offsets(val_pred, val_y)
    val_mid = val_pred[..., 1]
    naive_mid = make_batch(bank, spec, val_origins).reference
    metrics: dict[str, Any] = {
        "steps": member_metrics[0]["steps"],
        "steps_per_member": [m["steps"] for m in member_metrics],
        "best_step_per_member": [m["best_step"] for m in member_metrics],
        "ensemble": len(nets),
        "val_pinball": round(float(np.mean([m["val_pinball"] for m in member_metrics])), 6),
        "val_mape_pct": round(_mape(val_y, val_mid), 3),
        "val_naive_week_mape_pct": round(_mape(val_y, naive_mid), 3),
        "train_seconds": round(time.monotonic() - started, 1),
        "train_windows": len(train_origins),
        "val_windows": len(val_origins),
        "val_p10_p90_coverage_raw_pct": round(raw_cov * 100, 2),
        "mean_low_offset": round(float(np.mean(model.low_offset)), 5),
        "mean_high_offset": round(float(np.mean(model.high_offset)), 5),
    }
    log.info("trained", **{k: v for k, v in metrics.items() if not isinstance(v, list)})
    return TrainResult(model, metrics)


def _mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(forecast - actual) / np.maximum(np.abs(actual), 1e-6))) * 100
