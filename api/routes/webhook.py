"""Utility webhook: OpenADR 3 notifications and the platform's JSON events (DR-1, DR-2).

Everything is checked before answering 202: authentication (bearer token or HMAC signature
with a timestamp window), rate limit per utility, schema, duplicate utility event id (answered
with the existing event, nothing created), facilities known/active/enrolled, timing, overlaps.
Accepting writes dr_events, dr_event_facilities, dr_event_log and the outbox in one PostgreSQL
transaction; the coordinator takes it from there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from api import examples as ex
from api.errors import ApiError, error_responses
from api.examples import ERROR_EXAMPLES, ok, request_body
from dr_coordinator.adapters.store import NewEvent, handle_in, insert_event, intervals_json
from dr_coordinator.adapters.ven_credentials import SecretBoxError, credentials_box, unseal_hmac
from dr_coordinator.domain.commands import Cancel, Modify
from dr_coordinator.domain.intake import (
    EventAsk,
    IntakeError,
    Limits,
    as_utc,
    check_facilities,
    check_timing,
    end_of,
    from_openadr,
    from_platform,
    parse_body,
    parse_vtn_time,
)
from dr_coordinator.domain.program_rules import ProgramRules, RuleCheck, check_rules, dispatch_lead_s
from dr_coordinator.domain.report import first_interval_id
from dr_coordinator.domain.saga import IllegalTransitionError
from dr_coordinator.domain.schedule import missed
from dr_coordinator.domain.targeting import Enrollment, Resolution, resolve
from dr_coordinator.domain.zones import overlap_kind
from dr_coordinator.metrics import WEBHOOK_REQUESTS
from energy.observability.metrics import QUEUE_CAPACITY, QUEUE_DEPTH
from energy.resilience import TokenBucket
from schemas.dr_api import DrEventAccepted, DrEventModifyRequest, DrEventRequest
from schemas.openadr import OadrEvent, OadrNotification, normalise_keys
from schemas.readings import ID_PATTERN

log = structlog.get_logger("api.webhook")
router = APIRouter(prefix="/api/utility/{utility_id}", tags=["utility webhook"])
WEBHOOK_ERRORS = error_responses(
    {
        400: "Body is not JSON",
        401: "No or wrong bearer token, or a bad HMAC signature",
        404: "No such event for this utility",
        409: "The event cannot change from its state (e.g. already completed)",
        413: "Body over 1 MB",
        422: "Not a valid event (the details name the fields)",
        429: "Too many requests for this utility (see Retry-After)",
        503: "Intake is full or a dependency is unavailable (see Retry-After)",
    }
)

UtilityId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
MAX_BODY_BYTES = 1_000_000
TERMINAL = ("completed", "partially_failed", "failed", "cancelled", "missed")


@dataclass
class WebhookGuard:
    """Per-process rate limits per utility and the bounded count of requests being processed."""

    rate_per_s: float
    burst: int
    capacity: int
    inflight: int = 0
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def bucket(self, utility_id: str) -> TokenBucket:
        b = self.buckets.get(utility_id)
        if b is None:
            b = self.buckets[utility_id] = TokenBucket(self.rate_per_s, self.burst)
        return b


def _guard(request: Request) -> WebhookGuard:
    guard: WebhookGuard | None = getattr(request.app.state, "dr_webhook", None)
    if guard is None:
        dr = request.app.state.settings.dr
        guard = WebhookGuard(dr.webhook_rate_per_s, dr.webhook_burst, dr.webhook_queue_size)
        request.app.state.dr_webhook = guard
        QUEUE_CAPACITY.labels("dr_webhook").set(guard.capacity)
    return guard


def _err(exc: IntakeError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.details)


async def _authenticate(conn: Any, request: Request, utility_id: str, body: bytes) -> None:
    """Bearer token (any of the utility's unexpired webhook tokens: rotation overlaps) or HMAC
    signature (the current secret, or the previous one until its overlap ends); a utility that
    requires HMAC needs the signature. Inactive = unknown."""
    row = await conn.fetchrow(
        """SELECT bearer_token_hash, hmac_secret, hmac_secret_encrypted, hmac_required,
                  hmac_previous_secret_encrypted, hmac_previous_expires_at,
                  COALESCE(hmac_previous_expires_at > now(), false) AS hmac_previous_open,
                  ARRAY(SELECT token_hash FROM utility_webhook_tokens t
                        WHERE t.utility_id = u.utility_id AND (t.expires_at IS NULL OR t.expires_at > now()))
                    AS token_hashes
           FROM utilities u WHERE utility_id = $1 AND active""",
        utility_id,
    )
    challenge = {"WWW-Authenticate": 'Bearer realm="utility"'}
    # Unknown utility and bad credentials look the same from outside.
    hashes = ([row["bearer_token_hash"], *row["token_hashes"]]) if row else ["0" * 64]
    auth = request.headers.get("authorization", "")
    signature = request.headers.get("x-signature", "")
    stamp = request.headers.get("x-signature-timestamp") or request.headers.get("x-timestamp", "")
    if auth.lower().startswith("bearer ") and not (row is not None and row["hmac_required"]):
        given = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
        matches = [hmac.compare_digest(given, h) for h in hashes]
        if any(matches) and row is not None:
            return
        raise ApiError(401, "unauthenticated", "bearer token not valid for this utility", headers=challenge)
    if signature and stamp:
        try:
            ts = float(stamp)
        except ValueError:
            raise ApiError(401, "unauthenticated", "X-Timestamp must be Unix seconds") from None
        window = request.app.state.settings.dr.webhook_hmac_window_s
        if abs(time.time() - ts) > window:
            raise ApiError(
                401, "signature_expired", f"X-Timestamp outside the {window:.0f}s window (replay protection)"
            )
        given_mac = signature.removeprefix("sha256=").lower()
        configured = _hmac_secret(request, utility_id, row) if row is not None else ""
        if _signed_by(configured or "x", stamp, body, given_mac) and configured:  # none configured: no HMAC
            return
        if row is not None and row["hmac_previous_secret_encrypted"]:
            # A rotation's overlap (decision 0932): the previous secret verifies until its expiry.
            if row["hmac_previous_open"]:
                previous = _hmac_secret(request, utility_id, row, "hmac_previous_secret_encrypted")
                if _signed_by(previous, stamp, body, given_mac):
                    log.info(
                        "dr_webhook_hmac_previous_secret",
                        utility_id=utility_id,
                        valid_until=row["hmac_previous_expires_at"].isoformat(),
                    )
                    return
            elif _expired_secret_signed(request, utility_id, row, stamp, body, given_mac):
                raise ApiError(
                    401,
                    "hmac_secret_expired",
                    "signature made with the previous HMAC secret, accepted only until "
                    f"{row['hmac_previous_expires_at'].isoformat()}: sign with the current secret",
                )
        raise ApiError(401, "unauthenticated", "signature does not match (HMAC-SHA256 of '<timestamp>.<body>')")
    raise ApiError(
        401, "unauthenticated", "send Authorization: Bearer <token> or X-Signature + X-Timestamp", headers=challenge
    )


def _signed_by(secret: str, stamp: str, body: bytes, given_mac: str) -> bool:
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given_mac)


def _expired_secret_signed(request: Request, utility_id: str, row: Any, stamp: str, body: bytes, mac: str) -> bool:
    """Whether a rejected signature was made with the previous secret after its overlap ended: only
    to give its holder a precise reason. An expired secret that no key opens any more is no error."""
    try:
        box = credentials_box(request.app.state.settings.dr)
        previous = unseal_hmac(box, utility_id, row["hmac_previous_secret_encrypted"])
    except SecretBoxError:
        return False
    return _signed_by(previous, stamp, body, mac)


def _hmac_secret(request: Request, utility_id: str, row: Any, column: str = "hmac_secret_encrypted") -> str:
    """The utility's HMAC secret (or, ``column``, the previous one during a rotation's overlap), sealed
    at rest (decisions 0930, 0932). A secret no configured key opens is our misconfiguration, not the
    utility's fault: 503, the key ids logged, never the value."""
    legacy = row["hmac_secret"] if column == "hmac_secret_encrypted" else None
    try:
        return unseal_hmac(credentials_box(request.app.state.settings.dr), utility_id, row[column], legacy)
    except SecretBoxError as exc:
        log.error("dr_webhook_hmac_secret_unreadable", utility_id=utility_id, reason=str(exc))
        raise ApiError(
            503, "credentials_unreadable", "the HMAC secret of this utility cannot be read; the operator is alerted"
        ) from None


