"""PostgreSQL persistence of the backtest decisions (``forecast_gates``, decision 0940): a restarted
service reads the decisions still valid instead of backtesting every facility again."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from forecast.engine import GATE_MAX_AGE, GateResult

_LOAD_SQL = """
SELECT DISTINCT ON (facility_id) facility_id, model_version, use_model, model_mape_pct, naive_mape_pct, windows,
       low_offset, high_offset, decided_at
FROM forecast_gates
WHERE facility_id = ANY($1::text[]) AND model_version = ANY($2::text[]) AND decided_at > $3 AND decided_at <= $4
ORDER BY facility_id, decided_at DESC
"""

_SAVE_SQL = """
INSERT INTO forecast_gates (facility_id, model_version, use_model, model_mape_pct, naive_mape_pct, windows,
                            low_offset, high_offset, decided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (facility_id, model_version) DO UPDATE SET
    use_model = EXCLUDED.use_model, model_mape_pct = EXCLUDED.model_mape_pct,
    naive_mape_pct = EXCLUDED.naive_mape_pct, windows = EXCLUDED.windows, low_offset = EXCLUDED.low_offset,
    high_offset = EXCLUDED.high_offset, decided_at = EXCLUDED.decided_at
WHERE forecast_gates.decided_at <= EXCLUDED.decided_at
"""

_PRUNE_SQL = "DELETE FROM forecast_gates WHERE decided_at < $1"


def _offsets(values: Sequence[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


async def load_gates(
    pool: Any, facility_ids: Sequence[str], model_versions: Iterable[str], now: datetime
) -> dict[str, GateResult]:
    """The newest decision per facility about one of ``model_versions``, made within GATE_MAX_AGE before
    ``now`` (the caller still applies :func:`forecast.engine.gate_expired`)."""
    versions = sorted(set(model_versions))
    if not facility_ids or not versions:
        return {}
    rows = await pool.fetch(_LOAD_SQL, list(facility_ids), versions, now - GATE_MAX_AGE, now)
    return {
        r["facility_id"]: GateResult(
            use_model=r["use_model"],
            model_mape_pct=math.nan if r["model_mape_pct"] is None else r["model_mape_pct"],
            naive_mape_pct=math.nan if r["naive_mape_pct"] is None else r["naive_mape_pct"],
            windows=r["windows"],
            low_offset=_offsets(r["low_offset"]),
            high_offset=_offsets(r["high_offset"]),
            decided_at=r["decided_at"],
            model_version=r["model_version"],
        )
        for r in rows
    }


async def save_gates(pool: Any, gates: Iterable[tuple[str, GateResult]], now: datetime) -> int:
    """Upsert the decisions (only those made by a backtest against a named model) and delete decisions
    older than GATE_MAX_AGE; returns the number of decisions written."""
    rows = [
        (
            fid,
            g.model_version,
            g.use_model,
            g.model_mape_pct,
            g.naive_mape_pct,
            g.windows,
            None if g.low_offset is None else [float(v) for v in g.low_offset],
            None if g.high_offset is None else [float(v) for v in g.high_offset],
            g.decided_at,
        )
        for fid, g in gates
        if g.model_version is not None and g.decided_at is not None
    ]
    async with pool.acquire() as conn, conn.transaction():
        if rows:
            await conn.executemany(_SAVE_SQL, rows)
        await conn.execute(_PRUNE_SQL, now - GATE_MAX_AGE)
    return len(rows)
