"""The array rollups of 15-minute interval readings equal the worker's state machine on the same
readings (decision 0820): every 15m and 1h meter and facility rollup, gaps, flags and all."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aggregation.domain.batch import FIELDS, MeterColumns, interval_rollups
from aggregation.domain.rollup import NS, Sample
from aggregation.domain.state import HOUR_NS, FacilityState, RollupParams, rollups_for

T0 = 1_790_000_100 - 1_790_000_100 % 3600  # an hour boundary


def _readings(seed: int) -> list[MeterColumns]:
    """Three meters over a day and a half of quarter hours, with outages (missing quarters, some
    longer than the register gap), flagged readings and a register reset."""
    rng = random.Random(seed)
    meters = []
    for m in range(3):
        ts, kw, reg, ok = [], [], [], []
        register = 1000.0 * (m + 1)
        for q in range(36 * 4):
            register += rng.uniform(0, 30)
            if rng.random() < 0.1 or 40 <= q < 46 + m:  # scattered and a 1.5 h+ outage
                continue
            if q == 90 and m == 1:
                register = 5.0  # meter exchanged: the register starts again
            ts.append(T0 + q * 900)
            kw.append(round(rng.uniform(0, 120), 3))
            reg.append(round(register, 4))
            ok.append(rng.random() > 0.07)
        meters.append(MeterColumns(f"fac-x-m{m}", np.array(ts), np.array(kw), np.array(reg), np.array(ok, dtype=bool)))
    return meters


def _worker_rollups(meters: list[MeterColumns], params: RollupParams) -> dict[tuple[str | None, str, int], dict]:
    state = FacilityState("fac-x", params)
    first, last = T0 * NS // HOUR_NS - 1, (T0 + 40 * 3600) * NS // HOUR_NS
    state.load(range(first, last + 1), [])
    touched: set[tuple[str, int]] = set()
    for m in meters:
        for t, p, r, ok in zip(
            m.ts_s.tolist(), m.power_kw.tolist(), m.register_kwh.tolist(), m.valid.tolist(), strict=True
        ):
            touched |= state.merge(m.meter_id, Sample(t * NS, p, r, ok))
    return {
        (row.meter_id, row.key.window, row.key.start_ns // NS): row.rollup.fields()
        for row in rollups_for(state, touched)
        if row.key.window in ("15m", "1h")
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interval_rollups_equal_the_workers(seed: int) -> None:
    meters = _readings(seed)
    expected = _worker_rollups(meters, RollupParams(interval_s=900.0, max_register_gap_s=3600.0))
    got: dict[tuple[str | None, str, int], dict] = {}
    for window, frames in interval_rollups(meters, max_register_gap_s=3600.0).items():
        for frame in frames:
            for row in frame.to_dict("records"):
                key = (None if row["meter_id"] is None else str(row["meter_id"]), window, int(row["start"]))
                got[key] = {f: row[f] for f in FIELDS}
    assert set(got) == set(expected)
    assert any(k[0] is None and k[1] == "1h" for k in got) and any(k[0] and k[1] == "15m" for k in got)
    for key, fields in expected.items():
        for name, value in fields.items():
            assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name)
    # the flags and the reset are in the data, so the comparison covered them
    assert any(f["anomaly_count"] for k, f in expected.items() if k[1] == "1h")
    assert any(f["energy_register_kwh"] == 0 for k, f in expected.items() if k[0] and k[1] == "15m")


def test_off_grid_or_unsorted_readings_are_refused() -> None:
    off = MeterColumns("m", np.array([T0 + 60]), np.array([1.0]), np.array([1.0]), np.array([True]))
    with pytest.raises(ValueError, match="grid"):
        interval_rollups([off], 3600.0)
    unsorted = MeterColumns(
        "m", np.array([T0 + 900, T0]), np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([True, True])
    )
    with pytest.raises(ValueError, match="sorted"):
        interval_rollups([unsorted], 3600.0)
