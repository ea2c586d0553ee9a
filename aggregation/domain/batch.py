"""Rollups of 15-minute interval readings, computed as arrays (pure; decision 0820).

The worker's :class:`~aggregation.domain.state.FacilityState` answers "which windows did this
reading change" for a stream and rebuilds a quarter from its 15 minutes; for a bulk of interval
readings (the seeded history: a million readings, one per meter and quarter hour) that costs
~100 us per reading in Python. Here the same rules (decision 0201) are applied to whole columns,
for the case they reduce to when every reading sits at the start of its own quarter hour and the
nominal interval is the quarter hour (``RollupParams(interval_s=900)``):

- a valid reading holds its power for the whole quarter (the next valid reading is at least 15 min
  later): ``energy = p * 900 / 3600``, covered 900 s, coverage 1, ``avg = min = max = p``;
- its register increase is over the meter's previous valid reading, if at most
  ``max_register_gap_s`` older and positive;
- a quarter whose only reading is flagged has no rollup; its flag counts in the hour;
- an hour combines its quarters (sums; min/max; coverage = covered / 3600);
- a facility window sums its meters' rollups, coverage is their mean, min/max are of the
  facility total per quarter (the sum of the valid readings of that quarter).

``tests/aggregation/test_batch_rollups.py`` checks the result equals the worker's state machine on
the same readings (gaps, flags, outages), window by window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

QUARTER_S = 900
HOUR_S = 3600
FIELDS = (
    "anomaly_count",
    "avg_kw",
    "coverage",
    "energy_kwh",
    "energy_register_kwh",
    "max_kw",
    "min_kw",
    "sample_count",
)


@dataclass(frozen=True)
class MeterColumns:
    meter_id: str
    ts_s: npt.NDArray[np.int64]  # sorted, distinct, on the quarter-hour grid
    power_kw: npt.NDArray[np.float64]
    register_kwh: npt.NDArray[np.float64]
    valid: npt.NDArray[np.bool_]  # False: flagged by ingestion (counted, never rolled up)


def _meter_quarters(m: MeterColumns, max_register_gap_s: float) -> pd.DataFrame:
    if np.any(m.ts_s % QUARTER_S):
        raise ValueError(f"{m.meter_id}: interval readings must sit on the quarter-hour grid")
    if np.any(np.diff(m.ts_s) <= 0):
        raise ValueError(f"{m.meter_id}: readings must be sorted, one per quarter hour")
    valid = m.valid
    # The previous valid reading of each reading (index into the arrays; -1 when none).
    idx = np.where(valid, np.arange(len(valid)), -1)
    prev_valid = np.maximum.accumulate(np.concatenate(([-1], idx[:-1]))) if len(idx) else idx
    has_prev = prev_valid >= 0
    prev_ts = np.where(has_prev, m.ts_s[np.maximum(prev_valid, 0)], 0)
    prev_reg = np.where(has_prev, m.register_kwh[np.maximum(prev_valid, 0)], 0.0)
    increase = has_prev & (m.ts_s - prev_ts <= max_register_gap_s) & (m.register_kwh > prev_reg)
    energy = np.where(valid, m.power_kw * float(QUARTER_S) / 3600.0, 0.0)
    return pd.DataFrame(
        {
            "meter_id": m.meter_id,
            "start": m.ts_s,
            "energy_kwh": energy,
            "covered_s": np.where(valid, float(QUARTER_S), 0.0),
            "count": valid.astype(np.int64),
            "min_kw": np.where(valid, m.power_kw, np.inf),
            "max_kw": np.where(valid, m.power_kw, -np.inf),
            "register_kwh": np.where(valid & increase, m.register_kwh - prev_reg, 0.0),
            "anomalies": (~valid).astype(np.int64),
        }
    )


def _rollups(parts: pd.DataFrame, window_s: int) -> pd.DataFrame:
    """Partials to rollup fields (the rules of ``rollup.to_rollup``); windows without a valid reading dropped."""
    p = parts[parts["count"] > 0]
    return pd.DataFrame(
        {
            "meter_id": p["meter_id"].to_numpy(),
            "start": p["start"].to_numpy(),
            "anomaly_count": p["anomalies"].to_numpy(),
            "avg_kw": (p["energy_kwh"] * 3600.0 / p["covered_s"]).to_numpy(),
            "coverage": np.minimum(1.0, p["covered_s"] / window_s).to_numpy(),
            "energy_kwh": p["energy_kwh"].to_numpy(),
            "energy_register_kwh": p["register_kwh"].to_numpy(),
            "max_kw": p["max_kw"].to_numpy(),
            "min_kw": p["min_kw"].to_numpy(),
            "sample_count": p["count"].to_numpy(),
        }
    )


def _facility(meter_rollups: pd.DataFrame, slot_totals: pd.Series, window_s: int) -> pd.DataFrame:
    """Facility rollups of one window size from its meters' rollups and the per-quarter totals."""
    g = meter_rollups.groupby("start", sort=True)
    out = g.agg(
        anomaly_count=("anomaly_count", "sum"),
        avg_kw=("avg_kw", "sum"),
        coverage=("coverage", "mean"),
        energy_kwh=("energy_kwh", "sum"),
        energy_register_kwh=("energy_register_kwh", "sum"),
        sample_count=("sample_count", "sum"),
    )
    window_of_slot = slot_totals.index.to_numpy() - slot_totals.index.to_numpy() % window_s
    mm = slot_totals.groupby(window_of_slot).agg(["min", "max"])
    out["max_kw"] = mm["max"].reindex(out.index)
    out["min_kw"] = mm["min"].reindex(out.index)
    out = out[out["max_kw"].notna()].reset_index()
    out.insert(0, "meter_id", None)
    return out


def interval_rollups(
    meters: Sequence[MeterColumns], max_register_gap_s: float
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """``{"15m": (meter rollups, facility rollups), "1h": (...)}`` of one facility's interval readings.
    Columns: ``meter_id`` (None for the facility), ``start`` (epoch seconds) and :data:`FIELDS`."""
    if not meters:
        empty = pd.DataFrame(columns=["meter_id", "start", *FIELDS])
        return {"15m": (empty, empty), "1h": (empty, empty)}
    quarters = pd.concat([_meter_quarters(m, max_register_gap_s) for m in meters], ignore_index=True)
    valid = quarters[quarters["count"] > 0]
    slot_totals = valid.groupby("start")["max_kw"].sum()  # max_kw of a valid quarter = its power
    hour_parts = (
        quarters.assign(start=quarters["start"] - quarters["start"] % HOUR_S)
        .groupby(["meter_id", "start"], sort=True)
        .agg(
            energy_kwh=("energy_kwh", "sum"),
            covered_s=("covered_s", "sum"),
            count=("count", "sum"),
            min_kw=("min_kw", "min"),
            max_kw=("max_kw", "max"),
            register_kwh=("register_kwh", "sum"),
            anomalies=("anomalies", "sum"),
        )
        .reset_index()
    )
    out = {}
    for window, parts, size in (("15m", quarters, QUARTER_S), ("1h", hour_parts, HOUR_S)):
        meter_rollups = _rollups(parts, size)
        out[window] = (meter_rollups, _facility(meter_rollups, slot_totals, size))
    return out
