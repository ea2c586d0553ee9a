"""Properties of every baseline method on synthetic stationary load: a facility that sheds
nothing shows no reduction; doubling the load doubles baseline and reduction."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr_coordinator.domain import interval_baselines as ib
from dr_coordinator.domain.interval_baselines import Adjustment, Method, Rules
from dr_coordinator.domain.settlement import settle

ZONES = ["America/Los_Angeles", "Australia/Melbourne", "Europe/Berlin", "UTC"]
METHODS = [Method.CAISO_10IN10, Method.PJM_CBL, Method.REGRESSION, Method.FORECAST]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    tz = ZoneInfo(draw(st.sampled_from(ZONES)))
    event_day = date(2026, 1, 1) + timedelta(days=draw(st.integers(70, 360)))
    start_hour = draw(st.integers(8, 20))
    hours = draw(st.integers(1, 3))
    base = draw(st.floats(5.0, 5000.0))
    weekday_amp = draw(st.floats(0.0, 1.0))
    weekend_level = draw(st.floats(0.2, 1.0))
    shed = draw(st.floats(0.0, 0.5))
    return {
        "tz": tz,
        "start": datetime.combine(event_day, time(start_hour), tz),
        "hours": hours,
        "base": base,
        "weekday_amp": weekday_amp,
        "weekend_level": weekend_level,
        "shed": shed,
        "method": draw(st.sampled_from(METHODS)),
        "adjustment": draw(st.sampled_from(list(Adjustment))),
        "interval": draw(st.sampled_from([15, 60])),
    }


def _load(sc: dict[str, object], lt: datetime) -> float:
    """Stationary weekly shape: the same kW at a given local weekday and time every week."""
    base = float(sc["base"])  # type: ignore[arg-type]
    day_shape = 1.0 + float(sc["weekday_amp"]) * math.sin(math.pi * (lt.hour + lt.minute / 60) / 24)  # type: ignore[arg-type]
    level = float(sc["weekend_level"]) if lt.weekday() >= 5 else 1.0  # type: ignore[arg-type]
    return base * level * day_shape


def _run(sc: dict[str, object], scale: float) -> tuple[ib.Baseline, float | None]:
    tz: ZoneInfo = sc["tz"]  # type: ignore[assignment]
    start: datetime = sc["start"]  # type: ignore[assignment]
    end = start + timedelta(hours=int(sc["hours"]))  # type: ignore[call-overload]
    ctx = ib.EventContext(start, end, tz, frozenset(), frozenset())
    shed = float(sc["shed"])  # type: ignore[arg-type]
    readings: dict[datetime, float] = {}
    forecast: dict[datetime, float] = {}
    t = datetime.combine(start.date() - timedelta(days=60), time(0), tz).astimezone(UTC)
    end_utc = datetime.combine(start.astimezone(tz).date() + timedelta(days=1), time(0), tz).astimezone(UTC)
    while t < end_utc:
        kw = _load(sc, t.astimezone(tz)) * scale
        in_event = start <= t < end
        if in_event:
            forecast[t] = kw
        readings[t] = kw * (1 - shed) if in_event else kw
        t += timedelta(minutes=15)
    rules = Rules(
        method=sc["method"],  # type: ignore[arg-type]
        adjustment=sc["adjustment"],  # type: ignore[arg-type]
        interval_minutes=int(sc["interval"]),  # type: ignore[call-overload]
        lookback_days=45,
    )
    b = ib.compute(rules, readings, ctx, forecast_kw=forecast)
    s = settle(b, readings, target_kw=None)
    return b, s.mean_reduction_kw


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_shed_means_no_reduction_and_doubling_doubles(sc: dict[str, object]) -> None:
    no_shed = {**sc, "shed": 0.0}
    b, reduction = _run(no_shed, 1.0)
    assert b.flag is None
    assert all(v is not None for v in b.kw)
    assert reduction is not None
    assert reduction == pytest.approx(0.0, abs=1e-6 * float(sc["base"]))  # type: ignore[arg-type]

    b1, r1 = _run(sc, 1.0)
    b2, r2 = _run(sc, 2.0)
    assert b1.method is b2.method
    for v1, v2 in zip(b1.kw, b2.kw, strict=True):
        assert v1 is not None and v2 is not None
        assert v2 == pytest.approx(2 * v1, rel=1e-9, abs=1e-9)
    assert r1 is not None and r2 is not None
    assert r2 == pytest.approx(2 * r1, rel=1e-9, abs=1e-6)
