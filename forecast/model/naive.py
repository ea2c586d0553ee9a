"""Seasonal-naive forecast (the fallback when no trained model exists or the model fails). Pure numpy."""

from __future__ import annotations

import numpy as np


def seasonal_naive(history: np.ndarray, horizon: int, steps_per_day: int) -> np.ndarray:
    """(horizon, 3) P10/P50/P90: P50 = same time last week (or yesterday when history is shorter);
    the band comes from the spread of that method's own relative errors over the history."""
    week = 7 * steps_per_day
    n = len(history)
    if n == 0:
        raise ValueError("no history")
    lag = week if n >= week else (steps_per_day if n >= steps_per_day else n)
    idx = n - lag + (np.arange(horizon) % lag)
    p50 = np.maximum(history[idx], 0.0)
    if n > lag + steps_per_day:
        actual = history[lag:]
        base = history[:-lag]
        rel = (actual - base) / np.maximum(np.abs(base), 1e-6)
        lo, hi = np.quantile(rel, [0.1, 0.9])
    else:
        lo, hi = -0.15, 0.15
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    return np.stack([np.maximum(p50 * (1 + lo), 0.0), p50, p50 * (1 + hi)], axis=-1)
