"""How a 3.1 report lays out its intervals against the event's (decision 0410 rule 25, decision 0931).

The event's ``reportDescriptors`` say, per payload type, ``reportIntervals``: ``INTERVALS`` (the
default), ``SUB_INTERVALS`` or ``OPEN_INTERVALS``. Our reading of the three options (the OpenAPI
document names them and defers to the User Guide):

- ``INTERVALS``: each report interval is one of the event's intervals: its ``id`` is that interval's,
  a period, if given, is that interval's, and a resource reports each interval at most once;
- ``SUB_INTERVALS``: each report interval is a piece of one of the event's intervals: its ``id`` is
  that interval's and its own ``intervalPeriod`` lies within it;
- ``OPEN_INTERVALS``: the VEN's own intervals: each carries its ``intervalPeriod`` (nothing else says
  when it is) and a resource numbers them once each.

Pure: no I/O. A violation raises :class:`ApiProblem` 400 naming the resource, the interval and why.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sim.utility.model import ApiProblem

LAYOUTS = ("INTERVALS", "SUB_INTERVALS", "OPEN_INTERVALS")
_WHEN = TypeAdapter(datetime)
_LONG = TypeAdapter(timedelta)


def _period(p: Any) -> tuple[datetime, timedelta | None] | None:
    if not isinstance(p, dict) or "start" not in p:
        return None
    try:
        start = _WHEN.validate_python(p["start"])
        duration = _LONG.validate_python(p["duration"]) if p.get("duration") else None
    except ValidationError:
        return None  # a duration in years or months: too vague to hold a report to
    return start, duration


def event_periods(event: dict[str, Any]) -> dict[int, tuple[datetime, datetime]]:
    """The event's intervals by id with their periods: an interval's own period, else the event's,
    following on from the interval before (in id order). Intervals whose period cannot be told are left out."""
    default = _period(event.get("intervalPeriod"))
    cursor = default[0] if default else None
    out: dict[int, tuple[datetime, datetime]] = {}
    intervals = [i for i in event.get("intervals") or [] if isinstance(i, dict) and isinstance(i.get("id"), int)]
    for interval in sorted(intervals, key=lambda i: i["id"]):
        own = _period(interval.get("intervalPeriod"))
        start = own[0] if own else cursor
        duration = (own[1] if own and own[1] else None) or (default[1] if default else None)
        if start is None or duration is None or duration <= timedelta(0):
            cursor = None
            continue
        out[interval["id"]] = (start, start + duration)
        cursor = start + duration
    return out


def layouts_asked(event: dict[str, Any]) -> dict[str, str]:
    """payloadType -> the layout its reportDescriptor asks (default ``INTERVALS``)."""
    out: dict[str, str] = {}
    for d in event.get("reportDescriptors") or []:
        if isinstance(d, dict) and isinstance(d.get("payloadType"), str):
            layout = d.get("reportIntervals") or "INTERVALS"
            out.setdefault(d["payloadType"], layout if layout in LAYOUTS else "INTERVALS")
    return out


def check_report_layout(report: dict[str, Any], event: dict[str, Any] | None) -> None:
    """400 when a report interval does not follow the layout the event asks for its payload types.
    Reports of unknown (deleted) events and payloads no descriptor asks for are not held to a layout."""
    if event is None:
        return
    asked = layouts_asked(event)
    if not asked:
        return
    periods = event_periods(event)
    ids = sorted(periods)
    for resource in report.get("resources") or []:
        name = resource.get("resourceName")
        seen: dict[str, set[Any]] = {}
        for interval in resource.get("intervals") or []:
            kinds = {p.get("type") for p in interval.get("payloads") or [] if isinstance(p, dict)}
            for layout in sorted({asked[k] for k in kinds if k in asked}):
                why = _violation(layout, interval, periods, ids, seen.setdefault(layout, set()))
                if why:
                    raise ApiProblem(
                        400,
                        "Bad Request",
                        f"OpenADR 3.1: resource {name!r} interval {interval.get('id')!r} breaks the event's "
                        f"reportIntervals {layout}: {why}",
                    )


def _violation(
    layout: str,
    interval: dict[str, Any],
    periods: dict[int, tuple[datetime, datetime]],
    ids: list[int],
    seen: set[Any],
) -> str | None:
    interval_id = interval.get("id")
    own = _period(interval.get("intervalPeriod"))
    if layout == "OPEN_INTERVALS":
        if own is None or own[1] is None:
            return "the VEN's own intervals each carry an intervalPeriod with start and duration"
        if interval_id in seen:
            return "interval ids are numbered once each within a resource"
        seen.add(interval_id)
        return None
    if interval_id not in periods:
        return f"the id names none of the event's intervals ({ids})"
    lo, hi = periods[interval_id]
    if layout == "INTERVALS":
        if interval_id in seen:
            return "each event interval is reported once per resource"
        seen.add(interval_id)
        if own is not None and (own[0] != lo or (own[1] is not None and own[0] + own[1] != hi)):
            return f"its intervalPeriod differs from the event interval's ({lo.isoformat()} to {hi.isoformat()})"
        return None
    # SUB_INTERVALS
    if own is None or own[1] is None:
        return "a sub-interval carries its own intervalPeriod with start and duration"
    if own[0] < lo or own[0] + own[1] > hi or own[1] <= timedelta(0):
        return f"it does not lie within event interval {interval_id} ({lo.isoformat()} to {hi.isoformat()})"
    return None
