"""Examples in the OpenAPI document, so /docs and /redoc show what a request and an answer look like.

Every example is checked against the schema it illustrates by tests/api/test_openapi_docs.py, so an
example cannot drift from its model. One facility, event and settlement run through them all: an
office in London that shed 30 kW of a 40 kW target for two hours on 1 July 2026 (BST, UTC+1).
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"

EVENT_ID = "5f0c1b7e-3a2d-4c1e-9b8a-2f6d0e4c7a91"
FACILITY_ID = "fac-001"
UPDATED = "2026-07-01T08:00:00Z"


def ok(example: Any, status: int = 200, media: str = JSON) -> dict[int | str, dict[str, Any]]:
    """A success response's example (merged by FastAPI with the schema of the route's model)."""
    return {status: {"content": {media: {"example": example}}}}


def request_body(example: Any, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a request body example; ``schema`` for routes that read the raw body."""
    content: dict[str, Any] = {"example": example}
    if schema is not None:
        content["schema"] = schema
    return {"requestBody": {"required": True, "content": {JSON: content}}}


def error(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: error("bad_request", "body is not valid JSON"),
    401: error("unauthenticated", "missing or invalid bearer token"),
    403: error("forbidden", "role analyst may not do this"),
    404: error("not_found", "facility not found", {"id": "fac-999"}),
    409: error("conflict", "facility_id already taken", {"id": FACILITY_ID}),
    413: error("payload_too_large", "body over 1048576 bytes"),
    422: error("validation_error", "end must be after start"),
    429: error("rate_limited", "too many requests; retry after 1 s"),
    503: error("dependency_unavailable", "influxdb is unavailable: timeout", {"dependency": "influxdb"}),
}

FACILITY: dict[str, Any] = {
    "facility_id": FACILITY_ID,
    "tenant_id": "acme",
    "name": "Acme House",
    "kind": "office",
    "timezone": "Europe/London",
    "latitude": 51.5072,
    "longitude": -0.1276,
    "criticality_tier": 2,
    "peak_kw": 420.0,
    "active": True,
    "meter_count": 2,
    "created_at": "2026-01-05T09:00:00Z",
    "updated_at": UPDATED,
}
FACILITY_CREATE: dict[str, Any] = {
    "facility_id": FACILITY_ID,
    "name": "Acme House",
    "kind": "office",
    "timezone": "Europe/London",
    "latitude": 51.5072,
    "longitude": -0.1276,
    "criticality_tier": 2,
    "peak_kw": 420.0,
}
FACILITY_UPDATE: dict[str, Any] = {"peak_kw": 450.0, "criticality_tier": 1}
METER: dict[str, Any] = {
    "meter_id": "mtr-001-main",
    "facility_id": FACILITY_ID,
    "meter_type": "main",
    "rated_kw": 500.0,
    "nominal_voltage_v": 400.0,
    "created_at": "2026-01-05T09:00:00Z",
    "updated_at": UPDATED,
    "deleted_at": None,
}
METER_CREATE: dict[str, Any] = {"meter_id": "mtr-001-main", "meter_type": "main", "rated_kw": 500.0}
METER_UPDATE: dict[str, Any] = {"rated_kw": 550.0}


def page(items: list[Any]) -> dict[str, Any]:
    return {"items": items, "total": len(items), "limit": 50, "offset": 0}


