"""The DR event saga: ``decide(saga, message, now) -> Decision(new saga, events)``.

Event states: received -> scheduled -> dispatching -> active -> restoring ->
completed | partially_failed | failed | cancelled (received/scheduled -> cancelled directly).
Each facility: pending -> dispatching -> active -> restoring -> restored | failed | opted_out |
cancelled. A facility whose dispatch fails for good is compensated (restoring, then failed).
Messages not valid in the current state raise :class:`IllegalTransitionError`. Duplicate
command results are no-ops. Pure: no I/O; ``now`` is injected.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from dr_coordinator.domain.commands import (
    ApplyPlans,
    Cancel,
    CommandIssued,
    DomainEvent,
    Message,
    Modify,
    Noted,
    OptOut,
    RecordCommandAcknowledged,
    RecordCommandFailed,
    ReleaseHold,
    Schedule,
    StartDispatch,
    StartRestore,
    StateChanged,
)
from dr_coordinator.domain.planner import FacilityPlan, Strategy, ZoneAction
from dr_coordinator.domain.schedule import missed
from dr_coordinator.domain.zones import ZoneClaim, diff_plan, held_by_earlier, restore_or_hand_over
from schemas.dr import DrEventState as E
from schemas.dr import FacilityDrState as F

TERMINAL_EVENT_STATES = frozenset({E.COMPLETED, E.PARTIALLY_FAILED, E.FAILED, E.CANCELLED, E.MISSED})
TERMINAL_FACILITY_STATES = frozenset({F.RESTORED, F.FAILED, F.OPTED_OUT, F.CANCELLED})
RESTORE = "restore"


class IllegalTransitionError(ValueError):
    """The message is not valid in the saga's current state."""


@dataclass(frozen=True)
class FacilitySaga:
    facility_id: str
    state: F = F.PENDING
    criticality_tier: int = 3
    actions: tuple[ZoneAction, ...] = ()
    awaiting: frozenset[str] = frozenset()  # "zone_id|action" not yet acknowledged
    outcome: F | None = None  # where restoring ends: restored, failed, opted_out or cancelled
    reason: str | None = None
    restore_failed: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_FACILITY_STATES


@dataclass(frozen=True)
class Saga:
    dr_event_id: uuid.UUID
    state: E
    start: datetime
    end: datetime
    priority: int = 0
    facilities: tuple[FacilitySaga, ...] = ()
    version: int = 0
    cancel_requested: bool = False
    strategy: str | None = None
    interval_index: int = 0  # the schedule's interval the facilities' plans are for
    replan_due: bool = False  # modified while under way: re-plan from the current state
    # Context, not state: zones of these facilities held by other running events (decision 0421).
    others: tuple[ZoneClaim, ...] = ()

    def claims_on(self, facility_id: str) -> list[ZoneClaim]:
        return [c for c in self.others if c.facility_id == facility_id and c.dr_event_id != self.dr_event_id]

    def facility(self, facility_id: str) -> FacilitySaga:
        for f in self.facilities:
            if f.facility_id == facility_id:
                return f
        raise IllegalTransitionError(f"facility {facility_id} is not part of event {self.dr_event_id}")

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_EVENT_STATES


@dataclass
class Decision:
    saga: Saga
    events: list[DomainEvent] = field(default_factory=list)
    state_changed: bool = False  # the saga differs from the one decided on (e.g. one fewer ack awaited)

    @property
    def changed(self) -> bool:
        return bool(self.events) or self.state_changed


def _key(zone_id: str, action: str) -> str:
    return f"{zone_id}|{action}"