async def _guarded(request: Request, utility_id: str, work: Any) -> JSONResponse:
    """Bounded inbound queue, auth, rate limit, then ``work(conn, body)``; every outcome counted."""
    guard = _guard(request)
    if guard.inflight >= guard.capacity:
        WEBHOOK_REQUESTS.labels("503").inc()
        raise ApiError(503, "queue_full", "too many webhook requests in progress", headers={"Retry-After": "1"})
    guard.inflight += 1
    QUEUE_DEPTH.labels("dr_webhook").set(guard.inflight)
    try:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"body over {MAX_BODY_BYTES} bytes")
        settings = request.app.state.settings
        async with request.app.state.pool.acquire(timeout=settings.postgres.connect_timeout_s) as conn:
            await _authenticate(conn, request, utility_id, body)
            bucket = guard.bucket(utility_id)
            if not bucket.try_acquire():
                retry = max(1, int(bucket.retry_after_s() + 0.999))
                raise ApiError(
                    429, "rate_limited", "too many requests for this utility", headers={"Retry-After": str(retry)}
                )
            try:
                response: JSONResponse = await work(conn, body)
            except IntakeError as exc:
                raise _err(exc) from None
        WEBHOOK_REQUESTS.labels(str(response.status_code)).inc()
        return response
    except ApiError as exc:
        WEBHOOK_REQUESTS.labels(str(exc.status)).inc()
        log.info(
            "dr_webhook_rejected", utility_id=utility_id, status=exc.status, code=exc.code, reason=exc.message[:200]
        )
        raise
    finally:
        guard.inflight -= 1
        QUEUE_DEPTH.labels("dr_webhook").set(guard.inflight)