ROLLUP: dict[str, Any] = {
    "window_start": "2026-07-01T14:00:00Z",
    "window": "1m",
    "avg_kw": 270.4,
    "min_kw": 268.9,
    "max_kw": 272.0,
    "energy_kwh": 4.507,
    "sample_count": 4,
    "coverage": 1.0,
}
CURRENT: dict[str, Any] = {
    "facility_id": FACILITY_ID,
    "as_of": "2026-07-01T14:00:45Z",
    "current_kw": 271.2,
    "meters_reporting": 2,
    "rollup_1m": ROLLUP,
    "fetched_at": "2026-07-01T14:00:50Z",
    "stale": False,
    "staleness_s": 5.0,
}
READINGS: dict[str, Any] = {
    "facility_id": FACILITY_ID,
    "meter_id": "mtr-001-main",
    "granularity": "1m",
    "start": "2026-07-01T14:00:00Z",
    "end": "2026-07-01T14:01:00Z",
    "limit": 1000,
    "truncated": False,
    "raw": [],
    "rollups": [ROLLUP],
}
FORECAST: dict[str, Any] = {
    "facility_id": FACILITY_ID,
    "latest_run": {
        "run_at": "2026-07-01T13:00:00Z",
        "model_version": "lstm-2026-06-28",
        "quality": "full",
        "seasonal_naive": False,
        "weather_available": True,
        "sensor_coverage": 0.99,
        "method": "lstm",
    },
    "points": [
        {
            "target_ts": "2026-07-01T14:00:00Z",
            "p10_kw": 281.0,
            "p50_kw": 300.0,
            "p90_kw": 318.0,
            "run_at": "2026-07-01T13:00:00Z",
            "quality": "full",
        }
    ],
}
DR_EVENT: dict[str, Any] = {
    "dr_event_id": EVENT_ID,
    "utility_id": "util-sim",
    "utility_event_id": "evt-2026-07-01-a",
    "program_id": "summer-peak",
    "state": "completed",
    "start_at": "2026-07-01T14:00:00Z",
    "end_at": "2026-07-01T16:00:00Z",
    "target_kw": 40.0,
    "priority": 0,
    "facility_ids": [FACILITY_ID],
    "created_at": "2026-07-01T12:00:00Z",
    "updated_at": "2026-07-01T19:00:00Z",
}
LOG_ENTRY: dict[str, Any] = {
    "seq": 7,
    "facility_id": FACILITY_ID,
    "entry_type": "facility_state_changed",
    "from_state": "active",
    "to_state": "restored",
    "detail": {"reason": "event ended"},
    "occurred_at": "2026-07-01T16:00:02Z",
}
DR_EVENT_DETAIL: dict[str, Any] = {
    "event": DR_EVENT,
    "facilities": [
        {
            "facility_id": FACILITY_ID,
            "state": "restored",
            "target_kw": 40.0,
            "baseline_kw": 290.0,
            "achieved_kw": 30.0,
            "strategy": "hvac_setpoint",
            "updated_at": "2026-07-01T16:00:02Z",
        }
    ],
    "timeline": [LOG_ENTRY],
}


def _interval(hour: int, baseline: float, metered: float) -> dict[str, Any]:
    return {
        "start": f"2026-07-01T{hour:02d}:00:00Z",
        "end": f"2026-07-01T{hour + 1:02d}:00:00Z",
        "local_start": f"2026-07-01T{hour + 1:02d}:00:00+01:00",
        "baseline_kw": baseline,
        "metered_kw": metered,
        "reduction_kw": baseline - metered,
        "target_kw": 40.0,
        "performance_pct": 100.0 * (baseline - metered) / 40.0,
        "coverage_pct": 100.0,
    }


