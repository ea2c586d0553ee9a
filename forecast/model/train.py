"""Training (seeded, deterministic, early stopping on a time-based validation split) and batched inference."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import structlog
import torch

from forecast.model.features import ModelSpec, SeriesBank, make_batch
from forecast.model.net import QuantileLSTM, pinball_loss

TARGET_COVERAGE = 0.80
log = structlog.get_logger("forecast.train")


@dataclass
class TrainConfig:
    seed: int = 7
    max_epochs: int = 30
    patience: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    threads: int = 2
    max_seconds: float = 600.0  # hard cap on wall time; the best epoch so far is kept
    calibrate: bool = False  # widen/narrow the band to 80 % coverage on the validation split (see decision 0302)


@dataclass
class TrainResult:
    net: QuantileLSTM
    band_scale: float
    metrics: dict[str, float] = field(default_factory=dict)


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _raw_predict(
    net: QuantileLSTM, bank: SeriesBank, spec: ModelSpec, origins: np.ndarray, batch: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled predictions (B,H,3) and scales (B,)."""
    preds, scales = [], []
    net.eval()
    with torch.inference_mode():
        for i in range(0, len(origins), batch):
            enc, dec, scale, _ = make_batch(bank, spec, origins[i : i + batch], with_targets=False)
            preds.append(net(torch.from_numpy(enc), torch.from_numpy(dec)).numpy())
            scales.append(scale)
    if not preds:
        return np.zeros((0, spec.horizon, 3), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return np.concatenate(preds), np.concatenate(scales)


def apply_band_scale(pred: np.ndarray, band_scale: float) -> np.ndarray:
    mid = pred[..., 1]
    out = np.stack([mid - band_scale * (mid - pred[..., 0]), mid, mid + band_scale * (pred[..., 2] - mid)], axis=-1)
    return np.maximum(out, 0.0)


def predict(
    net: QuantileLSTM, bank: SeriesBank, spec: ModelSpec, origins: np.ndarray, band_scale: float = 1.0
) -> np.ndarray:
    """Quantile forecasts (B,H,3) in the load's own unit for every origin, in batches."""
    pred, scale = _raw_predict(net, bank, spec, origins)
    return apply_band_scale(pred * scale[:, None, None], band_scale)


def _calibrate(pred: np.ndarray, y: np.ndarray) -> float:
    """Smallest band multiplier whose validation P10-P90 coverage reaches the nominal 80 %."""
    for s in np.arange(0.5, 3.01, 0.02):
        band = apply_band_scale(pred, float(s))
        if ((y >= band[..., 0]) & (y <= band[..., 2])).mean() >= TARGET_COVERAGE:
            return round(float(s), 2)
    return 3.0


def train(
    bank: SeriesBank, spec: ModelSpec, train_origins: np.ndarray, val_origins: np.ndarray, cfg: TrainConfig
) -> TrainResult:
    if len(train_origins) == 0 or len(val_origins) == 0:
        raise ValueError("not enough history to train: no training or validation windows")
    set_determinism(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    net = QuantileLSTM(spec.enc_features, spec.dec_features, spec.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    val = make_batch(bank, spec, val_origins)
    val_enc, val_dec, _, val_y = torch.from_numpy(val[0]), torch.from_numpy(val[1]), val[2], val[3]
    assert val_y is not None
    best_loss, best_state, best_epoch, stale, epochs = math.inf, None, 0, 0, 0
    started = time.monotonic()
    for epoch in range(1, cfg.max_epochs + 1):
        net.train()
        order = rng.permutation(train_origins)
        for i in range(0, len(order), cfg.batch_size):
            enc, dec, _, y = make_batch(bank, spec, order[i : i + cfg.batch_size])
            assert y is not None
            opt.zero_grad()
            loss = pinball_loss(net(torch.from_numpy(enc), torch.from_numpy(dec)), torch.from_numpy(y), spec.quantiles)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        net.eval()
        with torch.inference_mode():
            val_loss = float(pinball_loss(net(val_enc, val_dec), torch.from_numpy(val_y), spec.quantiles))
        sched.step(val_loss)
        epochs = epoch
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
        log.info(
            "epoch",
            epoch=epoch,
            val_pinball=round(val_loss, 6),
            best_epoch=best_epoch,
            seconds=round(time.monotonic() - started, 1),
        )
        if stale >= cfg.patience or time.monotonic() - started > cfg.max_seconds:
            break
    assert best_state is not None
    net.load_state_dict(best_state)
    val_pred, _ = _raw_predict(net, bank, spec, val_origins)
    calibrated = _calibrate(val_pred, val_y)
    band_scale = calibrated if cfg.calibrate else 1.0
    val_mid = val_pred[..., 1]
    val_cov = float(np.mean((val_y >= val_pred[..., 0]) & (val_y <= val_pred[..., 2])))
    return TrainResult(
        net=net,
        band_scale=band_scale,
        metrics={
            "val_pinball": round(best_loss, 6),
            "val_mape_pct": round(float(np.mean(np.abs(val_mid - val_y) / np.maximum(val_y, 1e-6))) * 100, 3),
            "best_epoch": best_epoch,
            "epochs": epochs,
            "train_seconds": round(time.monotonic() - started, 1),
            "train_windows": len(train_origins),
            "val_windows": len(val_origins),
            "band_scale": band_scale,
            "val_p10_p90_coverage_pct": round(val_cov * 100, 2),
            "band_scale_for_80pct_on_val": calibrated,
        },
    )
