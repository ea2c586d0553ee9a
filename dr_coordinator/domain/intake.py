"""Turning a utility's request (OpenADR 3 event or our JSON) into a validated event ask. Pure.

Raises :class:`IntakeError` with an HTTP status and a reason the utility can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dr_coordinator.domain.schedule import IntervalAsk, Period, RawInterval, ScheduleError, build_schedule
from dr_coordinator.domain.targeting import Target, TargetFormatError, parse_targets
from schemas.dr_api import DrEventRequest
from schemas.openadr import IntervalPeriod, OadrEvent

UTC_NOTE = "timestamp without UTC offset read as UTC"


class IntakeError(ValueError):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass
class EventAsk:
    utility_event_id: str
    program_id: str | None
    facility_ids: list[str] | None  # None: every facility enrolled with the utility
    start: datetime
    end: datetime
    target_kw: float | None = None
    import_limit_kw: float | None = None
    level: int | None = None
    priority: int = 0
    notes: list[str] = field(default_factory=list)
    intervals: tuple[IntervalAsk, ...] = ()  # the schedule; empty: one window with the asks above
    randomize_start_s: float | None = None
    # OpenADR only: the targets as sent (None: no targets), the VTN's own id and timestamps.
    targets: list[Target] | None = None
    openadr: bool = False
    vtn_event_id: str | None = None
    vtn_created_at: str | None = None
    vtn_modified_at: datetime | None = None


def event_key(vtn_event_id: str, created: str | None) -> str:
    """The platform's name of a VTN event: its id, qualified by its creation time when the VTN
    gives one, so that an id reused by a restarted VTN names a different event."""
    return f"{vtn_event_id}@{created}" if created else vtn_event_id


def parse_vtn_time(value: str | None, notes: list[str]) -> datetime | None:
    """RFC 3339, or the reference VTN's ``YYYY-MM-DD HH:MM:SS`` without an offset (read as UTC)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(parsed, notes)


@dataclass(frozen=True)
class Limits:
    min_duration_s: float
    max_duration_s: float
    max_start_skew_s: float


def parse_body(raw: bytes) -> Any:
    """JSON, or a JSON document encoded as a JSON string (some VTNs double-encode)."""
    try:
        value = json.loads(raw)
        if isinstance(value, str):
            value = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntakeError(400, "invalid_json", f"body is not JSON: {exc}"[:300]) from None
    if not isinstance(value, dict):
        raise IntakeError(422, "validation_error", "body must be a JSON object")
    return value


def as_utc(value: datetime, notes: list[str]) -> datetime:
    if value.tzinfo is None:
        if UTC_NOTE not in notes:
            notes.append(UTC_NOTE)
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def end_of(start: datetime, duration: timedelta | float) -> datetime:
    """``start + duration``; a duration past the calendar is a client error, not a crash."""
    try:
        delta = duration if isinstance(duration, timedelta) else timedelta(seconds=duration)
        return start + delta
    except (OverflowError, ValueError):
        raise IntakeError(
            422, "duration_out_of_range", "start + duration is beyond any date we can represent"
        ) from None


def _period(p: IntervalPeriod | None, notes: list[str]) -> Period | None:
    if p is None:
        return None
    return Period(as_utc(p.start, notes), p.duration, p.randomizeStart)


def from_openadr(event: OadrEvent) -> EventAsk:
    notes: list[str] = []
    default = _period(event.intervalPeriod, notes)
    raw = [
        RawInterval(i.id, _period(i.intervalPeriod, notes), {p.type: p.values for p in i.payloads})
        for i in event.intervals
    ]
    if default is None and any(r.period is None for r in raw):
        raise IntakeError(422, "validation_error", "event has no intervalPeriod (start and duration)")
    try:
        schedule = build_schedule(default, raw)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, ScheduleError):
            raise IntakeError(422, "validation_error", str(exc)) from None
        raise IntakeError(
            422, "duration_out_of_range", "start + duration is beyond any date we can represent"
        ) from None
    asks = (
        i.level is not None or i.import_limit_kw is not None or i.shed_kw is not None or i.setpoint_kw is not None
        for i in schedule
    )
    if not any(asks):
        raise IntakeError(
            422,
            "unsupported_payload",
            "event carries none of the payloads we act on: "
            "LOAD_SHED_DELTA_AVAILABLE, IMPORT_CAPACITY_LIMIT, SIMPLE, DISPATCH_SETPOINT, PRICE",
        )
    try:
        targets = parse_targets(event.targets)
    except TargetFormatError as exc:
        raise IntakeError(422, "validation_error", str(exc)[:300]) from None
    priority = 0 if event.priority is None else max(0, 100 - event.priority)  # OpenADR: lower number wins
    modified = parse_vtn_time(event.modificationDateTime, [])
    sheds = [i.shed_kw for i in schedule if i.shed_kw is not None]
    limits = [i.import_limit_kw for i in schedule if i.import_limit_kw is not None]
    levels = [i.level for i in schedule if i.level is not None]
    randomize = [p.randomize_start for p in [default, *(r.period for r in raw)] if p and p.randomize_start]
    return EventAsk(
        utility_event_id=event_key(event.id, event.createdDateTime),
        program_id=event.programID,
        facility_ids=None,
        targets=targets,
        openadr=True,
        vtn_event_id=event.id,
        vtn_created_at=event.createdDateTime,
        vtn_modified_at=modified,
        start=schedule[0].start,
        end=max(i.end for i in schedule),
        # Summaries of the schedule (the event row, its announcement); planning uses the intervals.
        target_kw=max(sheds) if sheds else None,
        import_limit_kw=min(limits) if limits else None,
        level=max(levels) if levels else None,
        priority=priority,
        notes=notes,
        intervals=tuple(schedule),
        randomize_start_s=max(r.total_seconds() for r in randomize) if randomize else None,
    )


def from_platform(req: DrEventRequest) -> EventAsk:
    notes: list[str] = []
    start = as_utc(req.start, notes)
    return EventAsk(
        utility_event_id=req.event_id,
        program_id=req.program_id,
        facility_ids=list(req.facilities) if req.facilities else None,
        start=start,
        end=end_of(start, req.duration_s),
        target_kw=req.target_kw,
        level=req.level,
        priority=req.priority,
        notes=notes,
    )


def check_timing(start: datetime, end: datetime, now: datetime, limits: Limits) -> None:
    if start < now - timedelta(seconds=limits.max_start_skew_s):
        raise IntakeError(422, "start_in_past", f"start {start.isoformat()} is in the past (now {now.isoformat()})")
    duration = (end - start).total_seconds()
    if duration < limits.min_duration_s or duration > limits.max_duration_s:
        raise IntakeError(
            422,
            "duration_out_of_range",
            f"duration {duration:.0f}s outside {limits.min_duration_s:.0f}..{limits.max_duration_s:.0f}s",
        )


def check_facilities(requested: list[str], enrolled_active: set[str]) -> list[str]:
    unique = sorted(set(requested))
    unknown = [f for f in unique if f not in enrolled_active]
    if unknown:
        raise IntakeError(
            422,
            "unknown_facility",
            f"{len(unknown)} facilit{'y is' if len(unknown) == 1 else 'ies are'} unknown, inactive or not enrolled",
            {"facility_ids": unknown[:100]},
        )
    if not unique:
        raise IntakeError(422, "no_facilities", "the event targets no facility")
    return unique
