"""``POST /v1/readings``: the HTTP path into the same validation and the same bounded buffer.

Authenticated with ``X-Api-Key`` (a meter key may post its own meter's readings, a gateway
key those of its facility). The body is a GatewayBatch or a JSON list of RawReading. Answers:
200 all readings accepted, 207 some rejected (each result says why; rejected readings are
also dead-lettered), 400 body is not JSON, 401 no or unknown key, 403 none of the readings is
covered by the key, 413 body too large, 422 body or every reading invalid, 503 with
Retry-After when the buffer is full or Kafka has not acknowledged in time (retrying is safe:
reading ids are deterministic).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from energy.fleet import token_hash
from energy.observability import tracing
from energy.settings import Settings
from ingestion import metrics
from ingestion.domain import DedupWindow, Reason, Validator
from ingestion.pipeline import Buffer, WorkItem, build_records
from ingestion.registry import MeterRegistry


class ReadingResult(BaseModel):
    meter_id: str | None
    status: Literal["accepted", "rejected"]
    reading_id: str | None = None
    ts: datetime | None = None
    seq: int | None = None
    anomalies: list[str] = []
    reason: str | None = None
    detail: str | None = None


class IngestResponse(BaseModel):
    accepted: int
    rejected: int
    duplicates_dropped: int
    results: list[ReadingResult]


class ErrorResponse(BaseModel):
    error: str
    detail: str


BATCH_EXAMPLE = {
    "gateway_id": "gw-001",
    "readings": [
        {
            "meter_id": "mtr-001-main",
            "ts": "2026-07-01T14:00:00Z",
            "active_power_kw": 270.4,
            "reactive_power_kvar": 31.0,
            "voltage_v": 400.2,
            "current_a": 390.1,
            "energy_kwh": 182344.5,
            "seq": 1042,
        }
    ],
}
_ACCEPTED = {
    "meter_id": "mtr-001-main",
    "status": "accepted",
    "reading_id": "0d6f3c52-7a8e-5b1d-9c4f-2e7a1b3c4d5e",
    "ts": "2026-07-01T14:00:00Z",
    "seq": 1042,
    "anomalies": [],
    "reason": None,
    "detail": None,
}
ACCEPTED_EXAMPLE = {"accepted": 1, "rejected": 0, "duplicates_dropped": 0, "results": [_ACCEPTED]}
PARTLY_REJECTED_EXAMPLE = {
    "accepted": 1,
    "rejected": 1,
    "duplicates_dropped": 0,
    "results": [
        _ACCEPTED,
        {
            "meter_id": "mtr-999",
            "status": "rejected",
            "reading_id": None,
            "ts": None,
            "seq": None,
            "anomalies": [],
            "reason": "unknown_meter",
            "detail": "meter mtr-999 is not registered",
        },
    ],
}
ERROR_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Body is not JSON", "invalid_json", "Expecting value: line 1 column 1 (char 0)"),
    401: ("No or unknown X-Api-Key", "missing_api_key", "send a meter or gateway key in the X-Api-Key header"),
    403: (
        "None of the readings is covered by the key",
        "not_authorised",
        "key gw-001 may not post these meters' readings",
    ),
    413: ("Body too large", "payload_too_large", "at most 1048576 bytes"),
    422: ("Body or every reading invalid", "schema_mismatch", "readings: field required"),
    503: (
        "Buffer full or Kafka slow: retry after Retry-After (ids are deterministic)",
        "buffer_full",
        "ingestion is pushing back; retry later",
    ),
}


def _documented_error(status: int, description: str, error: str, detail: str) -> dict[str, object]:
    return {
        "model": ErrorResponse,
        "description": description,
        "content": {"application/json": {"example": {"error": error, "detail": detail}}},
    }


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    metrics.HTTP_RESPONSES.labels(str(status)).inc()
    return JSONResponse(ErrorResponse(error=error, detail=detail).model_dump(), status_code=status, headers=headers)


def readings_router(
    settings: Settings, validator: Validator, registry: MeterRegistry, buffer: Buffer, dedup: DedupWindow | None
) -> APIRouter:
    router = APIRouter(tags=["ingestion"])
    ing = settings.ingestion
    retry_after = {"Retry-After": str(ing.retry_after_s)}

    @router.post(
        "/v1/readings",
        summary="Post a gateway batch or a list of readings",
        response_model=IngestResponse,
        responses={
            200: {"content": {"application/json": {"example": ACCEPTED_EXAMPLE}}},
            207: {
                "model": IngestResponse,
                "description": "Some readings rejected; each result says why",
                "content": {"application/json": {"example": PARTLY_REJECTED_EXAMPLE}},
            },
            **{status: _documented_error(status, *why) for status, why in ERROR_EXAMPLES.items()},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "A GatewayBatch, or a JSON list of RawReading",
                "content": {"application/json": {"schema": {"type": ["object", "array"]}, "example": BATCH_EXAMPLE}},
            }
        },
    )
    async def post_readings(request: Request) -> JSONResponse:
        received = time.monotonic()
        metrics.MESSAGES_RECEIVED.labels("http").inc()
        key = request.headers.get("x-api-key")
        if not key:
            return _error(401, "missing_api_key", "send a meter or gateway key in the X-Api-Key header")
        grant = registry.grant(token_hash(key))
        if grant is None and registry.stale_for_miss():
            try:
                await registry.refresh()
            except Exception:  # the cached keys still decide
                metrics.HTTP_RESPONSES.labels("registry_refresh_failed").inc()
            grant = registry.grant(token_hash(key))
        if grant is None:
            return _error(401, "invalid_api_key", "the X-Api-Key is unknown or revoked")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > ing.max_message_bytes:
            return _error(413, "payload_too_large", f"at most {ing.max_message_bytes} bytes")
        body = await request.body()
        if len(body) > ing.max_message_bytes:
            return _error(413, "payload_too_large", f"at most {ing.max_message_bytes} bytes")
        with tracing.server_span(tracing.parse_traceparent(request.headers.get("traceparent")), "POST /v1/readings"):
            now = datetime.now(UTC)
            outcome = validator.batch(body, now=now, allowed=grant.allows, accept_list=True)
            body_level = (Reason.INVALID_JSON, Reason.SCHEMA_MISMATCH)
            whole = [r for r in outcome.rejected if r.raw is body and r.reason in body_level]
            if whole and not outcome.accepted:
                status = 400 if whole[0].reason is Reason.INVALID_JSON else 422
                return _error(status, whole[0].reason.value, whole[0].detail)
            if (
                outcome.rejected
                and not outcome.accepted
                and all(r.reason is Reason.NOT_AUTHORISED for r in outcome.rejected)
            ):
                return _error(403, "not_authorised", f"key {grant.key_id} may not post these meters' readings")
            records, dropped = build_records(
                outcome,
                readings_topic=ing.readings_topic,
                dlq_topic=ing.dlq_topic,
                source=f"http:{grant.key_id}",
                path="http",
                now=now,
                dedup=dedup,
            )
        if records:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if not buffer.try_put(WorkItem(records, received, done=done)):
                return _error(503, "buffer_full", "ingestion is pushing back; retry later", retry_after)
            try:
                await asyncio.wait_for(asyncio.shield(done), ing.http_wait_s)
            except TimeoutError:
                return _error(
                    503,
                    "not_acknowledged",
                    f"Kafka did not acknowledge within {ing.http_wait_s}s; retrying is safe (deterministic ids)",
                    retry_after,
                )
        results = [
            ReadingResult(
                meter_id=r.meter_id,
                status="accepted",
                reading_id=str(r.reading_id),
                ts=r.ts,
                seq=r.seq,
                anomalies=[a.value for a in r.anomalies],
            )
            for r in outcome.accepted
        ] + [
            ReadingResult(meter_id=r.meter_id, status="rejected", reason=r.reason.value, detail=r.detail)
            for r in outcome.rejected
        ]
        status = 200 if not outcome.rejected else (207 if outcome.accepted else 422)
        metrics.HTTP_RESPONSES.labels(str(status)).inc()
        body_out = IngestResponse(
            accepted=len(outcome.accepted), rejected=len(outcome.rejected), duplicates_dropped=dropped, results=results
        )
        return JSONResponse(body_out.model_dump(mode="json"), status_code=status)

    return router