class _Builder:
    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.facilities = {f.facility_id: f for f in saga.facilities}
        self.events: list[DomainEvent] = []

    def set_event_state(self, to: E, reason: str | None = None) -> None:
        if self.saga.state != to:
            self.events.append(StateChanged(None, self.saga.state.value, to.value, reason))
            self.saga = replace(self.saga, state=to)

    def set_facility(self, fac: FacilitySaga, to: F, why: str | None = None, **changes: object) -> FacilitySaga:
        new = replace(fac, state=to, **changes)  # type: ignore[arg-type]
        if fac.state != to:
            self.events.append(StateChanged(fac.facility_id, fac.state.value, to.value, why))
        self.facilities[fac.facility_id] = new
        return new

    def update(self, fac: FacilitySaga, **changes: object) -> FacilitySaga:
        new = replace(fac, **changes)  # type: ignore[arg-type]
        self.facilities[fac.facility_id] = new
        return new

    def start_restore(self, fac: FacilitySaga, outcome: F, reason: str, order: int = 0) -> None:
        """Compensation: let go of every planned zone (restore it, or hand it over to another event
        that holds it), then end in ``outcome``."""
        if fac.state in TERMINAL_FACILITY_STATES or fac.state == F.RESTORING:
            if fac.state == F.RESTORING and outcome == F.FAILED:
                self.update(fac, outcome=F.FAILED, reason=reason)
            return
        if fac.state == F.PENDING or not fac.actions:
            final = F.CANCELLED if outcome == F.RESTORED and self.saga.cancel_requested else outcome
            if fac.state == F.PENDING and outcome == F.RESTORED:
                final = F.CANCELLED
            self.set_facility(fac, final, reason, awaiting=frozenset(), outcome=final)
            return
        commands = self.release_zones(fac, [a.zone_id for a in fac.actions], order, supersede=True)
        if not commands:
            final = F.CANCELLED if outcome == F.RESTORED and self.saga.cancel_requested else outcome
            self.set_facility(fac, final, f"{reason}; every zone handed over", awaiting=frozenset(), outcome=final)
            return
        awaiting = frozenset(_key(c.zone_id, c.action) for c in commands)
        self.set_facility(fac, F.RESTORING, reason, awaiting=awaiting, outcome=outcome, reason=reason)
        self.events.extend(commands)

    def release_zones(
        self, fac: FacilitySaga, zone_ids: list[str], order: int, *, supersede: bool
    ) -> list[CommandIssued]:
        """The commands that let go of ``zone_ids``: a restore, or the value of an earlier event
        still holding the zone; nothing when a later event already took it over."""
        out: list[CommandIssued] = []
        claims = self.saga.claims_on(fac.facility_id)
        for zone_id in zone_ids:
            rel = restore_or_hand_over(zone_id, self.saga.dr_event_id, self.saga.start, self.saga.priority, claims)
            if rel.handed_to is not None:
                self.events.append(
                    Noted(fac.facility_id, "zone_handed_over", {"zone_id": zone_id, "to": str(rel.handed_to)})
                )
            if rel.action is None:
                continue
            revision = 0 if rel.action == RESTORE and supersede else self.saga.version + 1
            out.append(
                CommandIssued(fac.facility_id, zone_id, rel.action, rel.value, order, supersede, revision=revision)
            )
        return out

    def build(self, original: Saga | None = None) -> Decision:
        facilities = tuple(self.facilities[k] for k in sorted(self.facilities))
        saga = replace(self.saga, facilities=facilities)
        return Decision(saga, self.events, original is not None and saga != original)


def dispatch_delay_s(start: datetime, received_at: datetime, dispatched_at: datetime) -> float:
    """SLO 3 (docs/slo.md): seconds from the event's start -- or its receipt, when it arrived after
    the start -- until every facility was dispatched or resolved; 0 when that was done in time."""
    due = max(start, received_at)
    return max(0.0, (dispatched_at - due).total_seconds())


def completed_dispatch(decision: Decision) -> bool:
    """Whether this decision moved the event from dispatching to active (every command out)."""
    return any(
        isinstance(ev, StateChanged)
        and ev.facility_id is None
        and ev.from_state == E.DISPATCHING.value
        and ev.to_state == E.ACTIVE.value
        for ev in decision.events
    )


def _dispatch_order(facilities: list[FacilitySaga]) -> list[FacilitySaga]:
    """Criticality tier 4 (discretionary) first, life safety (1) last."""
    return sorted(facilities, key=lambda f: (-f.criticality_tier, f.facility_id))


