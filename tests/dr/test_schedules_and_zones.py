"""Pure logic of issue 12 items 4-6: schedules, per-interval planning, re-plans that send only what
differs, missed events, and zone hand-over between events. Expectations computed by hand."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dr_coordinator.domain.commands import (
    ApplyPlans,
    CommandIssued,
    Modify,
    Noted,
    RecordCommandAcknowledged,
    Schedule,
    StartDispatch,
    StartRestore,
    idempotency_key,
)
from dr_coordinator.domain.planner import (
    FacilityInputs,
    FacilityPlan,
    Strategy,
    ZoneAction,
    ZoneSpec,
    interval_targets,
    plan_interval,
)
from dr_coordinator.domain.saga import FacilitySaga, IllegalTransitionError, Saga, decide
from dr_coordinator.domain.schedule import (
    IntervalAsk,
    Period,
    RawInterval,
    ScheduleError,
    build_schedule,
    current_interval,
    missed,
    price_level,
    randomized_offset_s,
)
from dr_coordinator.domain.zones import ZoneClaim, diff_plan, held_by_earlier, restore_or_hand_over, zone_owner
from schemas.dr import DrEventState as E
from schemas.dr import FacilityDrState as F

T0 = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


# --- schedule ------------------------------------------------------------------------------------


def test_intervals_without_their_own_period_follow_each_other_with_the_event_duration() -> None:
    schedule = build_schedule(
        Period(T0, timedelta(minutes=30)),
        [
            RawInterval(1, None, {"SIMPLE": [3]}),
            RawInterval(0, None, {"SIMPLE": [1]}),
        ],
    )
    # ids order the intervals: id 0 (level 1) 15:00-15:30, then id 1 (level 3) 15:30-16:00.
    assert [(i.index, i.start, i.end, i.level) for i in schedule] == [
        (0, T0, T0 + timedelta(minutes=30), 1),
        (1, T0 + timedelta(minutes=30), T0 + HOUR, 3),
    ]


def test_an_interval_with_its_own_period_keeps_it_and_each_keeps_its_own_payloads() -> None:
    schedule = build_schedule(
        None,
        [
            RawInterval(0, Period(T0, HOUR), {"IMPORT_CAPACITY_LIMIT": [80.0, 90.0]}),
            RawInterval(1, Period(T0 + 2 * HOUR, HOUR), {"LOAD_SHED_DELTA_AVAILABLE": [12.5], "PRICE": [0.4]}),
        ],
    )
    first, second = schedule
    assert (first.start, first.end, first.import_limit_kw, first.shed_kw) == (T0, T0 + HOUR, 80.0, None)
    # 0.4 reaches the thresholds 0.15 and 0.30, not 0.60: price level 2.
    assert (second.start, second.shed_kw, second.price, second.level) == (T0 + 2 * HOUR, 12.5, 0.4, 2)
    # Between the two intervals nothing runs.
    assert current_interval(schedule, T0 + timedelta(minutes=90)) is None
    assert current_interval(schedule, T0 - HOUR) == first
    assert current_interval(schedule, T0 + timedelta(minutes=150)) == second


@pytest.mark.parametrize(
    ("payloads", "why"),
    [
        ({"SIMPLE": [4]}, "SIMPLE"),
        ({"SIMPLE": [1.5]}, "SIMPLE"),
        ({"IMPORT_CAPACITY_LIMIT": [-1]}, ">= 0"),
    ],
)
def test_out_of_range_payloads_are_refused_with_a_reason(payloads: dict[str, list[float]], why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        build_schedule(Period(T0, HOUR), [RawInterval(0, None, payloads)])


def test_overlapping_intervals_and_intervals_without_any_period_are_refused() -> None:
    with pytest.raises(ScheduleError, match="overlap"):
        build_schedule(None, [RawInterval(0, Period(T0, HOUR), {}), RawInterval(1, Period(T0 + HOUR / 2, HOUR), {})])
    with pytest.raises(ScheduleError, match="no intervalPeriod"):
        build_schedule(None, [RawInterval(0, None, {"SIMPLE": [1]})])


def test_price_levels_count_the_thresholds_reached() -> None:
    assert [price_level(p, (1.0, 2.0, 3.0)) for p in (0.5, 1.0, 2.5, 3.0, 9.0)] == [0, 1, 2, 3, 3]


def test_randomized_offsets_stay_inside_the_window_are_stable_and_spread() -> None:
    window = timedelta(minutes=5)
    offsets = [randomized_offset_s(window, "evt-1", f"fac-{i:03d}") for i in range(50)]
    assert all(0 <= o < 300 for o in offsets)
    assert offsets == [randomized_offset_s(window, "evt-1", f"fac-{i:03d}") for i in range(50)]
    assert len({round(o, 3) for o in offsets}) == 50
    assert max(offsets) - min(offsets) > 150  # 50 uniform draws over 300 s spread over half of it
    assert randomized_offset_s(None, "evt-1", "fac-001") == 0.0


def test_an_event_is_missed_when_its_end_is_not_after_now() -> None:
    assert missed(T0, T0) and missed(T0, T0 + timedelta(seconds=1)) and not missed(T0, T0 - timedelta(seconds=1))


# --- per-interval planning ----------------------------------------------------------------------


def test_import_capacity_limit_applies_to_each_targeted_facility_not_to_their_sum() -> None:
    # Limit 100 kW per resource: 150 -> sheds 50, 80 -> already below, sheds 0. Applied to the sum
    # (230 - 100 = 130 split by load) it would have been 84.8 and 45.2.
    targets = interval_targets({"a": 150.0, "b": 80.0}, IntervalAsk(0, T0, T0 + HOUR, import_limit_kw=100.0))
    assert targets == {"a": 50.0, "b": 0.0}


def test_simple_levels_setpoints_and_shared_sheds_per_facility() -> None:
    expected = {"a": 200.0, "b": 100.0}
    assert interval_targets(expected, IntervalAsk(0, T0, T0 + HOUR, level=2), 0.1) == pytest.approx(
        {"a": 40.0, "b": 20.0}
    )
    assert interval_targets(expected, IntervalAsk(0, T0, T0 + HOUR, setpoint_kw=150.0)) == {"a": 50.0, "b": 0.0}
    # 30 kW shared: 20 for a (2/3 of the load), 10 for b.
    assert interval_targets(expected, IntervalAsk(0, T0, T0 + HOUR, shed_kw=30.0)) == pytest.approx(
        {"a": 20.0, "b": 10.0}
    )


def test_a_level_zero_interval_plans_no_action_even_with_the_fixed_percentage_fallback() -> None:
    zones = (ZoneSpec("hvac-1", "hvac", 100.0, 22.0, 26.0),)
    inputs = {"a": FacilityInputs(zones, 100.0, 100.0, Strategy.FIXED_PERCENTAGE)}
    assert plan_interval(IntervalAsk(0, T0, T0 + HOUR, level=0), inputs)["a"].actions == ()
    busy = plan_interval(IntervalAsk(1, T0, T0 + HOUR, level=1), inputs)["a"]
    # Fixed 15 %: 0.15 / 0.12 per degC = 1.25 -> 1.5 degC in 0.5 steps: 22 + 1.5 = 23.5.
    assert [(a.zone_id, a.value) for a in busy.actions] == [("hvac-1", 23.5)]


# --- plan diffs and zone ownership ----------------------------------------------------------------


def act(zone: str, value: float, action: str = "set_setpoint") -> ZoneAction:
    return ZoneAction(zone, action, value, 1.0)


def test_a_plan_diff_contains_only_changed_new_and_released_zones() -> None:
    diff = diff_plan(
        [act("z1", 24.0), act("z2", 24.0), act("z3", 80.0, "set_lighting")],
        [act("z1", 24.0), act("z2", 25.0), act("z4", 24.5)],
    )
    assert [(a.zone_id, a.value) for a in diff.commands] == [("z2", 25.0), ("z4", 24.5)]
    assert diff.releases == ("z3",)
    assert diff_plan([act("z1", 24.0)], [act("z1", 24.0)]).empty


EV_A, EV_B, EV_C = (uuid.UUID(int=n) for n in (1, 2, 3))


def claim(ev: uuid.UUID, start: datetime, value: float, zone: str = "z1", priority: int = 0) -> ZoneClaim:
    return ZoneClaim(ev, "fac-001", zone, "set_setpoint", value, start, priority)


def test_the_latest_start_owns_a_zone_then_priority_breaks_ties() -> None:
    assert zone_owner([claim(EV_A, T0, 24), claim(EV_B, T0 + HOUR, 25)]).dr_event_id == EV_B  # type: ignore[union-attr]
    tie = zone_owner([claim(EV_A, T0, 24, priority=90), claim(EV_B, T0, 25, priority=10)])
    assert tie is not None and tie.dr_event_id == EV_A
    assert zone_owner([]) is None


def test_releasing_a_zone_restores_hands_back_or_leaves_it_to_the_successor() -> None:
    # Nobody else holds z1: restore.
    assert restore_or_hand_over("z1", EV_B, T0 + HOUR, 0, [claim(EV_A, T0, 24, zone="z2")]).action == "restore"
    # A (earlier, still running) holds z1: B hands it back to A's 24.0.
    back = restore_or_hand_over("z1", EV_B, T0 + HOUR, 0, [claim(EV_A, T0, 24)])
    assert (back.action, back.value, back.handed_to) == ("set_setpoint", 24, EV_A)
    # C started later and holds z1: B sends nothing, C's setpoint stands.
    keep = restore_or_hand_over("z1", EV_B, T0 + HOUR, 0, [claim(EV_C, T0 + 2 * HOUR, 26)])
    assert (keep.action, keep.handed_to) == (None, EV_C)
    assert held_by_earlier("z1", EV_B, T0 + HOUR, 0, [claim(EV_A, T0, 24)])
    assert not held_by_earlier("z1", EV_B, T0 + HOUR, 0, [claim(EV_C, T0 + 2 * HOUR, 26)])


# --- saga: intervals, re-plans, missed, hand-over -----------------------------------------------


def fplan(fid: str, *actions: ZoneAction) -> FacilityPlan:
    return FacilityPlan(fid, Strategy.FORECAST, 10.0, 100.0, 10.0, actions)


def running(*actions: ZoneAction, others: tuple[ZoneClaim, ...] = (), start: datetime = T0) -> Saga:
    s = Saga(EV_B, E.RECEIVED, start, start + 2 * HOUR, facilities=(FacilitySaga("fac-001"),), others=others)
    s = decide(s, Schedule(), start - HOUR).saga
    s = decide(s, StartDispatch({"fac-001": fplan("fac-001", *actions)}, "forecast"), start).saga
    for a in actions:
        s = decide(s, RecordCommandAcknowledged("fac-001", a.zone_id, a.action), start).saga
    assert s.state == E.ACTIVE
    return replace(s, version=s.version + 7)  # as if persisted a few times


def commands(events: list[object]) -> list[tuple[str, str, float | None, int]]:
    return [(c.zone_id, c.action, c.value, c.revision) for c in events if isinstance(c, CommandIssued)]


def test_the_next_interval_sends_only_what_differs_under_new_keys() -> None:
    s = running(act("z1", 24.0), act("z2", 24.0), act("z3", 70.0, "set_lighting"))
    d = decide(s, ApplyPlans({"fac-001": fplan("fac-001", act("z1", 24.0), act("z2", 25.5))}, 1, "interval 1"), T0)
    v = s.version + 1
    assert commands(d.events) == [("z2", "set_setpoint", 25.5, v), ("z3", "restore", None, v)]
    fac = d.saga.facility("fac-001")
    assert fac.state == F.DISPATCHING and fac.awaiting == {"z2|set_setpoint", "z3|restore"}
    assert [a.zone_id for a in fac.actions] == ["z1", "z2"] and d.saga.interval_index == 1
    # The re-plan's key differs from the first dispatch's, so the BMS does not take it for a duplicate.
    assert idempotency_key(EV_B, "fac-001", "z2", "set_setpoint", v) != idempotency_key(
        EV_B, "fac-001", "z2", "set_setpoint"
    )
    s2 = d.saga
    for zone, action in (("z2", "set_setpoint"), ("z3", "restore")):
        s2 = decide(s2, RecordCommandAcknowledged("fac-001", zone, action), T0).saga
    assert s2.facility("fac-001").state == F.ACTIVE
    # Then the end restores only the zones still shed (z1, z2), not the already restored z3.
    end = decide(s2, StartRestore(), T0 + 2 * HOUR)
    assert sorted(c[0] for c in commands(end.events)) == ["z1", "z2"]


def test_an_unchanged_plan_sends_nothing() -> None:
    s = running(act("z1", 24.0))
    d = decide(s, ApplyPlans({"fac-001": fplan("fac-001", act("z1", 24.0))}, 0, "re-plan"), T0)
    assert commands(d.events) == [] and d.saga.facility("fac-001").state == F.ACTIVE


def test_a_modification_under_way_asks_for_a_replan_and_keeps_the_start() -> None:
    s = running(act("z1", 24.0))
    d = decide(s, Modify(T0 + HOUR, T0 + 3 * HOUR, None, 3), T0 + HOUR / 2)
    assert d.saga.replan_due and d.saga.end == T0 + 3 * HOUR and d.saga.start == T0
    assert commands(d.events) == []
    note = next(e for e in d.events if isinstance(e, Noted))
    assert note.detail["level"] == 3 and note.detail["replan"] is True
    after = decide(d.saga, ApplyPlans({"fac-001": fplan("fac-001", act("z1", 26.0))}, 0, "modified"), T0)
    assert not after.saga.replan_due and commands(after.events) == [("z1", "set_setpoint", 26.0, d.saga.version + 1)]


def test_an_event_first_seen_after_its_end_is_missed_and_never_dispatched() -> None:
    s = Saga(EV_A, E.RECEIVED, T0, T0 + HOUR, facilities=(FacilitySaga("fac-001"), FacilitySaga("fac-002")))
    d = decide(s, Schedule(), T0 + HOUR)
    assert d.saga.state == E.MISSED and {f.state for f in d.saga.facilities} == {F.CANCELLED}
    assert commands(d.events) == []
    with pytest.raises(IllegalTransitionError):
        decide(d.saga, StartDispatch({}, "forecast"), T0 + HOUR)
    # Scheduled in time, but the coordinator was down until after the end: missed at dispatch.
    sched = decide(s, Schedule(), T0 - HOUR).saga
    late = decide(sched, StartDispatch({"fac-001": fplan("fac-001", act("z1", 24.0))}, "forecast"), T0 + 2 * HOUR)
    assert late.saga.state == E.MISSED and commands(late.events) == []


def test_randomized_and_handed_over_dispatches_wait_for_their_time() -> None:
    a_claim = claim(EV_A, T0 - HOUR, 24.0)  # event A (earlier) still holds z1
    s = Saga(EV_B, E.SCHEDULED, T0, T0 + HOUR, facilities=(FacilitySaga("fac-001"),), others=(a_claim,))
    offset = T0 - timedelta(seconds=30)
    d = decide(
        s,
        StartDispatch(
            {"fac-001": fplan("fac-001", act("z1", 25.0), act("z2", 25.0))}, "forecast", not_before={"fac-001": offset}
        ),
        T0 - timedelta(seconds=60),
    )
    when = {c.zone_id: c.not_before for c in d.events if isinstance(c, CommandIssued)}
    # z1 is A's until B's start; z2 is free and goes at the randomized time.
    assert when == {"z1": T0, "z2": offset}


def test_ending_an_event_never_undoes_a_later_events_setpoint_and_hands_back_to_an_earlier_one() -> None:
    # B holds z1 and z2; C (starts after B) took z1 over; A (started before B) still holds z2.
    others = (claim(EV_C, T0 + HOUR, 26.0, "z1"), claim(EV_A, T0 - HOUR, 23.0, "z2"))
    s = running(act("z1", 25.0), act("z2", 25.0), act("z3", 25.0), others=others)
    d = decide(s, StartRestore(), T0 + 2 * HOUR)
    assert commands(d.events) == [("z2", "set_setpoint", 23.0, s.version + 1), ("z3", "restore", None, 0)]
    handed = {e.detail["zone_id"]: e.detail["to"] for e in d.events if isinstance(e, Noted)}
    assert handed == {"z1": str(EV_C), "z2": str(EV_A)}
    fac = d.saga.facility("fac-001")
    assert fac.awaiting == {"z2|set_setpoint", "z3|restore"}
    done = decide(
        decide(d.saga, RecordCommandAcknowledged("fac-001", "z2", "set_setpoint"), T0).saga,
        RecordCommandAcknowledged("fac-001", "z3", "restore"),
        T0,
    )
    assert done.saga.state == E.COMPLETED


def test_a_facility_whose_every_zone_a_successor_holds_completes_without_commands() -> None:
    s = running(act("z1", 25.0), others=(claim(EV_C, T0 + HOUR, 26.0, "z1"),))
    d = decide(s, StartRestore(), T0 + 2 * HOUR)
    assert commands(d.events) == [] and d.saga.state == E.COMPLETED
    # And a re-plan does not set a zone a successor holds either.
    s2 = running(act("z1", 25.0), others=(claim(EV_C, T0 + HOUR, 26.0, "z1"),))
    assert commands(decide(s2, ApplyPlans({"fac-001": fplan("fac-001", act("z1", 27.0))}, 1, "x"), T0).events) == []


def test_overlap_counts_the_dispatch_lead() -> None:
    from dr_coordinator.domain.zones import overlap_kind

    lead = timedelta(seconds=60)
    # Periods overlap by one second: a clash.
    assert overlap_kind(T0 + HOUR - timedelta(seconds=1), T0 + 2 * HOUR, T0, T0 + HOUR, lead) == "clash"
    # Back to back: only the second's lead reaches into the first: a hand-over.
    assert overlap_kind(T0 + HOUR, T0 + 2 * HOUR, T0, T0 + HOUR, lead) == "handover"
    # A 30 s gap is shorter than the 60 s lead: still a hand-over; either order.
    assert overlap_kind(T0 + HOUR + timedelta(seconds=30), T0 + 2 * HOUR, T0, T0 + HOUR, lead) == "handover"
    assert overlap_kind(T0, T0 + HOUR, T0 + HOUR + timedelta(seconds=30), T0 + 2 * HOUR, lead) == "handover"
    # A 60 s gap: the lead ends exactly at the first's end: they never meet.
    assert overlap_kind(T0 + HOUR + timedelta(seconds=60), T0 + 2 * HOUR, T0, T0 + HOUR, lead) is None


def test_an_openadr_event_becomes_a_schedule_with_its_randomized_start() -> None:
    from dr_coordinator.domain.intake import IntakeError, from_openadr
    from schemas.openadr import OadrEvent

    event = OadrEvent.model_validate(
        {
            "id": "e1",
            "programID": "p1",
            "intervalPeriod": {"start": "2026-07-01T15:00:00Z", "duration": "PT15M", "randomizeStart": "PT2M"},
            "intervals": [
                {"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]},
                {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [120.0]}]},
                {"id": 2, "payloads": [{"type": "PRICE", "values": [0.7]}]},
            ],
        }
    )
    ask = from_openadr(event)
    assert [(i.start, i.level, i.import_limit_kw) for i in ask.intervals] == [
        (T0, 1, None),
        (T0 + timedelta(minutes=15), None, 120.0),
        (T0 + timedelta(minutes=30), 3, None),  # 0.7 reaches all three price thresholds
    ]
    assert (ask.start, ask.end, ask.randomize_start_s) == (T0, T0 + timedelta(minutes=45), 120.0)
    # The row's summaries: highest level, smallest cap.
    assert (ask.level, ask.import_limit_kw) == (3, 120.0)
    bad = event.model_copy(update={"intervals": [event.intervals[0].model_copy(update={"payloads": []})]})
    with pytest.raises(IntakeError) as err:
        from_openadr(bad)
    assert err.value.code == "unsupported_payload"
