"""DR baselines benchmark: how long the pure interval-baseline and settlement maths take per
facility for 60 local days of 15-minute history (5,760 readings), per method, the work the
planning job does for every facility before dispatch (decision 0430) and the settlement job
after each event (decision 0431). I/O (InfluxDB, PostgreSQL) is not included.

Figures: milliseconds per facility (median and p95 over the runs) for each method with 15-minute
intervals over a two-hour event, and the settlement of one facility.
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.common import parser, write_results
from dr_coordinator.domain import interval_baselines as ib
from dr_coordinator.domain.settlement import settle

TZ = ZoneInfo("America/Los_Angeles")


def _history(event_day: date) -> tuple[dict[datetime, float], dict[datetime, float]]:
    readings: dict[datetime, float] = {}
    temps: dict[datetime, float] = {}
    t = datetime.combine(event_day - timedelta(days=60), datetime.min.time(), TZ).astimezone(UTC)
    end = datetime.combine(event_day + timedelta(days=1), datetime.min.time(), TZ).astimezone(UTC)
    while t < end:
        lt = t.astimezone(TZ)
        occupied = lt.weekday() < 5 and 8 <= lt.hour < 19
        temp = 18 + 8 * math.sin(math.pi * lt.hour / 24) + (lt.day % 5)
        readings[t] = 150 + (200 if occupied else 0) + 3 * max(0.0, temp - 20)
        temps[t] = temp
        t += timedelta(minutes=15)
    return readings, temps


def _time(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def main(quick: bool) -> None:
    runs = 5 if quick else 30
    event_day = date(2026, 9, 8)
    start = datetime(2026, 9, 8, 16, tzinfo=TZ)
    readings, temps = _history(event_day)
    ctx = ib.EventContext(start, start + timedelta(hours=2), TZ, frozenset(), ib.holiday_dates("US", "CA", {2026}))
    figures: dict[str, float] = {"history_readings": float(len(readings))}
    for method in (ib.Method.CAISO_10IN10, ib.Method.PJM_CBL, ib.Method.REGRESSION):
        rules = ib.Rules(method=method)
        ms = _time(lambda rules=rules: ib.compute(rules, readings, ctx, temperature_c=temps), runs)
        figures[f"{method.value}_ms_p50"] = round(statistics.median(ms), 2)
        figures[f"{method.value}_ms_p95"] = round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2)
    b = ib.compute(ib.Rules(), readings, ctx)
    ms = _time(lambda: settle(b, readings, 40.0), runs)
    figures["settlement_ms_p50"] = round(statistics.median(ms), 3)
    units = {k: "ms" if "_ms" in k else "count" for k in figures}
    write_results(
        "dr_baselines",
        figures,
        units,
        quick,
        {"caiso_10in10_ms_p95": "< 500 (20 facilities planned within the 60 s dispatch lead)"},
        notes="Pure domain maths on one core of a 2-core machine shared with other work; excludes reading "
        "the history from InfluxDB.",
    )


if __name__ == "__main__":
    main(parser(__doc__ or "").parse_args().quick)