def _settle(b: _Builder) -> None:
    """Advance the event once its facilities allow it."""
    facs = list(b.facilities.values())
    if b.saga.state == E.DISPATCHING and all(f.state not in (F.PENDING, F.DISPATCHING) for f in facs):
        b.set_event_state(E.ACTIVE, "every facility dispatched or resolved")
    if b.saga.state == E.ACTIVE and all(f.terminal for f in facs):
        b.set_event_state(E.RESTORING, "no facility left active")
    if b.saga.state == E.RESTORING and all(f.terminal for f in facs):
        b.set_event_state(_final_state(b.saga, facs), "every facility restored or resolved")


def _final_state(saga: Saga, facs: list[FacilitySaga]) -> E:
    if saga.cancel_requested:
        return E.CANCELLED
    counted = [f for f in facs if f.state not in (F.OPTED_OUT, F.CANCELLED)]
    failed = [f for f in counted if f.state == F.FAILED]
    if not failed:
        return E.COMPLETED
    return E.FAILED if len(failed) == len(counted) else E.PARTIALLY_FAILED


def decide(saga: Saga, message: Message, now: datetime) -> Decision:
    b = _Builder(saga)
    if saga.terminal:
        if isinstance(message, RecordCommandAcknowledged | RecordCommandFailed):
            return _late_result(b, message)
        raise IllegalTransitionError(f"event is {saga.state.value}: {type(message).__name__} not allowed")
    match message:
        case Schedule():
            if saga.state != E.RECEIVED:
                raise IllegalTransitionError(f"cannot schedule an event that is {saga.state.value}")
            if missed(saga.end, now):
                _missed(b, now)
            else:
                b.set_event_state(E.SCHEDULED, "timers armed")
        case ApplyPlans():
            _apply_plans(b, message)
        case StartDispatch():
            _start_dispatch(b, message, now)
        case StartRestore():
            if saga.state not in (E.DISPATCHING, E.ACTIVE):
                raise IllegalTransitionError(f"cannot restore an event that is {saga.state.value}")
            b.set_event_state(E.RESTORING, message.reason)
            for order, fac in enumerate(_dispatch_order(list(b.facilities.values()))):
                b.start_restore(fac, F.RESTORED, message.reason, order)
        case Cancel():
            _cancel(b, message)
        case OptOut():
            fac = saga.facility(message.facility_id)
            if fac.terminal:
                raise IllegalTransitionError(f"facility {fac.facility_id} is already {fac.state.value}")
            if fac.state == F.PENDING:
                b.set_facility(fac, F.OPTED_OUT, message.reason, outcome=F.OPTED_OUT)
            elif fac.state == F.RESTORING:
                b.update(fac, outcome=F.OPTED_OUT if fac.outcome != F.FAILED else F.FAILED)
            else:
                b.start_restore(fac, F.OPTED_OUT, message.reason)
        case ReleaseHold():
            _release_hold(b, message)
        case Modify():
            _modify(b, message)
        case RecordCommandAcknowledged():
            _acknowledged(b, message)
        case RecordCommandFailed():
            _failed(b, message)
    _settle(b)
    return b.build(saga)


def _missed(b: _Builder, now: datetime) -> None:
    reason = f"missed: the event ended at {b.saga.end.isoformat()}, before it could be dispatched ({now.isoformat()})"
    for fac in list(b.facilities.values()):
        if not fac.terminal:
            b.set_facility(fac, F.CANCELLED, reason, outcome=F.CANCELLED, reason=reason)
    b.set_event_state(E.MISSED, reason)


