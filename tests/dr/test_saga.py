"""DR-3/5/6: the saga's state machine, every transition and the illegal ones (pure, no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dr_coordinator.domain.commands import (
    Cancel,
    CommandIssued,
    Modify,
    OptOut,
    RecordCommandAcknowledged,
    RecordCommandFailed,
    ReleaseHold,
    Schedule,
    StartDispatch,
    StartRestore,
    StateChanged,
    idempotency_key,
)
from dr_coordinator.domain.planner import FacilityPlan, Strategy, ZoneAction
from dr_coordinator.domain.saga import (
    FacilitySaga,
    IllegalTransitionError,
    Saga,
    completed_dispatch,
    decide,
    dispatch_delay_s,
)
from schemas.dr import DrEventState as E
from schemas.dr import FacilityDrState as F

NOW = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)


def saga(*tiers: int, state: E = E.RECEIVED) -> Saga:
    facs = tuple(FacilitySaga(f"fac-{i:03d}", criticality_tier=t) for i, t in enumerate(tiers, start=1))
    return Saga(uuid.uuid4(), state, NOW + timedelta(minutes=5), NOW + timedelta(minutes=65), facilities=facs)


def plan(fid: str, zones: int = 2, strategy: Strategy = Strategy.FORECAST) -> FacilityPlan:
    actions = tuple(ZoneAction(f"hvac-{z}", "set_setpoint", 24.0, 5.0) for z in range(1, zones + 1))
    return FacilityPlan(fid, strategy, 10.0, 100.0, 5.0 * zones, actions)


def dispatched(*tiers: int) -> Saga:
    s = decide(saga(*tiers), Schedule(), NOW).saga
    plans = {f.facility_id: plan(f.facility_id) for f in s.facilities}
    return decide(s, StartDispatch(plans, "forecast"), NOW).saga


def ack_all(s: Saga, action: str) -> Saga:
    for f in s.facilities:
        for a in f.actions:
            s = decide(s, RecordCommandAcknowledged(f.facility_id, a.zone_id, action), NOW).saga
    return s


def test_received_to_scheduled_on_schedule() -> None:
    d = decide(saga(3), Schedule(), NOW)
    assert d.saga.state == E.SCHEDULED
    assert d.events == [StateChanged(None, "received", "scheduled", "timers armed")]


def test_dispatch_issues_one_command_per_planned_zone_in_tier_order_4_first() -> None:
    s = decide(saga(1, 4, 3), Schedule(), NOW).saga
    d = decide(s, StartDispatch({f.facility_id: plan(f.facility_id) for f in s.facilities}, "forecast"), NOW)
    assert d.saga.state == E.DISPATCHING
    cmds = [e for e in d.events if isinstance(e, CommandIssued)]
    assert len(cmds) == 6
    order = [c.facility_id for c in sorted(cmds, key=lambda c: c.order)]
    assert order[:2] == ["fac-002", "fac-002"] and order[-2:] == ["fac-001", "fac-001"]  # tier 4 first, tier 1 last
    assert all(f.state == F.DISPATCHING for f in d.saga.facilities)


def test_all_acks_make_facilities_and_event_active() -> None:
    s = ack_all(dispatched(3, 3), "set_setpoint")
    assert s.state == E.ACTIVE
    assert all(f.state == F.ACTIVE for f in s.facilities)


def test_only_the_decision_that_makes_the_event_active_completes_the_dispatch() -> None:
    s = dispatched(3, 3)
    decisions = []
    for f in s.facilities:
        for a in f.actions:
            d = decide(s, RecordCommandAcknowledged(f.facility_id, a.zone_id, "set_setpoint"), NOW)
            decisions.append(d)
            s = d.saga
    assert [completed_dispatch(d) for d in decisions] == [False, False, False, True]
    assert not completed_dispatch(decide(s, StartRestore("end"), NOW))


@pytest.mark.parametrize(
    ("received_after_start_s", "dispatched_after_start_s", "delay_s"),
    [
        (-3600, -30, 0.0),  # dispatched in the lead time before the start: in time
        (-3600, 45, 45.0),  # 45 s after the start
        (120, 150, 30.0),  # an event that arrived 2 min after its start is measured from its receipt
        (120, 100, 0.0),
    ],
)
def test_dispatch_delay_counts_from_the_start_or_the_later_receipt(
    received_after_start_s: int, dispatched_after_start_s: int, delay_s: float
) -> None:
    start = NOW
    received = start + timedelta(seconds=received_after_start_s)
    done = start + timedelta(seconds=dispatched_after_start_s)
    assert dispatch_delay_s(start, received, done) == delay_s


def test_partial_ack_changes_the_saga_so_it_is_persisted() -> None:
    s = dispatched(3)
    d = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "set_setpoint"), NOW)
    assert d.events == [] and d.changed
    assert d.saga.facility("fac-001").awaiting == frozenset({"hvac-2|set_setpoint"})


def test_duplicate_ack_is_a_no_op() -> None:
    s = ack_all(dispatched(3), "set_setpoint")
    d = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "set_setpoint"), NOW)
    assert d.events == [] and d.saga == s and not d.changed


def test_end_restores_every_zone_then_completes() -> None:
    s = ack_all(dispatched(3, 4), "set_setpoint")
    d = decide(s, StartRestore(), NOW)
    assert d.saga.state == E.RESTORING
    restores = [e for e in d.events if isinstance(e, CommandIssued)]
    assert {(c.facility_id, c.zone_id, c.action) for c in restores} == {
        (f, z, "restore") for f in ("fac-001", "fac-002") for z in ("hvac-1", "hvac-2")
    }
    done = ack_all(d.saga, "restore")
    assert done.state == E.COMPLETED
    assert all(f.state == F.RESTORED for f in done.facilities)


def test_dispatch_failure_compensates_the_facility_and_event_ends_partially_failed() -> None:
    s = dispatched(3, 3)
    s = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "set_setpoint"), NOW).saga
    d = decide(s, RecordCommandFailed("fac-001", "hvac-2", "set_setpoint", "BMS down"), NOW)
    fac = d.saga.facility("fac-001")
    assert fac.state == F.RESTORING and fac.outcome == F.FAILED
    assert {(c.zone_id, c.action) for c in d.events if isinstance(c, CommandIssued)} == {
        ("hvac-1", "restore"),
        ("hvac-2", "restore"),
    }
    s = decide(d.saga, RecordCommandAcknowledged("fac-002", "hvac-1", "set_setpoint"), NOW).saga
    s = decide(s, RecordCommandAcknowledged("fac-002", "hvac-2", "set_setpoint"), NOW).saga
    s = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "restore"), NOW).saga
    s = decide(s, RecordCommandAcknowledged("fac-001", "hvac-2", "restore"), NOW).saga
    assert s.facility("fac-001").state == F.FAILED
    assert s.state == E.ACTIVE
    s = ack_all(decide(s, StartRestore(), NOW).saga, "restore")
    assert s.state == E.PARTIALLY_FAILED


def test_every_facility_failing_ends_failed() -> None:
    s = dispatched(3)
    s = decide(s, RecordCommandFailed("fac-001", "hvac-1", "set_setpoint", "rejected"), NOW).saga
    s = ack_all(s, "restore")
    assert s.facility("fac-001").state == F.FAILED
    assert s.state == E.FAILED


def test_failed_restore_ends_facility_failed_with_flag() -> None:
    s = decide(ack_all(dispatched(3), "set_setpoint"), StartRestore(), NOW).saga
    s = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "restore"), NOW).saga
    s = decide(s, RecordCommandFailed("fac-001", "hvac-2", "restore", "gave up"), NOW).saga
    assert s.facility("fac-001").state == F.FAILED and s.facility("fac-001").restore_failed
    assert s.state == E.FAILED


def test_cancel_before_dispatch_cancels_without_commands() -> None:
    s = decide(saga(3, 3), Schedule(), NOW).saga
    d = decide(s, Cancel("utility cancelled"), NOW)
    assert d.saga.state == E.CANCELLED
    assert not [e for e in d.events if isinstance(e, CommandIssued)]
    assert all(f.state == F.CANCELLED for f in d.saga.facilities)


def test_cancel_while_active_restores_then_ends_cancelled() -> None:
    s = ack_all(dispatched(3), "set_setpoint")
    d = decide(s, Cancel("operator"), NOW)
    assert d.saga.state == E.RESTORING
    assert len([e for e in d.events if isinstance(e, CommandIssued)]) == 2
    s = ack_all(d.saga, "restore")
    assert s.state == E.CANCELLED
    assert s.facility("fac-001").state == F.CANCELLED


def test_cancel_mid_dispatch_ignores_late_dispatch_acks() -> None:
    s = decide(dispatched(3), Cancel("operator"), NOW).saga
    d = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "set_setpoint"), NOW)
    assert d.events == []
    assert ack_all(s, "restore").state == E.CANCELLED


def test_opt_out_active_facility_restores_it_and_others_complete() -> None:
    s = ack_all(dispatched(3, 3), "set_setpoint")
    s = decide(s, OptOut("fac-001"), NOW).saga
    assert s.facility("fac-001").state == F.RESTORING
    s = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "restore"), NOW).saga
    s = decide(s, RecordCommandAcknowledged("fac-001", "hvac-2", "restore"), NOW).saga
    assert s.facility("fac-001").state == F.OPTED_OUT
    s = ack_all(decide(s, StartRestore(), NOW).saga, "restore")
    assert s.state == E.COMPLETED


def test_opt_out_pending_facility_needs_no_commands() -> None:
    s = decide(saga(3, 3), Schedule(), NOW).saga
    d = decide(s, OptOut("fac-002"), NOW)
    assert d.saga.facility("fac-002").state == F.OPTED_OUT
    assert not [e for e in d.events if isinstance(e, CommandIssued)]


def test_hold_strategy_dispatches_nothing_for_that_facility() -> None:
    s = decide(saga(3, 3), Schedule(), NOW).saga
    plans = {"fac-001": plan("fac-001"), "fac-002": FacilityPlan("fac-002", Strategy.HOLD, 10, 100, 0, ())}
    d = decide(s, StartDispatch(plans, "mixed"), NOW)
    assert d.saga.facility("fac-002").state == F.OPTED_OUT
    assert {c.facility_id for c in d.events if isinstance(c, CommandIssued)} == {"fac-001"}


def test_operator_release_of_a_held_facility_dispatches_it_and_restores_it_at_the_end() -> None:
    s = decide(saga(3, 3), Schedule(), NOW).saga
    plans = {"fac-001": plan("fac-001"), "fac-002": FacilityPlan("fac-002", Strategy.HOLD, 10, 100, 0, ())}
    s = ack_all(decide(s, StartDispatch(plans, "mixed"), NOW).saga, "set_setpoint")
    assert s.state == E.ACTIVE and s.facility("fac-002").state == F.OPTED_OUT
    d = decide(s, ReleaseHold(plan("fac-002", strategy=Strategy.FIXED_PERCENTAGE)), NOW)
    assert d.saga.facility("fac-002").state == F.DISPATCHING
    assert {(c.facility_id, c.action) for c in d.events if isinstance(c, CommandIssued)} == {
        ("fac-002", "set_setpoint")
    }
    s = ack_all(d.saga, "set_setpoint")
    assert s.facility("fac-002").state == F.ACTIVE
    s = ack_all(decide(s, StartRestore(), NOW).saga, "restore")
    assert s.state == E.COMPLETED and s.facility("fac-002").state == F.RESTORED


def test_release_of_a_facility_that_is_not_held_is_rejected() -> None:
    s = ack_all(dispatched(3), "set_setpoint")
    with pytest.raises(IllegalTransitionError):
        decide(s, ReleaseHold(plan("fac-001")), NOW)
    s2 = decide(ack_all(dispatched(3, 3), "set_setpoint"), OptOut("fac-002", "opted out by operator"), NOW).saga
    with pytest.raises(IllegalTransitionError):
        decide(s2, ReleaseHold(plan("fac-002")), NOW)


def test_modify_before_dispatch_moves_times_and_during_event_only_the_end() -> None:
    s = decide(saga(3), Schedule(), NOW).saga
    new_start, new_end = NOW + timedelta(minutes=10), NOW + timedelta(minutes=40)
    s2 = decide(s, Modify(new_start, new_end, None, None), NOW).saga
    assert (s2.start, s2.end, s2.state) == (new_start, new_end, E.SCHEDULED)
    active = ack_all(dispatched(3), "set_setpoint")
    s3 = decide(active, Modify(new_start, new_end, None, None), NOW).saga
    assert s3.start == active.start and s3.end == new_end


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (E.SCHEDULED, Schedule()),
        (E.RECEIVED, StartDispatch({}, "forecast")),
        (E.ACTIVE, StartDispatch({}, "forecast")),
        (E.RECEIVED, StartRestore()),
        (E.SCHEDULED, StartRestore()),
        (E.COMPLETED, Cancel("late")),
        (E.CANCELLED, Schedule()),
        (E.FAILED, StartRestore()),
        (E.PARTIALLY_FAILED, OptOut("fac-001")),
        (E.COMPLETED, Modify(NOW, NOW + timedelta(hours=1), None, None)),
    ],
)
def test_illegal_transitions_are_rejected(state: E, message: object) -> None:
    with pytest.raises(IllegalTransitionError):
        decide(saga(3, state=state), message, NOW)  # type: ignore[arg-type]


def test_opt_out_of_unknown_facility_is_rejected() -> None:
    with pytest.raises(IllegalTransitionError):
        decide(saga(3), OptOut("fac-999"), NOW)


def test_results_after_the_end_are_only_noted() -> None:
    s = ack_all(decide(ack_all(dispatched(3), "set_setpoint"), StartRestore(), NOW).saga, "restore")
    d = decide(s, RecordCommandAcknowledged("fac-001", "hvac-1", "restore"), NOW)
    assert d.saga.state == E.COMPLETED and len(d.events) == 1 and type(d.events[0]).__name__ == "Noted"


def test_idempotency_key_is_deterministic_per_event_facility_zone_action() -> None:
    eid = uuid.uuid4()
    assert idempotency_key(eid, "fac-001", "hvac-1", "restore") == idempotency_key(eid, "fac-001", "hvac-1", "restore")
    assert idempotency_key(eid, "fac-001", "hvac-1", "restore") != idempotency_key(
        eid, "fac-001", "hvac-1", "set_setpoint"
    )
