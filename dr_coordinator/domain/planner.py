"""Reduction plan per facility: which HVAC setpoints to raise and lights to dim to shed a target.

Plant model: the simulated buildings' (``sim.building_model``): an HVAC zone sheds
``HVAC_SHED_PER_DEGREE`` of its load per degree C above its normal setpoint; a lighting zone
sheds in proportion to dimming. Comfort limits come from the zone (``max_setpoint_c``,
``min_lighting_pct``). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from dr_coordinator.domain.schedule import IntervalAsk
from sim.building_model import HVAC_SHED_PER_DEGREE

SETPOINT_STEP_C = 0.5


class Strategy(StrEnum):
    FORECAST = "forecast"  # targeted plan from a good forecast
    FIXED_PERCENTAGE = "fixed_percentage"  # guardrail fallback: every HVAC zone sheds a fixed share
    HOLD = "hold"  # guardrail: not dispatched until an operator overrides


@dataclass(frozen=True)
class ZoneSpec:
    zone_id: str
    kind: str  # hvac | lighting
    rated_kw: float
    normal_setpoint_c: float | None = None
    max_setpoint_c: float | None = None
    min_lighting_pct: float | None = None
    shed_priority: int = 5


@dataclass(frozen=True)
class ZoneAction:
    zone_id: str
    action: str  # set_setpoint | set_lighting
    value: float
    shed_kw: float


@dataclass(frozen=True)
class FacilityPlan:
    facility_id: str
    strategy: Strategy
    target_kw: float
    expected_kw: float
    planned_shed_kw: float
    actions: tuple[ZoneAction, ...]

    @property
    def shortfall_kw(self) -> float:
        return max(0.0, self.target_kw - self.planned_shed_kw)


@dataclass(frozen=True)
class ForecastInfo:
    """What we know about the facility's expected load during the event."""

    expected_kw: float | None
    quality: str | None  # full | degraded_no_weather | degraded_stale_data | None (no forecast)
    age_s: float | None  # seconds since the forecast run


def choose_strategy(info: ForecastInfo, policy: str, max_age_s: float) -> Strategy:
    """DR-7 guardrail: only a full, fresh forecast earns a targeted plan."""
    good = (
        info.expected_kw is not None and info.quality == "full" and info.age_s is not None and info.age_s <= max_age_s
    )
    if good:
        return Strategy.FORECAST
    return Strategy.HOLD if policy == "hold" else Strategy.FIXED_PERCENTAGE


def facility_targets(
    expected_kw: Mapping[str, float],
    *,
    shed_kw: float | None = None,
    import_limit_kw: float | None = None,
    level: int | None = None,
    level_fraction: float = 0.1,
) -> dict[str, float]:
    """Split the event's ask over its facilities in proportion to their expected load."""
    total = sum(expected_kw.values())
    if total <= 0:
        return {f: 0.0 for f in expected_kw}
    if shed_kw is not None:
        total_shed = shed_kw
    elif import_limit_kw is not None:
        total_shed = max(0.0, total - import_limit_kw)
    elif level is not None:
        total_shed = total * min(1.0, max(0, level) * level_fraction)
    else:
        total_shed = 0.0
    return {f: total_shed * kw / total for f, kw in expected_kw.items()}


def interval_targets(
    expected_kw: Mapping[str, float], interval: IntervalAsk, level_fraction: float = 0.1
) -> dict[str, float]:
    """kW each facility sheds during one interval of the schedule.

    IMPORT_CAPACITY_LIMIT and DISPATCH_SETPOINT apply to each targeted resource on its own (a
    facility already below its cap sheds nothing); LOAD_SHED_DELTA_AVAILABLE is the event's total,
    split in proportion to expected load; SIMPLE (or a price level) sheds a share of each load.
    When several are given the largest shed per facility wins.
    """
    out: dict[str, float] = {}
    shared = facility_targets(expected_kw, shed_kw=interval.shed_kw) if interval.shed_kw is not None else {}
    for fid, kw in expected_kw.items():
        asks = [shared.get(fid, 0.0)]
        if interval.import_limit_kw is not None:
            asks.append(kw - interval.import_limit_kw)
        if interval.setpoint_kw is not None:
            asks.append(kw - interval.setpoint_kw)
        if interval.level:
            asks.append(kw * min(1.0, interval.level * level_fraction))
        out[fid] = max(0.0, *asks)
    return out


def _zone_load_kw(zone: ZoneSpec, load_factor: float) -> float:
    return max(0.0, zone.rated_kw * load_factor)