def _limits(request: Request) -> Limits:
    dr = request.app.state.settings.dr
    return Limits(dr.min_event_duration_s, dr.max_event_duration_s, dr.max_start_skew_s)


async def _existing(conn: Any, utility_id: str, utility_event_id: str) -> Any:
    return await conn.fetchrow(
        """SELECT dr_event_id, state, start_at, end_at, target_kw, level,
                  ARRAY(SELECT facility_id FROM dr_event_facilities f WHERE f.dr_event_id = e.dr_event_id
                        ORDER BY facility_id) AS facilities
           FROM dr_events e WHERE utility_id = $1 AND utility_event_id = $2""",
        utility_id,
        utility_event_id,
    )


def _answer(row: Any, utility_event_id: str, status: int, duplicate: bool, notes: list[str]) -> JSONResponse:
    body = DrEventAccepted(
        dr_event_id=row["dr_event_id"],
        utility_event_id=utility_event_id,
        state=row["state"],
        duplicate=duplicate,
        facilities=list(row["facilities"]),
        start=row["start_at"],
        end=row["end_at"],
        notes=notes,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


async def _enrollments(conn: Any, utility_id: str) -> list[Enrollment]:
    rows = await conn.fetch(
        """SELECT e.facility_id, e.program_id, e.resource_name, e.groups
           FROM facility_enrollments e JOIN facilities f USING (facility_id)
           WHERE e.utility_id = $1 AND f.active""",
        utility_id,
    )
    return [Enrollment(r["facility_id"], r["program_id"], r["resource_name"], frozenset(r["groups"])) for r in rows]


async def _intake_outcome(conn: Any, utility_id: str, key: str) -> Any:
    return await conn.fetchrow(
        "SELECT outcome, detail FROM dr_event_intake WHERE utility_id = $1 AND event_key = $2", utility_id, key
    )


def _not_dispatched(ask: EventAsk, outcome: str, detail: Any, notes: list[str]) -> JSONResponse:
    """An OpenADR event recorded without dispatch: nothing it targets is enrolled, or it was deleted first."""
    info = detail if isinstance(detail, dict) else json.loads(detail or "{}")
    return JSONResponse(
        {
            "utility_event_id": ask.utility_event_id,
            "outcome": outcome,
            "applicable": False,
            "facilities": [],
            "unknown_targets": info.get("unknown_targets", []),
            "declined": info.get("rule_declined", {}),
            "notes": notes,
        },
        status_code=200,
    )


async def _resolve_openadr(conn: Any, utility_id: str, ask: EventAsk) -> Resolution:
    ven_name = await conn.fetchval("SELECT ven_name FROM utilities WHERE utility_id = $1", utility_id)
    return resolve(ask.targets, ask.program_id or "default", await _enrollments(conn, utility_id), ven_name=ven_name)


async def _program_rules(conn: Any, utility_id: str, program_id: str | None) -> ProgramRules | None:
    row = await conn.fetchrow(
        """SELECT notice_s, max_duration_s, dispatch_lead_s, max_events_per_day FROM utility_programs
           WHERE utility_id = $1 AND program_id = $2""",
        utility_id,
        program_id or "default",
    )
    return ProgramRules(**dict(row)) if row is not None else None


async def _apply_rules(
    conn: Any, utility_id: str, ask: EventAsk, rules: ProgramRules | None, facilities: list[str], announced: datetime
) -> RuleCheck:
    """The program's rules (decision 0850); a cut schedule replaces the ask's."""
    counts: dict[str, int] = {}
    if rules is not None and rules.max_events_per_day is not None:
        rows = await conn.fetch(
            """SELECT f.facility_id, count(*) AS n
               FROM dr_event_facilities f JOIN dr_events e USING (dr_event_id) JOIN facilities fa USING (facility_id)
               WHERE e.utility_id = $1 AND COALESCE(e.program_id, 'default') = $2
                 AND f.facility_id = ANY($3::text[]) AND e.state NOT IN ('cancelled', 'missed')
                 AND f.state <> 'skipped'
                 AND (e.start_at AT TIME ZONE fa.timezone)::date = ($4::timestamptz AT TIME ZONE fa.timezone)::date
               GROUP BY f.facility_id""",
            utility_id,
            ask.program_id or "default",
            facilities,
            ask.start,
        )
        counts = {r["facility_id"]: int(r["n"]) for r in rows}
    ruled = check_rules(
        rules,
        start=ask.start,
        end=ask.end,
        intervals=ask.intervals,
        announced_at=announced,
        facility_ids=facilities,
        events_that_day=counts,
    )
    if ruled.end is not None and ruled.end != ask.end:
        ask.end, ask.intervals = ruled.end, ruled.intervals
    return ruled


async def _rule_violation(
    conn: Any, utility_id: str, ask: EventAsk, targeting: dict[str, Any], payload: dict[str, Any]
) -> JSONResponse:
    """Accepted and recorded, not dispatched: a program rule keeps every targeted facility out. The VTN
    is told with a report (``report_not_applicable``)."""
    detail = {
        **targeting,
        "vtn_event_id": ask.vtn_event_id,
        "program_id": ask.program_id,
        "first_interval_id": first_interval_id(payload),  # the report's status interval names it (0931)
    }
    await conn.execute(
        """INSERT INTO dr_event_intake (utility_id, event_key, outcome, vtn_modified_at, detail)
           VALUES ($1, $2, 'rule_violation', $3, $4::jsonb) ON CONFLICT DO NOTHING""",
        utility_id,
        ask.utility_event_id,
        ask.vtn_modified_at,
        json.dumps(detail),
    )
    log.warning(
        "dr_event_rule_violation",
        utility_id=utility_id,
        utility_event_id=ask.utility_event_id,
        findings=targeting.get("rule_findings", []),
    )
    notes = [*ask.notes, *(f"program rule: {f}" for f in targeting.get("rule_findings", []))]
    return _not_dispatched(ask, "rule_violation", detail, notes)


async def _create(conn: Any, request: Request, utility_id: str, ask: EventAsk, payload: dict[str, Any]) -> JSONResponse:
    async with conn.transaction():
        # One accept at a time per utility: overlap checks and inserts cannot interleave.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dr-webhook:' || $1))", utility_id)
        existing = await _existing(conn, utility_id, ask.utility_event_id)
        if existing is not None:
            return _answer(existing, ask.utility_event_id, 200, True, [*ask.notes, "duplicate utility event id"])
        targeting: dict[str, Any] = {}
        if ask.openadr:
            seen = await _intake_outcome(conn, utility_id, ask.utility_event_id)
            if seen is not None:  # deleted before we saw it created (tombstone), or already found not applicable
                return _not_dispatched(ask, seen["outcome"], seen["detail"], [*ask.notes, f"event {seen['outcome']}"])
            now = datetime.now(UTC)
            if missed(ask.end, now):  # first seen after its end (an outage, a late poll): never dispatched
                detail = {"vtn_event_id": ask.vtn_event_id, "program_id": ask.program_id, "end": ask.end.isoformat()}
                await conn.execute(
                    """INSERT INTO dr_event_intake (utility_id, event_key, outcome, vtn_modified_at, detail)
                       VALUES ($1, $2, 'missed', $3, $4::jsonb) ON CONFLICT DO NOTHING""",
                    utility_id,
                    ask.utility_event_id,
                    ask.vtn_modified_at,
                    json.dumps(detail | {"seen_at": now.isoformat()}),
                )
                log.warning("dr_event_missed", utility_id=utility_id, utility_event_id=ask.utility_event_id)
                notes = [*ask.notes, "event ended before it was received: recorded as missed, not dispatched"]
                return _not_dispatched(ask, "missed", detail, notes)
            resolution = await _resolve_openadr(conn, utility_id, ask)
            targeting = resolution.as_detail()
            if not resolution.applicable:
                await conn.execute(
                    """INSERT INTO dr_event_intake (utility_id, event_key, outcome, vtn_modified_at, detail)
                       VALUES ($1, $2, 'not_applicable', $3, $4::jsonb) ON CONFLICT DO NOTHING""",
                    utility_id,
                    ask.utility_event_id,
                    ask.vtn_modified_at,
                    json.dumps(
                        {
                            **targeting,
                            "vtn_event_id": ask.vtn_event_id,
                            "program_id": ask.program_id,
                            "first_interval_id": first_interval_id(payload),
                        }
                    ),
                )
                log.warning(
                    "dr_event_not_applicable",
                    utility_id=utility_id,
                    utility_event_id=ask.utility_event_id,
                    unknown_targets=list(resolution.unknown_targets)[:20],
                )
                return _not_dispatched(ask, "not_applicable", targeting, [*ask.notes, "no enrolled facility targeted"])
            facilities = list(resolution.facility_ids)
            rules = await _program_rules(conn, utility_id, ask.program_id)
            announced = parse_vtn_time(ask.vtn_created_at, []) or now
            ruled = await _apply_rules(conn, utility_id, ask, rules, facilities, announced)
            if ruled.declined:
                targeting["rule_declined"] = ruled.declined
            if ruled.findings:
                targeting["rule_findings"] = list(ruled.findings)
            if not ruled.dispatchable:
                return await _rule_violation(conn, utility_id, ask, targeting, payload)
            facilities = list(ruled.facility_ids)
            if resolution.unknown_targets:
                log.warning(
                    "dr_event_unknown_targets",
                    utility_id=utility_id,
                    utility_event_id=ask.utility_event_id,
                    unknown_targets=list(resolution.unknown_targets)[:20],
                )
        else:
            enrollments = await _enrollments(conn, utility_id)
            enrolled = {e.facility_id for e in enrollments}
            in_program = sorted({e.facility_id for e in enrollments if e.program_id == (ask.program_id or "default")})
            facilities = check_facilities(ask.facility_ids if ask.facility_ids is not None else in_program, enrolled)
            rules = await _program_rules(conn, utility_id, ask.program_id)
            ruled = await _apply_rules(conn, utility_id, ask, rules, facilities, datetime.now(UTC))
            targeting = {"rule_declined": ruled.declined, "rule_findings": list(ruled.findings)} if rules else {}
            if not ruled.dispatchable:
                return await _rule_violation(conn, utility_id, ask, targeting, payload)
            facilities = list(ruled.facility_ids)
        check_timing(ask.start, ask.end, datetime.now(UTC), _limits(request))
        default_lead_s = request.app.state.settings.dr.dispatch_lead_s
        lead = timedelta(seconds=dispatch_lead_s(rules.dispatch_lead_s if rules else None, default_lead_s))
        near = await conn.fetch(
            """SELECT e.utility_event_id, e.start_at, e.end_at, f.facility_id
               FROM dr_events e
               -- with the facilities an event's chunked intake has still to add (decision 0920)
               CROSS JOIN LATERAL (SELECT ef.facility_id FROM dr_event_facilities ef
                                   WHERE ef.dr_event_id = e.dr_event_id
                                   UNION SELECT unnest(e.intake_facility_ids)) f
               WHERE e.utility_id = $1 AND f.facility_id = ANY($2::text[]) AND e.state <> ALL($3::text[])
                 AND e.start_at - $6::interval < $5::timestamptz AND e.end_at > $4::timestamptz - $6::interval
               ORDER BY e.start_at LIMIT 200""",
            utility_id,
            facilities,
            list(TERMINAL),
            ask.start,
            ask.end,
            lead,
        )
        kinds = [(r, overlap_kind(ask.start, ask.end, r["start_at"], r["end_at"], lead)) for r in near]
        clash = [r for r, kind in kinds if kind == "clash"][:20]
        handovers = sorted({r["utility_event_id"] for r, kind in kinds if kind == "handover"})
        if clash:
            raise IntakeError(
                409,
                "overlapping_event",
                "facilities already have an overlapping event",
                [{"utility_event_id": r["utility_event_id"], "facility_id": r["facility_id"]} for r in clash],
            )
        dr_event_id, duplicate = await insert_event(
            conn,
            NewEvent(
                utility_id=utility_id,
                utility_event_id=ask.utility_event_id,
                program_id=ask.program_id,
                facility_ids=tuple(facilities),
                start=ask.start,
                end=ask.end,
                target_kw=ask.target_kw,
                import_limit_kw=ask.import_limit_kw,
                level=ask.level,
                priority=ask.priority,
                source_payload=payload,
                intervals=ask.intervals,
                randomize_start_s=ask.randomize_start_s,
            ),
            datetime.now(UTC),
        )
        if not duplicate:
            await conn.execute(
                """UPDATE dr_events SET vtn_event_id = $2, vtn_created_at = $3, vtn_modified_at = $4,
                          targeting = $5::jsonb WHERE dr_event_id = $1""",
                dr_event_id,
                ask.vtn_event_id,
                ask.vtn_created_at,
                ask.vtn_modified_at,
                json.dumps(targeting),
            )
        row = await _existing(conn, utility_id, ask.utility_event_id)
    log.info(
        "dr_event_accepted",
        utility_id=utility_id,
        utility_event_id=ask.utility_event_id,
        dr_event_id=str(dr_event_id),
        facilities=len(facilities),
        duplicate=duplicate,
    )
    notes = list(ask.notes)
    if handovers:
        notes.append("shares facilities back to back with " + ", ".join(handovers[:20]) + ": zones handed over")
    if targeting.get("unknown_targets"):
        notes.append("unknown targets not dispatched: " + ", ".join(targeting["unknown_targets"][:20]))
    notes.extend(f"program rule: {f}" for f in targeting.get("rule_findings", []))
    declined = list(targeting.get("rule_declined", {}).items())[:20]
    notes.extend(f"program rule: {fid} not dispatched, {reason}" for fid, reason in declined)
    return _answer(row, ask.utility_event_id, 200 if duplicate else 202, duplicate, notes)


async def _modify(conn: Any, utility_id: str, ask: EventAsk, limits: Limits) -> JSONResponse:
    existing = await _existing(conn, utility_id, ask.utility_event_id)
    if existing is None:
        raise IntakeError(404, "not_found", f"no event {ask.utility_event_id!r} for this utility")
    if ask.vtn_modified_at is not None:
        last = await conn.fetchval(
            "SELECT vtn_modified_at FROM dr_events WHERE dr_event_id = $1", existing["dr_event_id"]
        )
        if last is not None and ask.vtn_modified_at < last:  # an older version arriving late (reordered)
            return _answer(existing, ask.utility_event_id, 200, False, [*ask.notes, "stale update ignored"])
    program_id = await conn.fetchval("SELECT program_id FROM dr_events WHERE dr_event_id = $1", existing["dr_event_id"])
    rules = await _program_rules(conn, utility_id, program_id)
    cut: list[str] = []
    if rules is not None and rules.max_duration_s is not None:  # a lengthened event is cut as a new one would be
        only_duration = ProgramRules(max_duration_s=rules.max_duration_s)
        cut = list((await _apply_rules(conn, utility_id, ask, only_duration, [], ask.start)).findings)
    if existing["state"] in ("received", "scheduled"):
        check_timing(ask.start, ask.end, datetime.now(UTC), limits)
    modify = Modify(ask.start, ask.end, ask.target_kw, ask.level, ask.intervals, ask.import_limit_kw)
    try:
        async with conn.transaction():
            await handle_in(conn, existing["dr_event_id"], modify, datetime.now(UTC))
            # The new asks replace the old ones; a running event is re-planned from them (decision 0421).
            await conn.execute(
                """UPDATE dr_events SET target_kw = COALESCE($2, target_kw), level = COALESCE($3, level),
                          import_limit_kw = COALESCE($4, import_limit_kw), intervals = COALESCE($5::jsonb, intervals),
                          randomize_start_s = COALESCE($6, randomize_start_s)
                   WHERE dr_event_id = $1 AND state IN ('received', 'scheduled', 'dispatching', 'active')""",
                existing["dr_event_id"],
                ask.target_kw,
                ask.level,
                ask.import_limit_kw,
                intervals_json(ask.intervals),
                ask.randomize_start_s,
            )
            if ask.vtn_modified_at is not None:
                await conn.execute(
                    "UPDATE dr_events SET vtn_modified_at = $2 WHERE dr_event_id = $1",
                    existing["dr_event_id"],
                    ask.vtn_modified_at,
                )
            if rules is not None and rules.max_duration_s is not None:
                await conn.execute(
                    """UPDATE dr_events SET targeting = targeting || jsonb_build_object('rule_findings', $2::jsonb)
                       WHERE dr_event_id = $1""",
                    existing["dr_event_id"],
                    json.dumps(cut),
                )
    except IllegalTransitionError as exc:
        raise IntakeError(409, "illegal_transition", str(exc)) from None
    row = await _existing(conn, utility_id, ask.utility_event_id)
    notes = [*ask.notes, "modified", *(f"program rule: {f}" for f in cut)]
    return _answer(row, ask.utility_event_id, 200, False, notes)


async def _tombstone(conn: Any, utility_id: str, ask: EventAsk) -> JSONResponse:
    """A DELETE for an event we never saw created: remembered, so a late CREATE does not dispatch."""
    await conn.execute(
        """INSERT INTO dr_event_intake (utility_id, event_key, outcome, vtn_modified_at, detail)
           VALUES ($1, $2, 'deleted', $3, $4::jsonb)
           ON CONFLICT (utility_id, event_key) DO UPDATE SET outcome = 'deleted'""",
        utility_id,
        ask.utility_event_id,
        ask.vtn_modified_at,
        json.dumps({"vtn_event_id": ask.vtn_event_id, "program_id": ask.program_id}),
    )
    log.info("dr_event_tombstoned", utility_id=utility_id, utility_event_id=ask.utility_event_id)
    return _not_dispatched(ask, "deleted", {}, [*ask.notes, "deleted before it was created: will not dispatch"])


async def _cancel(conn: Any, utility_id: str, utility_event_id: str) -> JSONResponse:
    existing = await _existing(conn, utility_id, utility_event_id)
    if existing is None:
        raise IntakeError(404, "not_found", f"no event {utility_event_id!r} for this utility")
    if existing["state"] not in TERMINAL:
        try:
            async with conn.transaction():
                await handle_in(conn, existing["dr_event_id"], Cancel("cancelled by the utility"), datetime.now(UTC))
        except IllegalTransitionError as exc:
            raise IntakeError(409, "illegal_transition", str(exc)) from None
    row = await _existing(conn, utility_id, utility_event_id)
    return _answer(row, utility_event_id, 200, False, ["cancellation accepted"])


# --- OpenADR 3 ----------------------------------------------------------------------------------


@router.get(
    "/openadr3/notifications/echo",
    summary="Subscription check: echoes the ?echo= value",
    response_class=PlainTextResponse,
    # the error body is JSON although the answer is text (a model here would be documented as text)
    responses={
        **ok("c0ffee", media="text/plain"),
        422: {
            "description": "utility_id or echo malformed",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorBody"},
                    "example": ERROR_EXAMPLES[422],
                }
            },
        },
    },
)
async def notification_echo(
    utility_id: UtilityId, echo: Annotated[str, Query(max_length=512)] = ""
) -> PlainTextResponse:
    return PlainTextResponse(echo)


