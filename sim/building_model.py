"""How BMS state changes a simulated building's electrical load (shared by the BMS and meter
simulators, which run as separate processes and meet in Redis).

The BMS simulator writes each zone's state to the Redis hash ``zone_state_key(facility_id)``
(field = zone id, value = JSON ``{"setpoint_c": float|null, "lighting_pct": float|null}``);
the meter simulator reads it and scales each meter of that zone by :func:`hvac_factor` or
:func:`lighting_factor`. Pure functions, no I/O.
"""

from __future__ import annotations

REDIS_PREFIX = "sim:bms:"
HVAC_SHED_PER_DEGREE = 0.12  # fraction of HVAC load shed per degree C above the normal setpoint (cooling)
HVAC_MIN_FACTOR = 0.2


def zone_state_key(facility_id: str) -> str:
    return f"{REDIS_PREFIX}{facility_id}"


def hvac_factor(setpoint_c: float | None, normal_setpoint_c: float) -> float:
    """Load multiplier of an HVAC zone: raising the cooling setpoint lowers the load."""
    if setpoint_c is None:
        return 1.0
    offset = setpoint_c - normal_setpoint_c
    return max(HVAC_MIN_FACTOR, min(1.5, 1.0 - HVAC_SHED_PER_DEGREE * offset))


def lighting_factor(lighting_pct: float | None) -> float:
    if lighting_pct is None:
        return 1.0
    return max(0.0, min(100.0, lighting_pct)) / 100.0
