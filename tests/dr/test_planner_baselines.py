"""Reduction planner (comfort limits, plant model, DR-7 guardrail) and customer baselines (DR-8). Pure."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from dr_coordinator.domain.baselines import (
    DayLoad,
    InsufficientHistoryError,
    caiso_10in10,
    eligible_days,
    forecast_baseline,
    pjm_high4of5,
    underperforming,
)
from dr_coordinator.domain.planner import (
    ForecastInfo,
    Strategy,
    ZoneSpec,
    choose_strategy,
    facility_targets,
    plan_facility,
)
from energy.fleet import build_fleet
from sim.building_model import hvac_factor, lighting_factor

FAC = build_fleet(20, 10)[0]  # fac-001, an office
ZONES = [
    ZoneSpec(z.zone_id, z.kind, z.rated_kw, z.normal_setpoint_c, z.max_setpoint_c, z.min_lighting_pct, z.shed_priority)
    for z in FAC.zones
]


def simulated_shed(actions: tuple, load_factor: float) -> float:  # type: ignore[type-arg]
    """What the simulated building actually sheds for a plan (sim.building_model)."""
    zones = {z.zone_id: z for z in ZONES}
    shed = 0.0
    for a in actions:
        z = zones[a.zone_id]
        load = z.rated_kw * load_factor
        if a.action == "set_setpoint":
            shed += load * (1 - hvac_factor(a.value, z.normal_setpoint_c))
        else:
            shed += load * (1 - lighting_factor(a.value))
    return shed


@pytest.mark.parametrize("target", [5.0, 20.0, 40.0])
def test_plan_sheds_the_target_on_the_plant_model(target: float) -> None:
    plan = plan_facility(
        FAC.facility_id,
        ZONES,
        target_kw=target,
        expected_kw=FAC.peak_kw,
        peak_kw=FAC.peak_kw,
        strategy=Strategy.FORECAST,
    )
    assert plan.planned_shed_kw >= target - 1e-6
    assert simulated_shed(plan.actions, 1.0) == pytest.approx(plan.planned_shed_kw, rel=1e-6)


def test_plan_never_crosses_comfort_limits_and_reports_shortfall() -> None:
    plan = plan_facility(
        FAC.facility_id,
        ZONES,
        target_kw=10_000,
        expected_kw=FAC.peak_kw,
        peak_kw=FAC.peak_kw,
        strategy=Strategy.FORECAST,
    )
    zones = {z.zone_id: z for z in ZONES}
    for a in plan.actions:
        z = zones[a.zone_id]
        if a.action == "set_setpoint":
            assert z.normal_setpoint_c < a.value <= z.max_setpoint_c
        else:
            assert z.min_lighting_pct <= a.value < 100
    assert plan.shortfall_kw > 0
    assert len(plan.actions) == len(ZONES)


def test_plan_uses_hvac_by_shed_priority_before_lighting() -> None:
    plan = plan_facility(
        FAC.facility_id, ZONES, target_kw=3.0, expected_kw=FAC.peak_kw, peak_kw=FAC.peak_kw, strategy=Strategy.FORECAST
    )
    assert [a.zone_id for a in plan.actions] == ["hvac-1"]


def test_fixed_percentage_fallback_raises_every_hvac_zone_and_leaves_lights() -> None:
    plan = plan_facility(
        FAC.facility_id,
        ZONES,
        target_kw=1.0,
        expected_kw=FAC.peak_kw,
        peak_kw=FAC.peak_kw,
        strategy=Strategy.FIXED_PERCENTAGE,
        fallback_fraction=0.15,
    )
    hvac = [z for z in ZONES if z.kind == "hvac"]
    assert {a.zone_id for a in plan.actions} == {z.zone_id for z in hvac}
    assert all(a.action == "set_setpoint" and a.value == 23.5 for a in plan.actions)  # 0.15/0.12 -> 1.5 degC step


@pytest.mark.parametrize(
    ("info", "policy", "expected"),
    [
        (ForecastInfo(100.0, "full", 600), "fixed_percentage", Strategy.FORECAST),
        (ForecastInfo(100.0, "degraded_no_weather", 600), "fixed_percentage", Strategy.FIXED_PERCENTAGE),
        (ForecastInfo(100.0, "full", 999_999), "fixed_percentage", Strategy.FIXED_PERCENTAGE),
        (ForecastInfo(None, None, None), "fixed_percentage", Strategy.FIXED_PERCENTAGE),
        (ForecastInfo(100.0, "degraded_stale_data", 60), "hold", Strategy.HOLD),
        (ForecastInfo(None, None, None), "hold", Strategy.HOLD),
    ],
)
def test_forecast_guardrail_by_policy(info: ForecastInfo, policy: str, expected: Strategy) -> None:
    assert choose_strategy(info, policy, max_age_s=6 * 3600) is expected


def test_hold_plan_has_no_actions() -> None:
    plan = plan_facility("f", ZONES, target_kw=10, expected_kw=100, peak_kw=100, strategy=Strategy.HOLD)
    assert plan.actions == () and plan.strategy is Strategy.HOLD


def test_targets_split_by_expected_load_for_kw_import_limit_and_level() -> None:
    expected = {"a": 300.0, "b": 100.0}
    assert facility_targets(expected, shed_kw=40) == {"a": 30.0, "b": 10.0}
    assert facility_targets(expected, import_limit_kw=360) == {"a": 30.0, "b": 10.0}
    assert facility_targets(expected, level=2, level_fraction=0.1) == {"a": 60.0, "b": 20.0}


# --- baselines ---------------------------------------------------------------------------------

EVENT_DAY = date(2026, 7, 15)  # a Wednesday


def weekdays_before(n: int, kw: float = 100.0, adj: float | None = 80.0) -> list[DayLoad]:
    out, d = [], EVENT_DAY
    while len(out) < n:
        d -= timedelta(days=1)
        if d.weekday() < 5:
            out.append(DayLoad(d, kw, adj))
    return out


def test_eligible_days_skip_weekends_event_days_and_old_days() -> None:
    days = [
        *weekdays_before(3),
        DayLoad(date(2026, 7, 12), 999),  # Sunday
        DayLoad(date(2026, 5, 1), 999),  # beyond 45 days
        DayLoad(date(2026, 7, 13), 999, event_day=True),
    ]
    assert [d.event_window_kw for d in eligible_days(days, EVENT_DAY)] == [100.0, 100.0, 100.0]


def test_caiso_uses_the_10_most_recent_eligible_days() -> None:
    days = weekdays_before(10, kw=100.0) + [
        DayLoad(d.day - timedelta(days=20), 500.0, 80.0) for d in weekdays_before(3)
    ]
    b = caiso_10in10(days, EVENT_DAY, day_of_adjustment_kw=None)
    assert b.kw == pytest.approx(100.0) and len(b.days_used) == 10


def test_caiso_day_of_adjustment_is_capped_at_20_percent() -> None:
    days = weekdays_before(10, kw=100.0, adj=80.0)
    assert caiso_10in10(days, EVENT_DAY, 88.0).kw == pytest.approx(110.0)  # +10 %
    assert caiso_10in10(days, EVENT_DAY, 160.0).kw == pytest.approx(120.0)  # +100 % capped to +20 %
    assert caiso_10in10(days, EVENT_DAY, 8.0).kw == pytest.approx(80.0)  # -90 % capped to -20 %


def test_pjm_takes_the_highest_4_of_the_last_5_and_adds_the_offset() -> None:
    loads = [100.0, 120.0, 80.0, 110.0, 90.0, 500.0]  # the 6th is older than the 5-day window
    days = [DayLoad(d.day, kw, 50.0) for d, kw in zip(weekdays_before(6), loads, strict=True)]
    b = pjm_high4of5(days, EVENT_DAY, None)
    assert b.kw == pytest.approx((100 + 120 + 110 + 90) / 4)
    assert pjm_high4of5(days, EVENT_DAY, 60.0).kw == pytest.approx(105.0 + 10.0)


def test_baselines_without_history_raise() -> None:
    with pytest.raises(InsufficientHistoryError):
        caiso_10in10([], EVENT_DAY, None)
    with pytest.raises(InsufficientHistoryError):
        pjm_high4of5([DayLoad(date(2026, 7, 11), 1.0)], EVENT_DAY, None)  # a Saturday only
    assert forecast_baseline([90.0, 110.0]).kw == 100.0


def test_underperformance_alert_below_80_percent_of_target() -> None:
    assert underperforming(7.9, 10.0, 0.8)
    assert not underperforming(8.0, 10.0, 0.8)
    assert not underperforming(0.0, 0.0, 0.8)