SETTLEMENT: dict[str, Any] = {
    "dr_event_id": EVENT_ID,
    "start_at": "2026-07-01T14:00:00Z",
    "end_at": "2026-07-01T16:00:00Z",
    "facilities": [
        {
            "facility_id": FACILITY_ID,
            "timezone": "Europe/London",
            "version": 2,
            "kind": "settlement",
            "computed_at": "2026-07-01T17:05:00Z",
            "versions": 2,
            "baseline_method": "caiso_10in10",
            "baseline_frozen": True,
            "baseline": {"days_used": ["2026-06-17", "2026-06-18"], "flag": None, "adjustment": "ratio"},
            "target_kw": 40.0,
            "baseline_kwh": 580.0,
            "metered_kwh": 520.0,
            "reduction_kwh": 60.0,
            "mean_reduction_kw": 30.0,
            "performance_pct": 75.0,
            "coverage_pct": 100.0,
            "intervals": [_interval(14, 300.0, 270.0), _interval(15, 280.0, 250.0)],
        }
    ],
}
FLEET: dict[str, Any] = {
    "generated_at": "2026-07-01T14:00:50Z",
    "facilities": [
        {
            "facility_id": FACILITY_ID,
            "name": "Acme House",
            "kind": "office",
            "timezone": "Europe/London",
            "peak_kw": 420.0,
            "current_kw": 271.2,
            "as_of": "2026-07-01T14:00:45Z",
            "alerts": ["dr_active"],
        }
    ],
    "total_current_kw": 271.2,
}
OPERATOR_RESULT: dict[str, Any] = {
    "dr_event_id": EVENT_ID,
    "state": "cancelled",
    "detail": "restore commands sent",
    "count": 1,
}
OPERATOR_TIMELINE: dict[str, Any] = {
    "dr_event_id": EVENT_ID,
    "utility_id": "util-sim",
    "utility_event_id": "evt-2026-07-01-a",
    "state": "completed",
    "strategy": "hvac_setpoint",
    "start": "2026-07-01T14:00:00Z",
    "end": "2026-07-01T16:00:00Z",
    "version": 3,
    "facilities": [
        {
            "facility_id": FACILITY_ID,
            "state": "restored",
            "strategy": "hvac_setpoint",
            "target_kw": 40.0,
            "baseline_kw": 290.0,
            "achieved_kw": 30.0,
            "commands": {"succeeded": 4},
        }
    ],
    "entries": [LOG_ENTRY],
    "failed_commands": [],
}
EVENT_REQUEST: dict[str, Any] = {
    "event_id": "evt-2026-07-01-a",
    "program_id": "summer-peak",
    "facilities": [FACILITY_ID],
    "start": "2026-07-01T14:00:00Z",
    "duration_s": 7200,
    "target_kw": 40.0,
}
EVENT_MODIFY: dict[str, Any] = {"duration_s": 5400, "target_kw": 30.0}
EVENT_ACCEPTED: dict[str, Any] = {
    "dr_event_id": EVENT_ID,
    "utility_event_id": "evt-2026-07-01-a",
    "state": "scheduled",
    "duplicate": False,
    "facilities": [FACILITY_ID],
    "start": "2026-07-01T14:00:00Z",
    "end": "2026-07-01T16:00:00Z",
    "notes": [],
}
OPENADR_NOTIFICATION: dict[str, Any] = {
    "objectType": "EVENT",
    "operation": "CREATE",
    "object": {
        "id": "evt-2026-07-01-a",
        "programID": "summer-peak",
        "eventName": "summer peak",
        "intervalPeriod": {"start": "2026-07-01T14:00:00Z", "duration": "PT2H"},
        "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
        "targets": [{"type": "RESOURCE_NAME", "values": [FACILITY_ID]}],
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [250.0]}]}],
    },
}
TOKEN_REQUEST: dict[str, Any] = {"email": "analyst@example.com", "password": "correct horse battery staple"}
TOKEN_RESPONSE: dict[str, Any] = {
    "access_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl",
    "token_type": "bearer",
    "expires_at": "2026-07-01T14:15:00Z",
    "role": "analyst",
    "tenant_id": "acme",
}
ME: dict[str, Any] = {
    "principal_id": "0b7f1c7e-5d8a-4c1e-8b8a-6f6d0e4c7a10",
    "kind": "user",
    "tenant_id": "acme",
    "role": "analyst",
    "facility_ids": [FACILITY_ID],
}
UTILITY_IN: dict[str, Any] = {
    "utility_id": "util-sim",
    "name": "Simulated utility",
    "vtn_base_url": "http://127.0.0.1:8081/openadr3",
    "openadr_version": "3.1",
    "ven_name": "energy-platform",
    "ven_auth": "bearer",
    "ven_token": "a-long-ven-token-from-the-utility",
    "webhook_token": "a-long-webhook-token-we-give-the-utility",
    "baseline_method": "caiso_10in10",
}
UTILITY_OUT: dict[str, Any] = {
    "utility_id": "util-sim",
    "name": "Simulated utility",
    "vtn_base_url": "http://127.0.0.1:8081/openadr3",
    "openadr_version": "3.1",
    "ven_name": "energy-platform",
    "ven_auth": "bearer",
    "ven_credentials_set": True,
    "webhook_tokens_active": 1,
    "hmac_set": False,
    "hmac_required": False,
    "active": True,
    "baseline_method": "caiso_10in10",
    "programs": [
        {
            "program_id": "summer-peak",
            "program_name": "Summer peak",
            "notice_s": 3600,
            "max_duration_s": 14400,
            "dispatch_lead_s": 60,
            "max_events_per_day": 1,
            "enrolled_facilities": 1,
        }
    ],
    "updated_at": UPDATED,
}
PROGRAM_IN: dict[str, Any] = {
    "program_id": "summer-peak",
    "program_name": "Summer peak",
    "notice_s": 3600,
    "max_duration_s": 14400,
    "dispatch_lead_s": 60,
    "max_events_per_day": 1,
}
ENROLLMENT_IN: dict[str, Any] = {"program_id": "summer-peak", "facility_ids": [FACILITY_ID]}
ROTATE_IN: dict[str, Any] = {"overlap_s": 86400}
TOKEN_ROTATED: dict[str, Any] = {
    "utility_id": "util-sim",
    "webhook_token": "the-new-token-shown-once",
    "previous_valid_until": "2026-07-02T14:00:00Z",
}
HMAC_ROTATE_IN: dict[str, Any] = {"new_secret": "the-utility's-new-signing-secret", "overlap_s": 86400}
HMAC_ROTATED: dict[str, Any] = {"utility_id": "util-sim", "previous_valid_until": "2026-07-02T14:00:00Z"}
READINGS_CSV = (
    "window_start_utc,window_start_local,facility_id,window,avg_kw,min_kw,max_kw,energy_kwh,"
    "energy_register_kwh,sample_count,coverage_ratio\n"
    "2026-07-01T14:00:00Z,2026-07-01T15:00:00+01:00,fac-001,1m,270.4,268.9,272.0,4.507,4.507,4,1.0\n"
)
DR_EVENTS_CSV = (
    "dr_event_id,utility_id,utility_event_id,event_state,start_utc,start_local,end_utc,end_local,facility_id,"
    "facility_state,target_kw,baseline_kw,achieved_reduction_kw,achieved_pct_of_target\n"
    f"{EVENT_ID},util-sim,evt-2026-07-01-a,completed,2026-07-01T14:00:00Z,2026-07-01T15:00:00+01:00,"
    "2026-07-01T16:00:00Z,2026-07-01T17:00:00+01:00,fac-001,restored,40.0,290.0,30.0,75.0\n"
)
SETTLEMENT_CSV = (
    "dr_event_id,utility_event_id,facility_id,timezone,version,run_kind,computed_at_utc,baseline_method,"
    "baseline_flag,interval_start_utc,interval_end_utc,interval_start_local,baseline_kw,metered_kw,reduction_kw,"
    "target_kw,performance_pct,coverage_pct,reduction_kwh\n"
    f"{EVENT_ID},evt-2026-07-01-a,fac-001,Europe/London,2,settlement,2026-07-01T17:05:00Z,caiso_10in10,,"
    "2026-07-01T14:00:00Z,2026-07-01T15:00:00Z,2026-07-01T15:00:00+01:00,300.0,270.0,30.0,40.0,75.0,100.0,30.0\n"
)
