"""The OpenADR 3 report sent to the utility's VTN at the end of an event. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FacilityResult:
    facility_id: str
    state: str
    target_kw: float | None
    baseline_kw: float | None
    actual_kw: float | None
    baseline_method: str | None

    @property
    def achieved_kw(self) -> float | None:
        if self.baseline_kw is None or self.actual_kw is None:
            return None
        return self.baseline_kw - self.actual_kw


def _duration(start: datetime, end: datetime) -> str:
    return f"PT{int((end - start).total_seconds())}S"


def build_report(
    *,
    program_id: str | None,
    utility_event_id: str,
    client_name: str,
    state: str,
    start: datetime,
    end: datetime,
    results: list[FacilityResult],
) -> dict[str, Any]:
    """USAGE (kWh), DEMAND (kW), BASELINE (kW), DELTA_USAGE (kWh) per facility, plus status."""
    hours = (end - start).total_seconds() / 3600.0
    resources = []
    for r in results:
        payloads: list[dict[str, Any]] = [{"type": "STATUS", "values": [r.state]}]
        if r.actual_kw is not None:
            payloads.append({"type": "DEMAND", "values": [round(r.actual_kw, 3)]})
            payloads.append({"type": "USAGE", "values": [round(r.actual_kw * hours, 3)]})
        if r.baseline_kw is not None:
            payloads.append({"type": "BASELINE", "values": [round(r.baseline_kw, 3)]})
        if r.achieved_kw is not None:
            payloads.append({"type": "DELTA_USAGE", "values": [round(r.achieved_kw * hours, 3)]})
            payloads.append({"type": "X_ACHIEVED_KW", "values": [round(r.achieved_kw, 3)]})
        resources.append(
            {
                "resourceName": r.facility_id,
                "intervalPeriod": {"start": start.isoformat(), "duration": _duration(start, end)},
                "intervals": [{"id": 0, "payloads": payloads}],
            }
        )
    return {
        "objectType": "REPORT",
        "programID": program_id or "default",
        "eventID": utility_event_id,
        "clientName": client_name,
        "reportName": f"dr-{utility_event_id}-{state}",
        "payloadDescriptors": [
            {"payloadType": "USAGE", "units": "KWH"},
            {"payloadType": "DEMAND", "units": "KW"},
            {"payloadType": "BASELINE", "units": "KW"},
            {"payloadType": "DELTA_USAGE", "units": "KWH"},
        ],
        "resources": resources,
    }


# --- OpenADR 3.x interval reports (3.1-conformant; 3.0.1 adds programID) --------------------------

OPERATING_STATES = {
    # facility state -> OPERATING_STATE value (assumption, decision 0413)
    "active": "RUNNING_CURTAILED",
    "dispatching": "RUNNING_CURTAILED",
    "restoring": "RUNNING_CURTAILED",
    "restored": "NORMAL",
    "pending": "NORMAL",
    "skipped": "NORMAL",
    "cancelled": "NORMAL",
    "failed": "ERROR",
    "restore_failed": "ERROR",
}


@dataclass(frozen=True)
class IntervalReading:
    """One report interval of one resource. Values come from M&V (measured and baseline)."""

    start: datetime
    end: datetime
    usage_kwh: float | None = None
    demand_kw: float | None = None
    baseline_kw: float | None = None
    interval_id: int | None = None  # the report interval's id (the event interval's, by layout); None: position


@dataclass(frozen=True)
class ResourceResult:
    resource_name: str
    facility_state: str
    intervals: tuple[IntervalReading, ...]


@dataclass(frozen=True)
class Wanted:
    """A payload the VTN asked for (an event's reportDescriptor)."""

    payload_type: str
    reading_type: str | None = None
    units: str | None = None


DEFAULT_WANTED = (
    Wanted("USAGE", "DIRECT_READ", "KWH"),
    Wanted("DEMAND", "DIRECT_READ", "KW"),
    Wanted("BASELINE", "ESTIMATED", "KW"),
)
_VALUE_OF = {
    "USAGE": lambda r: r.usage_kwh,
    "DEMAND": lambda r: r.demand_kw,
    "BASELINE": lambda r: r.baseline_kw,
}


def wanted_from_descriptors(descriptors: list[dict[str, Any]] | None) -> tuple[Wanted, ...]:
    """What the event's reportDescriptors ask for, among the payloads we can measure; our default
    set when the event asks for none (or only for payloads we do not measure)."""
    out: list[Wanted] = []
    for d in descriptors or []:
        kind = d.get("payloadType") if isinstance(d, dict) else None
        if isinstance(kind, str) and kind in _VALUE_OF and all(w.payload_type != kind for w in out):
            out.append(Wanted(kind, d.get("readingType"), d.get("units")))
    return tuple(out) or DEFAULT_WANTED


def operating_state(facility_state: str) -> str:
    return OPERATING_STATES.get(facility_state, "NORMAL")


def build_interval_report(
    *,
    version: str,
    program_id: str,
    event_id: str,
    client_name: str,
    report_name: str,
    resources: list[ResourceResult],
    wanted: tuple[Wanted, ...] = DEFAULT_WANTED,
) -> dict[str, Any]:
    """One report for an event: each resource once, interval by interval, each interval carrying
    OPERATING_STATE and the wanted payloads that have a value. Payload descriptors carry their
    ``objectType`` (required by 3.1). A resource with no interval gets one covering nothing measured."""
    descriptors: list[dict[str, Any]] = [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "OPERATING_STATE"}]
    for w in wanted:
        d: dict[str, Any] = {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": w.payload_type}
        if w.reading_type:
            d["readingType"] = w.reading_type
        if w.units:
            d["units"] = w.units
        descriptors.append(d)
    out_resources = []
    for res in sorted(resources, key=lambda r: r.resource_name):
        state = operating_state(res.facility_state)
        intervals = []
        for n, reading in enumerate(sorted(res.intervals, key=lambda r: r.start)):
            payloads: list[dict[str, Any]] = [{"type": "OPERATING_STATE", "values": [state]}]
            for w in wanted:
                value = _VALUE_OF[w.payload_type](reading)
                if value is not None:
                    payloads.append({"type": w.payload_type, "values": [round(float(value), 3)]})
            intervals.append(
                {
                    "id": n if reading.interval_id is None else reading.interval_id,
                    "intervalPeriod": {
                        "start": reading.start.isoformat().replace("+00:00", "Z"),
                        "duration": _duration(reading.start, reading.end),
                    },
                    "payloads": payloads,
                }
            )
        out_resources.append({"resourceName": res.resource_name, "intervals": intervals})
    report: dict[str, Any] = {
        "eventID": event_id,
        "clientName": client_name,
        "reportName": report_name,
        "payloadDescriptors": descriptors,
        "resources": out_resources,
    }
    if version == "3.0.1":
        report["programID"] = program_id
    return report


# --- report interval layouts (3.1 reportDescriptor.reportIntervals; decision 0931) --------------------

INTERVALS = "INTERVALS"  # the default: one report interval per event interval, with the event interval's id
SUB_INTERVALS = "SUB_INTERVALS"  # the VEN may split an event interval: each piece keeps its id, own period
OPEN_INTERVALS = "OPEN_INTERVALS"  # the VEN's own intervals, numbered by the VEN, each with its period
LAYOUTS = (INTERVALS, SUB_INTERVALS, OPEN_INTERVALS)


@dataclass(frozen=True)
class EventInterval:
    """One interval of the event as the VTN numbered it, with its period."""

    id: int
    start: datetime
    end: datetime


def report_layout(descriptors: list[dict[str, Any]] | None) -> str:
    """The interval layout the event's reportDescriptors ask of the payloads we report (the first one
    that says; the specification's default ``INTERVALS`` otherwise, or for a value it does not define)."""
    for d in descriptors or []:
        if isinstance(d, dict) and d.get("payloadType") in _TIMED_PAYLOADS and d.get("reportIntervals") in LAYOUTS:
            return str(d["reportIntervals"])
    return INTERVALS


def event_intervals(event_obj: dict[str, Any], spans: list[tuple[datetime, datetime]]) -> list[EventInterval]:
    """The event's interval ids beside their periods (``spans``: the stored schedule, in time order).
    Ids are paired in ascending order, which is the order in which intervals without their own period
    follow each other; when the event's intervals cannot be read, positions stand for ids."""
    raw = event_obj.get("intervals")
    ids = sorted(
        i["id"]
        for i in (raw if isinstance(raw, list) else [])
        if isinstance(i, dict) and isinstance(i.get("id"), int) and not isinstance(i.get("id"), bool)
    )
    if len(ids) != len(spans) or len(set(ids)) != len(ids):
        ids = list(range(len(spans)))
    return [EventInterval(k, start, end) for k, (start, end) in zip(ids, spans, strict=True)]


def _clipped(r: IntervalReading, lo: datetime, hi: datetime, interval_id: int) -> IntervalReading:
    """The part of a reading over ``[lo, hi)``: rates (kW) stay, energy (kWh) is prorated."""
    whole = (r.end - r.start).total_seconds()
    share = (hi - lo).total_seconds() / whole if whole > 0 else 0.0
    usage = None if r.usage_kwh is None else r.usage_kwh * share
    return replace(r, start=lo, end=hi, usage_kwh=usage, interval_id=interval_id)


def _weighted(parts: list[IntervalReading], value: Any) -> float | None:
    spans = [(p.start, p.end, v) for p in parts if (v := value(p)) is not None]
    if not spans:
        return None
    lo, hi = min(p.start for p in parts), max(p.end for p in parts)
    return mean_over(spans, lo, hi)


def lay_out(
    readings: tuple[IntervalReading, ...], intervals: list[EventInterval], layout: str
) -> tuple[IntervalReading, ...]:
    """A resource's readings (whatever periods they were measured over: settlement intervals, the
    whole event, one per event interval) in the layout the VTN asked for:

    - ``INTERVALS``: one reading per event interval the readings cover, over exactly that interval,
      with its id: demand and baseline time-weighted over the covered part, energy the sum of the
      prorated parts (None if a part has none);
    - ``SUB_INTERVALS``: the readings cut at the event intervals' bounds, each piece with the id of the
      event interval it lies in (energy prorated); what lies outside every interval is dropped;
    - ``OPEN_INTERVALS``: the readings as measured, numbered 0.. in time order."""
    ordered = sorted(readings, key=lambda r: r.start)
    if layout == OPEN_INTERVALS:
        return tuple(replace(r, interval_id=n) for n, r in enumerate(ordered))
    out: list[IntervalReading] = []
    for ev in intervals:
        parts = [
            _clipped(r, max(r.start, ev.start), min(r.end, ev.end), ev.id)
            for r in ordered
            if min(r.end, ev.end) > max(r.start, ev.start)
        ]
        if not parts:
            continue
        if layout == SUB_INTERVALS:
            out.extend(parts)
            continue
        usages = [p.usage_kwh for p in parts]
        out.append(
            IntervalReading(
                ev.start,
                ev.end,
                usage_kwh=None if any(u is None for u in usages) else sum(u for u in usages if u is not None),
                demand_kw=_weighted(parts, lambda p: p.demand_kw),
                baseline_kw=_weighted(parts, lambda p: p.baseline_kw),
                interval_id=ev.id,
            )
        )
    return tuple(out)


def first_interval_id(source: Any) -> int:
    """The lowest interval id of an event as received (a notification's ``object`` or the event); 0
    when it has none we can read. A status-only report interval (not applicable, declined) names it."""
    obj = source.get("object") if isinstance(source, dict) and isinstance(source.get("object"), dict) else source
    raw = obj.get("intervals") if isinstance(obj, dict) else None
    ids = [
        i["id"]
        for i in (raw if isinstance(raw, list) else [])
        if isinstance(i, dict) and isinstance(i.get("id"), int) and not isinstance(i.get("id"), bool)
    ]
    return min(ids) if ids else 0


NOT_APPLICABLE = "NOT_APPLICABLE"


def not_applicable_resources(
    unknown_targets: list[str], fallback_name: str, interval_id: int = 0
) -> list[dict[str, Any]]:
    """Report resources saying "this target is not ours": one per unknown target (or one named after
    the VEN when the event had none), each with a single OPERATING_STATE interval (``interval_id``: the
    event's first interval, which a status without a period of its own stands for)."""
    names = [t[:128] for t in unknown_targets] or [fallback_name[:128]]
    return [
        {
            "resourceName": n,
            "intervals": [{"id": interval_id, "payloads": [{"type": "OPERATING_STATE", "values": [NOT_APPLICABLE]}]}],
        }
        for n in dict.fromkeys(names)
    ]


def build_not_applicable_report(
    *, version: str, program_id: str, event_id: str, client_name: str, unknown_targets: list[str], interval_id: int = 0
) -> dict[str, Any]:
    """The report for an event that targets none of our enrolled facilities: nothing was dispatched."""
    report: dict[str, Any] = {
        "eventID": event_id,
        "clientName": client_name,
        "reportName": f"dr-{event_id}-not-applicable",
        "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "OPERATING_STATE"}],
        "resources": not_applicable_resources(unknown_targets, client_name, interval_id),
    }
    if version == "3.0.1":
        report["programID"] = program_id
    return report


# --- reports during the event (3.1 reportDescriptor timing; decision 0413) ----------------------------

_TIMED_PAYLOADS = (*_VALUE_OF, "OPERATING_STATE")


@dataclass(frozen=True)
class ReportTiming:
    """When the VTN wants reports (3.1 ``components/schemas/reportDescriptor``); the defaults are the
    specification's: one report at the end of the last interval."""

    start_interval: int = -1
    num_intervals: int = -1
    frequency: int = -1
    repeat: int = 1
    historical: bool = True


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def report_timing(descriptors: list[dict[str, Any]] | None) -> ReportTiming:
    """The timing of the most frequent report asked among the payloads we report (a descriptor for a
    payload we do not measure asks nothing of us)."""
    timings = []
    for d in descriptors or []:
        if not isinstance(d, dict) or d.get("payloadType") not in _TIMED_PAYLOADS:
            continue
        historical = d.get("historical")
        timings.append(
            ReportTiming(
                start_interval=_int(d.get("startInterval"), -1),
                num_intervals=_int(d.get("numIntervals"), -1),
                frequency=_int(d.get("frequency"), -1),
                repeat=_int(d.get("repeat"), 1),
                historical=historical if isinstance(historical, bool) else True,
            )
        )
    periodic = [t for t in timings if t.historical and t.start_interval >= 0 and _step(t) > 0]
    if periodic:
        return min(periodic, key=_step)
    return timings[0] if timings else ReportTiming()


def _step(t: ReportTiming) -> int:
    """Intervals between two reports: ``frequency``, -1 meaning "as many as numIntervals"; <= 0: none."""
    return t.num_intervals if t.frequency == -1 else t.frequency


def interim_points(timing: ReportTiming, n_intervals: int) -> tuple[int, ...]:
    """Indexes of the event intervals after whose end a report is due before the event is over.

    Reports are generated at the end of interval ``startInterval``, then every ``frequency`` intervals,
    ``repeat`` times (-1: until the event ends). ``startInterval`` -1 (the default) is "at the end of the
    last interval", which is the final report; ``frequency`` 0 (ad hoc) leaves the moment to us and we
    send only the final one; a forecast (``historical`` false) is not something we measure. A point at
    or after the last interval is the final report, never an interim one."""
    step = _step(timing)
    if not timing.historical or timing.start_interval < 0 or step <= 0 or n_intervals <= 1:
        return ()
    points: list[int] = []
    k = timing.start_interval
    while k < n_intervals - 1 and (timing.repeat < 0 or len(points) < max(timing.repeat, 0)):
        points.append(k)
        k += step
    return tuple(points)


def mean_over(points: list[tuple[datetime, datetime, float]], lo: datetime, hi: datetime) -> float | None:
    """Time-weighted mean of the values of ``(start, end, value)`` spans over ``[lo, hi)``; None when
    no span overlaps."""
    total = weight = 0.0
    for start, end, value in points:
        overlap = (min(end, hi) - max(start, lo)).total_seconds()
        if overlap > 0:
            total += value * overlap
            weight += overlap
    return total / weight if weight else None


def metered_so_far(
    interval_spans: list[tuple[datetime, datetime]],
    demand_kw: list[float | None],
    baseline: list[tuple[datetime, datetime, float]],
    fallback_baseline_kw: float | None,
) -> tuple[IntervalReading, ...]:
    """One reading per elapsed event interval: the metered mean demand, the energy it makes over the
    interval, and the baseline over the same span (the frozen interval baseline; the facility's single
    baseline when none was frozen)."""
    out = []
    for (start, end), kw in zip(interval_spans, demand_kw, strict=True):
        hours = (end - start).total_seconds() / 3600.0
        base = mean_over(baseline, start, end) if baseline else None
        out.append(
            IntervalReading(
                start,
                end,
                usage_kwh=None if kw is None else kw * hours,
                demand_kw=kw,
                baseline_kw=base if base is not None else fallback_baseline_kw,
            )
        )
    return tuple(out)


# --- program rules in reports (decision 0850) ----------------------------------------------------------

RULE_PAYLOAD = "X_PROGRAM_RULE"  # a privately defined payload type (3.1 reportDescriptor.payloadType allows them)
OPTED_OUT = "RUNNING_OPTED_OUT"  # 3.1 operating state: not following this event


def add_program_rules(
    report: dict[str, Any], declined: dict[str, str], findings: list[str], dispatched: set[str], interval_id: int = 0
) -> dict[str, Any]:
    """The report told what the program's rules did: each declined facility as a resource that opted
    out, with the rule; each finding about the whole event (a cut duration) on every interval of the
    dispatched resources."""
    if not declined and not findings:
        return report
    out = dict(report)
    out["payloadDescriptors"] = [
        *report["payloadDescriptors"],
        {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": RULE_PAYLOAD},
    ]
    resources = []
    for res in report["resources"]:
        if findings and res["resourceName"] in dispatched:
            res = {
                **res,
                "intervals": [
                    {**i, "payloads": [*i["payloads"], {"type": RULE_PAYLOAD, "values": list(findings)}]}
                    for i in res["intervals"]
                ],
            }
        resources.append(res)
    for name, reason in sorted(declined.items()):
        payloads = [{"type": "OPERATING_STATE", "values": [OPTED_OUT]}, {"type": RULE_PAYLOAD, "values": [reason]}]
        resources.append({"resourceName": name[:128], "intervals": [{"id": interval_id, "payloads": payloads}]})
    out["resources"] = resources
    return out