@router.post(
    "/openadr3/notifications",
    status_code=200,
    summary="OpenADR 3 notification (objectType EVENT)",
    responses={**WEBHOOK_ERRORS, **ok(ex.EVENT_ACCEPTED)},
    openapi_extra=request_body(ex.OPENADR_NOTIFICATION, {"type": "object"}),
)
async def openadr_notification(utility_id: UtilityId, request: Request) -> JSONResponse:
    """Answers 200 whenever the notification is taken (new, duplicate, modified, cancelled, not
    applicable): OpenADR 3 callbacks answer 200, and the reference VTN logs anything else as a
    failure. ``duplicate`` and ``state`` in the body tell what happened."""

    async def work(conn: Any, body: bytes) -> JSONResponse:
        response = await _notification(conn, body)
        if response.status_code == 202:
            response.status_code = 200
        return response

    async def _notification(conn: Any, body: bytes) -> JSONResponse:
        raw = normalise_keys(parse_body(body))
        try:
            note = OadrNotification.model_validate(raw)
        except ValidationError as exc:
            raise IntakeError(422, "validation_error", "not an OpenADR 3 notification", _errors(exc)) from None
        if note.objectType != "EVENT" or note.verb == "GET":
            return JSONResponse({"ignored": f"objectType {note.objectType} is not acted on"}, status_code=200)
        try:
            event = OadrEvent.model_validate(note.object)
        except ValidationError as exc:
            raise IntakeError(422, "validation_error", "event object is invalid", _errors(exc)) from None
        ask = from_openadr(event)
        if note.verb == "DELETE":
            if await _existing(conn, utility_id, ask.utility_event_id) is None:
                return await _tombstone(conn, utility_id, ask)
            return await _cancel(conn, utility_id, ask.utility_event_id)
        if note.verb == "PUT" and await _existing(conn, utility_id, ask.utility_event_id) is not None:
            return await _modify(conn, utility_id, ask, _limits(request))
        return await _create(conn, request, utility_id, ask, raw)

    return await _guarded(request, utility_id, work)


