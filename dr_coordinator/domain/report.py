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