def _start_dispatch(b: _Builder, msg: StartDispatch, now: datetime) -> None:
    if b.saga.state != E.SCHEDULED:
        raise IllegalTransitionError(f"cannot dispatch an event that is {b.saga.state.value}")
    if missed(b.saga.end, now):
        _missed(b, now)
        return
    b.saga = replace(b.saga, strategy=msg.strategy, interval_index=msg.interval_index, replan_due=False)
    b.set_event_state(E.DISPATCHING, f"dispatch with strategy {msg.strategy}")
    pending = [f for f in b.facilities.values() if f.state == F.PENDING]
    for order, fac in enumerate(_dispatch_order(pending)):
        plan = msg.plans.get(fac.facility_id)
        if plan is None or plan.strategy is Strategy.HOLD:
            reason = "held for operator: forecast degraded or stale" if plan else "no plan"
            b.set_facility(fac, F.OPTED_OUT, reason, outcome=F.OPTED_OUT, reason=reason)
            continue
        if not plan.actions:
            b.set_facility(fac, F.ACTIVE, "nothing to shed within comfort limits", actions=())
            continue
        awaiting = frozenset(_key(a.zone_id, a.action) for a in plan.actions)
        b.set_facility(fac, F.DISPATCHING, plan.strategy.value, actions=plan.actions, awaiting=awaiting)
        claims = b.saga.claims_on(fac.facility_id)
        for a in plan.actions:
            not_before = msg.not_before.get(fac.facility_id)
            if held_by_earlier(a.zone_id, b.saga.dr_event_id, b.saga.start, b.saga.priority, claims):
                # An earlier event still holds the zone: take it over at our start, not during the lead.
                not_before = max(not_before or b.saga.start, b.saga.start)
            b.events.append(CommandIssued(fac.facility_id, a.zone_id, a.action, a.value, order, not_before=not_before))


def _apply_plans(b: _Builder, msg: ApplyPlans) -> None:
    if b.saga.state not in (E.DISPATCHING, E.ACTIVE):
        raise IllegalTransitionError(f"cannot re-plan an event that is {b.saga.state.value}")
    revision = b.saga.version + 1
    issued = 0
    for order, fac in enumerate(_dispatch_order(list(b.facilities.values()))):
        plan: FacilityPlan | None = msg.plans.get(fac.facility_id)
        if plan is None or plan.strategy is Strategy.HOLD or fac.state not in (F.DISPATCHING, F.ACTIVE):
            continue
        diff = diff_plan(fac.actions, plan.actions)
        if diff.empty:
            continue
        claims = b.saga.claims_on(fac.facility_id)
        commands = [
            CommandIssued(fac.facility_id, a.zone_id, a.action, a.value, order, revision=revision)
            for a in diff.commands
            if not _successor_holds(b.saga, a.zone_id, claims)
        ]
        commands += b.release_zones(fac, list(diff.releases), order, supersede=False)
        awaiting = fac.awaiting | {_key(c.zone_id, c.action) for c in commands}
        to = F.DISPATCHING if commands else fac.state
        b.set_facility(fac, to, msg.reason, actions=plan.actions, awaiting=frozenset(awaiting))
        b.events.extend(commands)
        issued += len(commands)
    b.saga = replace(b.saga, interval_index=msg.interval_index, replan_due=False)
    detail = {"interval": msg.interval_index, "reason": msg.reason, "commands": issued}
    b.events.append(Noted(None, "replanned", detail))


def _successor_holds(saga: Saga, zone_id: str, claims: list[ZoneClaim]) -> bool:
    """A later event already owns the zone: our new value would undo its setpoint."""
    rel = restore_or_hand_over(zone_id, saga.dr_event_id, saga.start, saga.priority, claims)
    return rel.handed_to is not None and rel.action is None


def _release_hold(b: _Builder, msg: ReleaseHold) -> None:
    fac = b.saga.facility(msg.plan.facility_id)
    held = fac.state == F.OPTED_OUT and (fac.reason or "").startswith("held")
    if b.saga.state not in (E.DISPATCHING, E.ACTIVE) or not held:
        raise IllegalTransitionError(f"facility {fac.facility_id} is not held in a running event")
    if not msg.plan.actions:
        raise IllegalTransitionError("the override plan sheds nothing")
    awaiting = frozenset(_key(a.zone_id, a.action) for a in msg.plan.actions)
    b.set_facility(
        fac,
        F.DISPATCHING,
        f"hold released by operator: {msg.plan.strategy.value}",
        actions=msg.plan.actions,
        awaiting=awaiting,
        outcome=None,
        reason=None,
    )
    for a in msg.plan.actions:
        b.events.append(CommandIssued(fac.facility_id, a.zone_id, a.action, a.value, 0))