# --- the platform's JSON ------------------------------------------------------------------------


@router.post(
    "/events",
    status_code=202,
    response_model=DrEventAccepted,
    summary="Create a DR event (platform JSON)",
    responses={**WEBHOOK_ERRORS, **ok(ex.EVENT_ACCEPTED, 202)},
    openapi_extra=request_body(ex.EVENT_REQUEST, DrEventRequest.model_json_schema()),
)
async def create_event(utility_id: UtilityId, request: Request) -> JSONResponse:
    async def work(conn: Any, body: bytes) -> JSONResponse:
        raw = parse_body(body)
        try:
            req = DrEventRequest.model_validate(raw)
        except ValidationError as exc:
            raise IntakeError(422, "validation_error", "invalid event", _errors(exc)) from None
        return await _create(conn, request, utility_id, from_platform(req), raw)

    return await _guarded(request, utility_id, work)


@router.put(
    "/events/{event_id}",
    response_model=DrEventAccepted,
    summary="Modify a DR event (platform JSON)",
    responses={**WEBHOOK_ERRORS, **ok(ex.EVENT_ACCEPTED)},
    openapi_extra=request_body(ex.EVENT_MODIFY, DrEventModifyRequest.model_json_schema()),
)
async def modify_event(
    utility_id: UtilityId, event_id: Annotated[str, Path(min_length=1, max_length=128)], request: Request
) -> JSONResponse:
    async def work(conn: Any, body: bytes) -> JSONResponse:
        try:
            req = DrEventModifyRequest.model_validate(parse_body(body))
        except ValidationError as exc:
            raise IntakeError(422, "validation_error", "invalid modification", _errors(exc)) from None
        existing = await _existing(conn, utility_id, event_id)
        if existing is None:
            raise IntakeError(404, "not_found", f"no event {event_id!r} for this utility")
        notes: list[str] = []
        start = as_utc(req.start, notes) if req.start else existing["start_at"]
        duration = req.duration_s or (existing["end_at"] - existing["start_at"]).total_seconds()
        ask = EventAsk(event_id, None, None, start, end_of(start, duration), req.target_kw, None, req.level)
        ask.notes = notes
        return await _modify(conn, utility_id, ask, _limits(request))

    return await _guarded(request, utility_id, work)


@router.delete(
    "/events/{event_id}",
    response_model=DrEventAccepted,
    summary="Cancel a DR event",
    responses={**WEBHOOK_ERRORS, **ok({**ex.EVENT_ACCEPTED, "state": "cancelled", "notes": ["cancellation accepted"]})},
)
async def cancel_event(
    utility_id: UtilityId, event_id: Annotated[str, Path(min_length=1, max_length=128)], request: Request
) -> JSONResponse:
    async def work(conn: Any, body: bytes) -> JSONResponse:
        return await _cancel(conn, utility_id, event_id)

    return await _guarded(request, utility_id, work)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300]} for e in exc.errors()[:20]]


__all__ = ["WebhookGuard", "router"]
