"""Backtest decisions persisted in PostgreSQL (forecast_gates, migration 0740): what a restarted service
may reuse, and what it must not."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from forecast.engine import GateResult
from forecast.gates import load_gates, save_gates

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _gate(version: str | None, decided_at: datetime | None, use_model: bool = True, offsets: bool = True) -> GateResult:
    low = np.array([0.01, -0.02, 0.03], dtype=np.float32) if offsets else None
    high = np.array([0.04, 0.05, -0.06], dtype=np.float32) if offsets else None
    return GateResult(use_model, 3.5, 4.25, 14, low, high, decided_at, version)


async def test_a_saved_decision_reads_back_with_its_offsets(pg_pool, make_facility) -> None:
    fid = await make_facility()
    written = await save_gates(pg_pool, [(fid, _gate("platform-v1", NOW - timedelta(hours=1)))], NOW)
    assert written == 1
    got = (await load_gates(pg_pool, [fid], ["platform-v1"], NOW))[fid]
    assert got.use_model is True and got.model_mape_pct == 3.5 and got.naive_mape_pct == 4.25 and got.windows == 14
    assert got.decided_at == NOW - timedelta(hours=1) and got.model_version == "platform-v1"
    assert got.low_offset is not None and got.high_offset is not None
    assert np.allclose(got.low_offset, [0.01, -0.02, 0.03]) and np.allclose(got.high_offset, [0.04, 0.05, -0.06])


async def test_a_decision_without_offsets_or_with_nan_backtest_figures_round_trips(pg_pool, make_facility) -> None:
    fid = await make_facility()
    gate = GateResult(False, math.nan, math.nan, 2, None, None, NOW, "platform-v1")
    await save_gates(pg_pool, [(fid, gate)], NOW)
    got = (await load_gates(pg_pool, [fid], ["platform-v1"], NOW))[fid]
    assert got.use_model is False and got.windows == 2 and got.low_offset is None and got.high_offset is None
    assert math.isnan(got.model_mape_pct) and math.isnan(got.naive_mape_pct)


async def test_only_decisions_about_the_current_models_and_younger_than_a_week_are_read(pg_pool, make_facility) -> None:
    other_model, too_old, fine = await make_facility(), await make_facility(), await make_facility()
    await save_gates(
        pg_pool,
        [
            (other_model, _gate("platform-v0", NOW - timedelta(hours=1))),
            (too_old, _gate("platform-v1", NOW - timedelta(days=7, minutes=1))),
            (fine, _gate("platform-v1", NOW - timedelta(days=6, hours=23))),
        ],
        NOW - timedelta(days=7, minutes=1),  # pruning relative to the oldest, so all three are written
    )
    got = await load_gates(pg_pool, [other_model, too_old, fine], ["platform-v1", "platform-30m-v1"], NOW)
    assert set(got) == {fine}


async def test_hand_set_decisions_are_not_saved_and_old_ones_are_pruned(pg_pool, make_facility) -> None:
    by_hand, old = await make_facility(), await make_facility()
    await save_gates(pg_pool, [(old, _gate("platform-v1", NOW - timedelta(days=8)))], NOW - timedelta(days=8))
    assert await pg_pool.fetchval("SELECT count(*) FROM forecast_gates WHERE facility_id = $1", old) == 1
    written = await save_gates(pg_pool, [(by_hand, _gate(None, None)), (by_hand, _gate("platform-v1", None))], NOW)
    assert written == 0
    counts = await pg_pool.fetch(
        "SELECT facility_id FROM forecast_gates WHERE facility_id = ANY($1::text[])", [by_hand, old]
    )
    assert counts == []  # nothing written, and the 8-day-old decision deleted


async def test_an_older_decision_never_overwrites_a_newer_one(pg_pool, make_facility) -> None:
    fid = await make_facility()
    await save_gates(pg_pool, [(fid, _gate("platform-v1", NOW, use_model=True))], NOW)
    await save_gates(pg_pool, [(fid, _gate("platform-v1", NOW - timedelta(hours=2), use_model=False))], NOW)
    got = (await load_gates(pg_pool, [fid], ["platform-v1"], NOW))[fid]
    assert got.use_model is True and got.decided_at == NOW
    await save_gates(pg_pool, [(fid, _gate("platform-v1", NOW + timedelta(hours=1), use_model=False))], NOW)
    got = (await load_gates(pg_pool, [fid], ["platform-v1"], NOW + timedelta(hours=1)))[fid]
    assert got.use_model is False and got.decided_at == NOW + timedelta(hours=1)
