"""Turning a utility's request (OpenADR 3 event or our JSON) into a validated event ask. Pure.

Raises :class:`IntakeError` with an HTTP status and a reason the utility can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dr_coordinator.domain.targeting import Target, TargetFormatError, parse_targets
from schemas.dr_api import DrEventRequest
from schemas.openadr import OadrEvent

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


def from_openadr(event: OadrEvent) -> EventAsk:
    notes: list[str] = []
    periods = [i.intervalPeriod for i in event.intervals if i.intervalPeriod is not None]
    if event.intervalPeriod is not None:
        periods.insert(0, event.intervalPeriod)
    if not periods:
        raise IntakeError(422, "validation_error", "event has no intervalPeriod (start and duration)")
    starts = [as_utc(p.start, notes) for p in periods]
    ends = [end_of(s, p.duration) for s, p in zip(starts, periods, strict=True)]
    shed: list[float] = []
    limit: list[float] = []
    levels: list[int] = []
    for interval in event.intervals:
        for payload in interval.payloads:
            numbers = [v for v in payload.values if isinstance(v, int | float) and not isinstance(v, bool)]
            if payload.type == "LOAD_SHED_DELTA_AVAILABLE":
                shed += [float(v) for v in numbers]
            elif payload.type == "IMPORT_CAPACITY_LIMIT":
                limit += [float(v) for v in numbers]
            elif payload.type == "SIMPLE":
                levels += [int(v) for v in numbers]
    if not (shed or limit or levels):
        raise IntakeError(
            422,
            "unsupported_payload",
            "event carries none of the payloads we act on: LOAD_SHED_DELTA_AVAILABLE, IMPORT_CAPACITY_LIMIT, SIMPLE",
        )
    if any(v < 0 for v in shed + limit) or any(v < 0 or v > 10 for v in levels):
        raise IntakeError(422, "validation_error", "payload values must be >= 0 (SIMPLE levels 0..10)")
    try:
        targets = parse_targets(event.targets)
    except TargetFormatError as exc:
        raise IntakeError(422, "validation_error", str(exc)[:300]) from None
    priority = 0 if event.priority is None else max(0, 100 - event.priority)  # OpenADR: lower number wins
    modified = parse_vtn_time(event.modificationDateTime, [])
    return EventAsk(
        utility_event_id=event_key(event.id, event.createdDateTime),
        program_id=event.programID,
        facility_ids=None,
        targets=targets,
        openadr=True,
        vtn_event_id=event.id,
        vtn_created_at=event.createdDateTime,
        vtn_modified_at=modified,
        start=min(starts),
        end=max(ends),
        target_kw=max(shed) if shed else None,
        import_limit_kw=min(limit) if limit else None,
        level=max(levels) if levels else None,
        priority=priority,
        notes=notes,
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