def plan_facility(
    facility_id: str,
    zones: Sequence[ZoneSpec],
    *,
    target_kw: float,
    expected_kw: float,
    peak_kw: float,
    strategy: Strategy,
    fallback_fraction: float = 0.15,
) -> FacilityPlan:
    """Shed ``target_kw`` greedily by zone shed priority without crossing comfort limits."""
    load_factor = max(0.0, min(1.5, expected_kw / peak_kw)) if peak_kw > 0 else 1.0
    if strategy is Strategy.HOLD:
        return FacilityPlan(facility_id, strategy, target_kw, expected_kw, 0.0, ())
    if strategy is Strategy.FIXED_PERCENTAGE:
        return _fixed_percentage(facility_id, zones, target_kw, expected_kw, load_factor, fallback_fraction)
    remaining = target_kw
    actions: list[ZoneAction] = []
    for zone in sorted(zones, key=lambda z: (z.shed_priority, z.zone_id)):
        if remaining <= 1e-9:
            break
        load = _zone_load_kw(zone, load_factor)
        if load <= 0:
            continue
        if zone.kind == "hvac" and zone.normal_setpoint_c is not None and zone.max_setpoint_c is not None:
            per_degree = HVAC_SHED_PER_DEGREE * load
            headroom = zone.max_setpoint_c - zone.normal_setpoint_c
            degrees = min(headroom, math.ceil(remaining / per_degree / SETPOINT_STEP_C) * SETPOINT_STEP_C)
            if degrees <= 0:
                continue
            shed = degrees * per_degree
            actions.append(ZoneAction(zone.zone_id, "set_setpoint", round(zone.normal_setpoint_c + degrees, 2), shed))
        elif zone.kind == "lighting":
            floor_pct = zone.min_lighting_pct if zone.min_lighting_pct is not None else 100.0
            max_shed = load * (1 - floor_pct / 100.0)
            if max_shed <= 0:
                continue
            wanted = min(remaining, max_shed)
            pct = max(floor_pct, math.floor(100.0 - wanted / load * 100.0))
            shed = load * (1 - pct / 100.0)
            actions.append(ZoneAction(zone.zone_id, "set_lighting", float(pct), shed))
        else:
            continue
        remaining -= shed
    planned = sum(a.shed_kw for a in actions)
    return FacilityPlan(facility_id, strategy, target_kw, expected_kw, planned, tuple(actions))


def _fixed_percentage(
    facility_id: str,
    zones: Sequence[ZoneSpec],
    target_kw: float,
    expected_kw: float,
    load_factor: float,
    fraction: float,
) -> FacilityPlan:
    """Every HVAC zone sheds ``fraction`` of its load (setpoint raised, within its comfort limit)."""
    degrees_wanted = math.ceil(fraction / HVAC_SHED_PER_DEGREE / SETPOINT_STEP_C) * SETPOINT_STEP_C
    actions = []
    for zone in sorted(zones, key=lambda z: (z.shed_priority, z.zone_id)):
        if zone.kind != "hvac" or zone.normal_setpoint_c is None or zone.max_setpoint_c is None:
            continue
        degrees = min(degrees_wanted, zone.max_setpoint_c - zone.normal_setpoint_c)
        if degrees <= 0:
            continue
        shed = degrees * HVAC_SHED_PER_DEGREE * _zone_load_kw(zone, load_factor)
        actions.append(ZoneAction(zone.zone_id, "set_setpoint", round(zone.normal_setpoint_c + degrees, 2), shed))
    planned = sum(a.shed_kw for a in actions)
    return FacilityPlan(facility_id, Strategy.FIXED_PERCENTAGE, target_kw, expected_kw, planned, tuple(actions))


@dataclass(frozen=True)
class FacilityInputs:
    """What planning one facility needs besides the ask: its zones, load and guardrail verdict."""

    zones: tuple[ZoneSpec, ...]
    expected_kw: float
    peak_kw: float
    strategy: Strategy


def plan_interval(
    interval: IntervalAsk,
    facilities: Mapping[str, FacilityInputs],
    *,
    level_fraction: float = 0.1,
    fallback_fraction: float = 0.15,
) -> dict[str, FacilityPlan]:
    """Per-facility plans for one interval. An interval that sheds nothing (SIMPLE 0) plans no
    action at all, whatever the strategy: the buildings go back to normal for its duration."""
    targets = interval_targets({f: i.expected_kw for f, i in facilities.items()}, interval, level_fraction)
    plans: dict[str, FacilityPlan] = {}
    for fid, inp in facilities.items():
        if interval.sheds_nothing or targets[fid] <= 0:
            plans[fid] = FacilityPlan(fid, inp.strategy, 0.0, inp.expected_kw, 0.0, ())
            continue
        plans[fid] = plan_facility(
            fid,
            inp.zones,
            target_kw=targets[fid],
            expected_kw=inp.expected_kw,
            peak_kw=inp.peak_kw,
            strategy=inp.strategy,
            fallback_fraction=fallback_fraction,
        )
    return plans
