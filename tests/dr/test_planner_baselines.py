"""Reduction planner (comfort limits, plant model, DR-7 guardrail) and customer baselines (DR-8). Pure."""

from __future__ import annotations

import pytest

from dr_coordinator.domain.baselines import underperforming
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


# --- live measurement (interval baselines: test_interval_baselines.py) -------------------------


def test_underperformance_alert_below_80_percent_of_target() -> None:
    assert underperforming(7.9, 10.0, 0.8)
    assert not underperforming(8.0, 10.0, 0.8)
    assert not underperforming(0.0, 0.0, 0.8)
