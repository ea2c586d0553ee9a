"""A utility program's rules applied to an event before dispatch (decision 0850). Pure.

- **notice**: the utility must announce an event at least ``notice_s`` before its start. With less
  notice the program does not oblige the customer: nothing is dispatched, every targeted facility is
  declined (opted out) with the reason.
- **maximum duration**: the program obliges the customer for at most ``max_duration_s``; a longer
  event is dispatched for its first ``max_duration_s`` (the schedule is cut there) and the cut is
  reported.
- **events per day**: a facility already in ``max_events_per_day`` events of the program on the
  (facility-local) day of this event's start is declined for this one; the others are dispatched.
- **dispatch lead**: how long before the start the program's events are dispatched (replaces the
  platform default); not a rule an event can break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from dr_coordinator.domain.schedule import IntervalAsk


@dataclass(frozen=True)
class ProgramRules:
    notice_s: int | None = None
    max_duration_s: int | None = None
    dispatch_lead_s: int | None = None
    max_events_per_day: int | None = None


@dataclass(frozen=True)
class RuleCheck:
    """What the rules let through: the facilities to dispatch, those declined (and why), the end and
    the schedule after a cut, and the findings about the whole event to tell the utility."""

    facility_ids: tuple[str, ...]
    declined: dict[str, str] = field(default_factory=dict)
    end: datetime | None = None
    intervals: tuple[IntervalAsk, ...] = ()
    findings: tuple[str, ...] = ()

    @property
    def dispatchable(self) -> bool:
        return bool(self.facility_ids)


def dispatch_lead_s(program_lead_s: float | None, default_s: float) -> float:
    """The program's dispatch lead where it sets one, else the platform's."""
    return float(program_lead_s) if program_lead_s is not None else default_s


def cut_schedule(intervals: tuple[IntervalAsk, ...], cut: datetime) -> tuple[IntervalAsk, ...]:
    """The intervals that start before ``cut``, the last one ending there at the latest."""
    out = []
    for i in intervals:
        if i.start >= cut:
            continue
        out.append(i if i.end <= cut else replace(i, end=cut))
    return tuple(out)


def check_rules(
    rules: ProgramRules | None,
    *,
    start: datetime,
    end: datetime,
    intervals: tuple[IntervalAsk, ...],
    announced_at: datetime,
    facility_ids: list[str],
    events_that_day: Mapping[str, int],
) -> RuleCheck:
    """Apply the program's rules to an event announced at ``announced_at``. ``events_that_day``: per
    facility, the program's events it already has on the day of this event's start."""
    if rules is None:
        return RuleCheck(tuple(facility_ids), {}, end, intervals, ())
    if rules.notice_s is not None:
        notice = (start - announced_at).total_seconds()
        if notice < rules.notice_s:
            reason = f"notice {max(notice, 0):.0f}s is less than the program's {rules.notice_s}s"
            return RuleCheck((), dict.fromkeys(facility_ids, reason), end, intervals, (reason,))
    findings: list[str] = []
    if rules.max_duration_s is not None and (end - start).total_seconds() > rules.max_duration_s:
        cut = start + timedelta(seconds=rules.max_duration_s)
        findings.append(
            f"duration {(end - start).total_seconds():.0f}s is more than the program's {rules.max_duration_s}s: "
            f"dispatched until {cut.isoformat()}"
        )
        end, intervals = cut, cut_schedule(intervals, cut)
    declined: dict[str, str] = {}
    if rules.max_events_per_day is not None:
        cap = rules.max_events_per_day
        for fid in facility_ids:
            if events_that_day.get(fid, 0) >= cap:
                declined[fid] = f"already in {events_that_day[fid]} of the program's events that day (at most {cap})"
    kept = tuple(f for f in facility_ids if f not in declined)
    return RuleCheck(kept, declined, end, intervals, tuple(findings))


__all__ = ["ProgramRules", "RuleCheck", "check_rules", "cut_schedule", "dispatch_lead_s"]
