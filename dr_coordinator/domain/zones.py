"""Per-zone reasoning across plans and events. Pure.

- :func:`diff_plan`: moving a facility from one plan to another (next interval, a modified
  event) issues only what differs: zones whose value changes, zones newly shed, and restores of
  zones the new plan no longer sheds.
- :func:`zone_owner` / :func:`restore_or_hand_over`: several events can hold the same zone
  (back-to-back events, a later event dispatched during its lead while the earlier one still
  runs). The zone belongs to the event that dispatched it last among those still holding it; an
  event that lets go of a zone another event holds hands the zone over (to that event's value)
  instead of restoring it, so it never undoes a later event's setpoint (decision 0421).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dr_coordinator.domain.planner import ZoneAction

VALUE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PlanDiff:
    commands: tuple[ZoneAction, ...]  # set these zones to these values
    releases: tuple[str, ...]  # zone ids this plan no longer sheds (restore or hand over)

    @property
    def empty(self) -> bool:
        return not self.commands and not self.releases


def diff_plan(current: Sequence[ZoneAction], wanted: Sequence[ZoneAction]) -> PlanDiff:
    now = {a.zone_id: a for a in current}
    commands = []
    for a in sorted(wanted, key=lambda a: a.zone_id):
        old = now.get(a.zone_id)
        if old is None or old.action != a.action or abs(old.value - a.value) > VALUE_TOLERANCE:
            commands.append(a)
    kept = {a.zone_id for a in wanted}
    releases = tuple(sorted(z for z in now if z not in kept))
    return PlanDiff(tuple(commands), releases)


@dataclass(frozen=True)
class ZoneClaim:
    """An event holding a zone of a facility at a value (its facility dispatching or active)."""

    dr_event_id: uuid.UUID
    facility_id: str
    zone_id: str
    action: str
    value: float
    start: datetime  # the event's start: a later start takes the zone over
    priority: int = 0


def zone_owner(claims: Iterable[ZoneClaim]) -> ZoneClaim | None:
    """The claim that owns the zone: the latest start wins (the later event takes over at its
    start); for simultaneous starts the higher priority, then the event id (deterministic)."""
    best: ZoneClaim | None = None
    for c in claims:
        if best is None or (c.start, c.priority, str(c.dr_event_id)) > (
            best.start,
            best.priority,
            str(best.dr_event_id),
        ):
            best = c
    return best


def _rank(start: datetime, priority: int, dr_event_id: uuid.UUID) -> tuple[datetime, int, str]:
    return (start, priority, str(dr_event_id))


@dataclass(frozen=True)
class Release:
    """What an event does with a zone it lets go of: restore it, set it to the value of an earlier
    event that still holds it (hand back), or nothing when a later event already took it over."""

    zone_id: str
    action: str | None  # restore | set_setpoint | set_lighting | None (leave it to the successor)
    value: float | None
    handed_to: uuid.UUID | None = None


def restore_or_hand_over(
    zone_id: str, dr_event_id: uuid.UUID, start: datetime, priority: int, others: Iterable[ZoneClaim]
) -> Release:
    """``others``: claims on the facility's zones by *other* events still holding them."""
    owner = zone_owner(c for c in others if c.zone_id == zone_id)
    if owner is None:
        return Release(zone_id, "restore", None)
    if _rank(owner.start, owner.priority, owner.dr_event_id) > _rank(start, priority, dr_event_id):
        return Release(zone_id, None, None, owner.dr_event_id)  # the successor's setpoint stands
    return Release(zone_id, owner.action, owner.value, owner.dr_event_id)


def held_by_earlier(
    zone_id: str, dr_event_id: uuid.UUID, start: datetime, priority: int, others: Iterable[ZoneClaim]
) -> bool:
    """Whether an earlier event still holds the zone: a successor's command then waits for its own
    start instead of landing during the dispatch lead, inside the earlier event."""
    return any(
        c.zone_id == zone_id and _rank(c.start, c.priority, c.dr_event_id) < _rank(start, priority, dr_event_id)
        for c in others
    )


def overlap_kind(
    start: datetime, end: datetime, other_start: datetime, other_end: datetime, lead: timedelta
) -> str | None:
    """How a new event meets an existing one on the same facilities, counting the dispatch lead
    (each event's commands go out ``lead`` before its start):

    - ``"clash"``: the periods themselves overlap (refused, 409);
    - ``"handover"``: only a dispatch lead reaches into the other event (back-to-back, or a gap
      shorter than the lead): accepted; the later event takes the shared zones over at its start;
    - ``None``: they never meet.
    """
    if start < other_end and other_start < end:
        return "clash"
    if start - lead < other_end and other_start - lead < end:
        return "handover"
    return None
