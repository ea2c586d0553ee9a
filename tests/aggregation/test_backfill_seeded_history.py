"""A backfill never replays seeded history through the rollup worker (decision 0950).

Seeded history (decision 0820) is one reading per meter every 15 minutes, written straight to InfluxDB.
The worker rolls readings up at its nominal 15 s spacing, so a replay would count each reading as 15 s
of energy (1/60 of it) and overwrite the correct rollups. The backfill refuses any range that overlaps a
facility's seeded span, with a reason that names the span and the spacing; a range after it is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from aggregation.backfill import BackfillRefusedError, backfill
from aggregation.domain.backfill_rules import SeededSpan, backfill_refusal
from energy.seed_history import seed_history
from tests.foundation.test_seed_history import _fleet, _register

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SPAN = SeededSpan("fac-x", T0, T0 + timedelta(days=2), 900.0)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end", "refused"),
    [
        (T0 - 2 * H, T0, False),  # ends where the history starts
        (T0 - H, T0 + timedelta(minutes=15), True),  # reaches into its first quarter
        (T0 + 5 * H, T0 + 6 * H, True),  # inside
        (T0 + timedelta(days=2) - H, T0 + timedelta(days=3), True),  # reaches past its end
        (T0 + timedelta(days=2), T0 + timedelta(days=3), False),  # starts where it ends: live data only
    ],
)
def test_a_range_overlapping_the_seeded_span_is_refused(start, end, refused) -> None:
    assert (backfill_refusal(SPAN, start, end, 15.0) is not None) is refused


def test_the_reason_names_the_span_the_spacing_and_the_undercount() -> None:
    reason = backfill_refusal(SPAN, T0, T0 + H, 15.0)
    assert reason is not None
    assert "2026-11-01T00:00:00+00:00..2026-11-03T00:00:00+00:00" in reason
    assert "every 900 s" in reason and "as 15 s" in reason and "60x" in reason  # 900 / 15, by hand
    assert "from 2026-11-03T00:00:00+00:00 on" in reason


def test_no_history_or_the_workers_own_spacing_is_never_refused() -> None:
    assert backfill_refusal(None, T0, T0 + H, 15.0) is None
    assert backfill_refusal(SeededSpan("fac-x", T0, T0 + H, 15.0), T0, T0 + H, 15.0) is None


@pytest.mark.asyncio(loop_scope="session")
async def test_backfill_over_seeded_history_is_refused_and_after_it_runs(
    stack, settings, pg_pool, uid, tmp_path
) -> None:
    fleet = _fleet(uid)[:1]
    await _register(pg_pool, fleet)
    fid = fleet[0].facility_id
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    s = settings.model_copy(
        update={"aggregation": settings.aggregation.model_copy(update={"archive_uri": str(tmp_path / "archive")})}
    )
    try:
        await seed_history(settings, days=1, now=now, fleet=fleet)
        with pytest.raises(BackfillRefusedError) as refused:
            await backfill(s, fid, now - 2 * H, now - H, "archive", wait_s=0)
        assert fid in str(refused.value) and "every 900 s" in str(refused.value)
        # After the history: nothing in the (empty) archive, nothing published, nothing refused.
        after = await backfill(s, fid, now, now + H, "archive", wait_s=0)
        assert (after.readings, after.rolled_up) == (0, True)

        # The command: one line on stderr, exit 2, nothing on stdout.
        env = {**os.environ, "ENERGY_AGGREGATION__ARCHIVE_URI": str(tmp_path / "archive")}
        cmd = [sys.executable, "-m", "energy.cli", "aggregation", "backfill", "--facility", fid]
        cmd += ["--from", (now - 2 * H).isoformat(), "--to", (now - H).isoformat(), "--wait-s", "0"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout == ""
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "refusing to backfill" in lines[0] and "60x" in lines[0], done.stderr
    finally:
        await pg_pool.execute("DELETE FROM facilities WHERE facility_id = $1", fid)
