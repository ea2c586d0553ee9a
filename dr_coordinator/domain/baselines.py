"""Live measurement helpers while an event is active (DR-8). Pure.

Baselines themselves are per interval in the facility's local time:
``dr_coordinator/domain/interval_baselines.py`` (decision 0430).
"""

from __future__ import annotations


def achieved_reduction_kw(baseline_kw: float, actual_kw: float) -> float:
    return baseline_kw - actual_kw


def underperforming(achieved_kw: float, target_kw: float, ratio: float) -> bool:
    return target_kw > 0 and achieved_kw < ratio * target_kw