def _cancel(b: _Builder, msg: Cancel) -> None:
    b.saga = replace(b.saga, cancel_requested=True)
    if b.saga.state in (E.RECEIVED, E.SCHEDULED):
        for fac in list(b.facilities.values()):
            if not fac.terminal:
                b.set_facility(fac, F.CANCELLED, msg.reason, outcome=F.CANCELLED)
        b.set_event_state(E.CANCELLED, msg.reason)
        return
    if b.saga.state == E.RESTORING:
        b.events.append(Noted(None, "cancel_requested", {"reason": msg.reason}))
        return
    b.set_event_state(E.RESTORING, msg.reason)
    for order, fac in enumerate(_dispatch_order(list(b.facilities.values()))):
        b.start_restore(fac, F.RESTORED, msg.reason, order)


def _modify(b: _Builder, msg: Modify) -> None:
    if msg.end <= msg.start:
        raise IllegalTransitionError("end must be after start")
    if b.saga.state in (E.RECEIVED, E.SCHEDULED):
        b.saga = replace(b.saga, start=msg.start, end=msg.end)
        b.events.append(Noted(None, "modified", {"start": msg.start.isoformat(), "end": msg.end.isoformat()}))
        return
    if b.saga.state in (E.DISPATCHING, E.ACTIVE):
        # Under way: the start already happened; the new values are re-planned from the zones'
        # current state by the planning job (ApplyPlans), which sends only what differs.
        b.saga = replace(b.saga, end=msg.end, replan_due=True)
        b.events.append(
            Noted(
                None,
                "modified",
                {
                    "end": msg.end.isoformat(),
                    "start_unchanged": True,
                    "target_kw": msg.target_kw,
                    "import_limit_kw": msg.import_limit_kw,
                    "level": msg.level,
                    "intervals": len(msg.intervals),
                    "replan": True,
                },
            )
        )
        return
    raise IllegalTransitionError(f"cannot modify an event that is {b.saga.state.value}")


def _acknowledged(b: _Builder, msg: RecordCommandAcknowledged) -> None:
    fac = b.saga.facility(msg.facility_id)
    key = _key(msg.zone_id, msg.action)
    if key not in fac.awaiting:
        return  # duplicate or superseded result: nothing to do
    fac = b.update(fac, awaiting=fac.awaiting - {key})
    if fac.awaiting:
        return
    if fac.state == F.DISPATCHING:
        b.set_facility(fac, F.ACTIVE, "every zone command acknowledged")
    elif fac.state == F.RESTORING:
        outcome = fac.outcome or F.RESTORED
        if outcome == F.RESTORED and b.saga.cancel_requested:
            outcome = F.CANCELLED
        b.set_facility(fac, outcome, "every zone restored")


def _failed(b: _Builder, msg: RecordCommandFailed) -> None:
    fac = b.saga.facility(msg.facility_id)
    key = _key(msg.zone_id, msg.action)
    if key not in fac.awaiting:
        return
    if fac.state == F.DISPATCHING:
        # Compensate the zones that may already be shed; the facility ends failed.
        b.start_restore(fac, F.FAILED, f"dispatch failed: {msg.reason}")
    elif fac.state == F.RESTORING:
        fac = b.update(fac, awaiting=fac.awaiting - {key}, restore_failed=True)
        if not fac.awaiting:
            b.set_facility(fac, F.FAILED, f"restore failed: {msg.reason}")


def _late_result(b: _Builder, msg: RecordCommandAcknowledged | RecordCommandFailed) -> Decision:
    """A result after the event ended (e.g. an operator retried a failed restore): log it only."""
    kind = "late_ack" if isinstance(msg, RecordCommandAcknowledged) else "late_failure"
    b.events.append(Noted(msg.facility_id, kind, {"zone_id": msg.zone_id, "action": msg.action}))
    return b.build()
