"""The OpenADR 3 report sent to the utility's VTN at the end of an event. Pure."""

from __future__ import annotations

from dataclasses import dataclass
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
        for i, reading in enumerate(sorted(res.intervals, key=lambda r: r.start)):
            payloads: list[dict[str, Any]] = [{"type": "OPERATING_STATE", "values": [state]}]
            for w in wanted:
                value = _VALUE_OF[w.payload_type](reading)
                if value is not None:
                    payloads.append({"type": w.payload_type, "values": [round(float(value), 3)]})
            intervals.append(
                {
                    "id": i,
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


NOT_APPLICABLE = "NOT_APPLICABLE"


def not_applicable_resources(unknown_targets: list[str], fallback_name: str) -> list[dict[str, Any]]:
    """Report resources saying "this target is not ours": one per unknown target (or one named after
    the VEN when the event had none), each with a single OPERATING_STATE interval."""
    names = [t[:128] for t in unknown_targets] or [fallback_name[:128]]
    return [
        {
            "resourceName": n,
            "intervals": [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": [NOT_APPLICABLE]}]}],
        }
        for n in dict.fromkeys(names)
    ]


def build_not_applicable_report(
    *, version: str, program_id: str, event_id: str, client_name: str, unknown_targets: list[str]
) -> dict[str, Any]:
    """The report for an event that targets none of our enrolled facilities: nothing was dispatched."""
    report: dict[str, Any] = {
        "eventID": event_id,
        "clientName": client_name,
        "reportName": f"dr-{event_id}-not-applicable",
        "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "OPERATING_STATE"}],
        "resources": not_applicable_resources(unknown_targets, client_name),
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
    report: dict[str, Any], declined: dict[str, str], findings: list[str], dispatched: set[str]
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
        resources.append({"resourceName": name[:128], "intervals": [{"id": 0, "payloads": payloads}]})
    out["resources"] = resources
    return out
