"""The simulated BMS controllers' rules, without I/O (what the SOAP faults are made of)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy.fleet import build_fleet
from sim.bms.model import BmsControllers, CommandRejected, FaultConfig, MemoryZoneStore

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def controllers() -> BmsControllers:
    return BmsControllers.for_fleet(build_fleet(), MemoryZoneStore(), lambda: NOW)


def test_setpoint_outside_the_zone_limits_is_rejected_and_not_executed(controllers):
    with pytest.raises(CommandRejected) as info:
        controllers.execute("fac-003", "SetSetpoint", "hvac-1", 25.0, "k1")  # hospital: max 24 C
    assert info.value.code == "SetpointOutOfRange"
    with pytest.raises(CommandRejected):
        controllers.execute("fac-001", "SetSetpoint", "hvac-1", 15.0, "k2")
    assert controllers.executions() == {}


def test_lighting_command_on_an_hvac_zone_is_rejected(controllers):
    with pytest.raises(CommandRejected) as info:
        controllers.execute("fac-001", "SetLightingLevel", "hvac-1", 50.0, "k1")
    assert info.value.code == "WrongZoneKind"


def test_repeat_of_a_key_returns_the_original_result_flagged_duplicate(controllers):
    first = controllers.execute("fac-001", "SetSetpoint", "hvac-1", 24.0, "k1")
    again = controllers.execute("fac-001", "SetSetpoint", "hvac-1", 24.0, "k1")
    assert not first.duplicate and again.duplicate and again.record == first.record
    assert controllers.executions() == {"k1": 2}, "the duplicate is an execution too (answered from the log)"
    assert controllers.applied() == {"k1": 1} and controllers.requests() == {"k1": 2}


def test_reusing_a_key_for_another_command_is_rejected(controllers):
    controllers.execute("fac-001", "SetSetpoint", "hvac-1", 24.0, "k1")
    with pytest.raises(CommandRejected) as info:
        controllers.execute("fac-001", "SetSetpoint", "hvac-1", 25.0, "k1")
    assert info.value.code == "IdempotencyKeyReused"
    assert controllers.zone_reading("fac-001", "hvac-1").setpoint_c == 24.0


def test_restore_returns_the_zone_to_its_normal_state(controllers):
    controllers.execute("fac-001", "SetLightingLevel", "light-1", 50.0, "k1")
    assert controllers.zone_reading("fac-001", "light-1").overridden
    controllers.execute("fac-001", "RestoreZone", "light-1", None, "k2")
    reading = controllers.zone_reading("fac-001", "light-1")
    assert not reading.overridden and reading.lighting_pct == 100.0


def test_fault_settings_are_validated():
    assert FaultConfig.parse({"facility_id": "fac-001", "latency_ms": 10, "down": True}) == (
        "fac-001",
        FaultConfig(latency_ms=10.0, down=True),
    )
    for bad in ({"latency_ms": True}, {"ack_loss_rate": -0.1}, {"facility_id": 3}):
        with pytest.raises(ValueError):
            FaultConfig.parse(bad)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["k1", "k2", "k3", "k4"]), st.sampled_from(["hvac-1", "light-1"])),
        min_size=1,
        max_size=25,
    )
)
def test_any_sequence_of_repeated_keys_executes_each_key_at_most_once(calls):
    controllers = BmsControllers.for_fleet(build_fleet(), MemoryZoneStore(), lambda: NOW)
    first_use: dict[str, str] = {}
    answered: Counter[str] = Counter()
    for key, zone_id in calls:
        operation = "RestoreZone"
        try:
            result = controllers.execute("fac-001", operation, zone_id, None, key)
        except CommandRejected as exc:
            assert exc.code == "IdempotencyKeyReused" and first_use[key] != zone_id
            continue
        assert result.duplicate == (key in first_use)
        first_use.setdefault(key, zone_id)
        answered[key] += 1
    assert controllers.applied() == dict.fromkeys(first_use, 1)
    assert controllers.executions() == dict(answered)
    assert sum(controllers.requests().values()) == len(calls)
