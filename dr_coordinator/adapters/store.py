"""PostgreSQL saga store: load a saga, persist a decision (state with optimistic version check,
append-only log, BMS command rows, outbox rows) in the caller's transaction.

asyncpg only; SQL with bound parameters. The caller owns the transaction, so state, log,
commands and outbox commit or roll back together.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import structlog

from dr_coordinator.domain.commands import (
    ApplyPlans,
    CommandIssued,
    Message,
    Noted,
    ReleaseHold,
    StartDispatch,
    StateChanged,
    command_id,
    idempotency_key,
)
from dr_coordinator.domain.planner import ZoneAction
from dr_coordinator.domain.saga import Decision, FacilitySaga, Saga, completed_dispatch, decide, dispatch_delay_s
from dr_coordinator.domain.schedule import IntervalAsk
from dr_coordinator.domain.zones import ZoneClaim
from dr_coordinator.metrics import DISPATCH_SECONDS, SAGA_TRANSITIONS
from energy.observability import tracing
from energy.resilience import RetryPolicy, guarded_call
from schemas.dr import (
    BmsAction,
    BmsCommand,
    BmsCommandIssuedEvent,
    DrEventReceived,
    DrEventReceivedEvent,
    DrEventState,
    DrEventStateChanged,
    DrEventStateChangedEvent,
    FacilityDrState,
)
from schemas.envelope import Envelope
from schemas.topics import BMS_COMMANDS, DR_EVENTS

SOURCE = "dr-coordinator"
log = structlog.get_logger("dr.store")
# Facilities written per statement and transaction when an event is taken in (decision 0920): a
# fleet-wide event of 1,000 facilities once hit the statement timeout as one transaction.
INTAKE_CHUNK = 200
T = TypeVar("T")
SAGA_RACE_RETRY = RetryPolicy(attempts=8, base_delay_s=0.01, max_delay_s=1.0)


class ConcurrencyError(RuntimeError):
    """Someone else changed the saga since we loaded it (optimistic lock): reload and retry."""


class SagaNotFoundError(LookupError):
    pass


# --- codecs ------------------------------------------------------------------------------------


def _facility_detail(f: FacilitySaga) -> str:
    return json.dumps(
        {
            "criticality_tier": f.criticality_tier,
            "actions": [
                {"zone_id": a.zone_id, "action": a.action, "value": a.value, "shed_kw": a.shed_kw} for a in f.actions
            ],
            "awaiting": sorted(f.awaiting),
            "outcome": f.outcome.value if f.outcome else None,
            "reason": f.reason,
            "restore_failed": f.restore_failed,
        }
    )


def _facility_from_row(row: asyncpg.Record) -> FacilitySaga:
    d = row["detail"]
    d = json.loads(d) if isinstance(d, str) else dict(d or {})
    return FacilitySaga(
        facility_id=row["facility_id"],
        state=FacilityDrState(row["state"]),
        criticality_tier=int(d.get("criticality_tier", row.get("criticality_tier") or 3)),
        actions=tuple(
            ZoneAction(a["zone_id"], a["action"], float(a["value"]), float(a["shed_kw"])) for a in d.get("actions", [])
        ),
        awaiting=frozenset(d.get("awaiting", [])),
        outcome=FacilityDrState(d["outcome"]) if d.get("outcome") else None,
        reason=d.get("reason"),
        restore_failed=bool(d.get("restore_failed", False)),
    )


async def load_saga(conn: Any, dr_event_id: uuid.UUID, lock: bool = False) -> Saga:
    """``lock``: hold the event row until the transaction ends, so concurrent results for one event
    (many BMS acks at once) queue instead of failing the version check over and over."""
    ev = await conn.fetchrow(
        """SELECT dr_event_id, state, start_at, end_at, priority, version, cancel_requested, strategy,
                  interval_index, replan_due
           FROM dr_events WHERE dr_event_id = $1"""
        + (" FOR UPDATE" if lock else ""),
        dr_event_id,
    )
    if ev is None:
        raise SagaNotFoundError(f"no DR event {dr_event_id}")
    rows = await conn.fetch(
        """SELECT ef.facility_id, ef.state, ef.detail, f.criticality_tier
           FROM dr_event_facilities ef JOIN facilities f USING (facility_id)
           WHERE ef.dr_event_id = $1 ORDER BY ef.facility_id""",
        dr_event_id,
    )
    return Saga(
        dr_event_id=ev["dr_event_id"],
        state=DrEventState(ev["state"]),
        start=ev["start_at"],
        end=ev["end_at"],
        priority=ev["priority"],
        facilities=tuple(_facility_from_row(r) for r in rows),
        version=ev["version"],
        cancel_requested=ev["cancel_requested"],
        strategy=ev["strategy"],
        interval_index=ev["interval_index"],
        replan_due=ev["replan_due"],
        others=await zone_claims(conn, ev["dr_event_id"], [r["facility_id"] for r in rows]),
    )


async def zone_claims(conn: Any, dr_event_id: uuid.UUID, facility_ids: list[str]) -> tuple[ZoneClaim, ...]:
    """Zones of these facilities that *other* running events hold (their facility dispatching or
    active): the saga hands zones over instead of restoring them (decision 0421)."""
    rows = await conn.fetch(
        """SELECT e.dr_event_id, e.start_at, e.priority, ef.facility_id, ef.state, ef.detail
           FROM dr_event_facilities ef JOIN dr_events e USING (dr_event_id)
           WHERE ef.facility_id = ANY($2::text[]) AND ef.dr_event_id <> $1
             AND ef.state IN ('dispatching', 'active') AND e.state IN ('dispatching', 'active')""",
        dr_event_id,
        facility_ids,
    )
    claims = []
    for r in rows:
        fac = _facility_from_row(r)
        claims += [
            ZoneClaim(r["dr_event_id"], r["facility_id"], a.zone_id, a.action, a.value, r["start_at"], r["priority"])
            for a in fac.actions
        ]
    return tuple(claims)


# --- outbox ------------------------------------------------------------------------------------


async def add_outbox(conn: Any, topic: str, key: str | None, event: Envelope[Any]) -> None:
    ctx = tracing.current_or_new()
    await conn.execute(
        """INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, $3, $4, $5::jsonb)
           ON CONFLICT (event_id) DO NOTHING""",
        event.event_id,
        topic,
        key,
        event.to_bytes(),
        json.dumps({"traceparent": ctx.traceparent, "event_type": event.event_type}),
    )


async def add_outbox_many(conn: Any, rows: Sequence[tuple[str, str | None, Envelope[Any], str]]) -> None:
    """``(topic, key, event, traceparent)`` rows in one pipelined statement (a batch of BMS results)."""
    if rows:
        await conn.executemany(
            _OUTBOX_ROW,
            [
                (
                    event.event_id,
                    topic,
                    key,
                    event.to_bytes(),
                    json.dumps({"traceparent": parent, "event_type": event.event_type}),
                )
                for topic, key, event, parent in rows
            ],
        )


# --- accepting a new event (webhook) ------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    utility_id: str
    utility_event_id: str
    program_id: str | None
    facility_ids: tuple[str, ...]
    start: datetime
    end: datetime
    target_kw: float | None
    import_limit_kw: float | None
    level: int | None
    priority: int
    source_payload: dict[str, Any]
    intervals: tuple[IntervalAsk, ...] = ()
    randomize_start_s: float | None = None


def intervals_json(intervals: tuple[IntervalAsk, ...] | list[IntervalAsk]) -> str | None:
    return json.dumps([i.to_json() for i in intervals]) if intervals else None


async def insert_event(conn: Any, ev: NewEvent, now: datetime) -> tuple[uuid.UUID, bool]:
    """Insert event, facilities, first log entry and outbox row; ``(id, duplicate)``.

    A concurrent duplicate (same utility event id) hits the unique constraint and gets the
    existing event's id back, with nothing created.
    """
    ctx = tracing.current_or_new()
    new_id = uuid.uuid4()
    row = await conn.fetchrow(
        """INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, program_id, state, start_at, end_at,
                                  target_kw, import_limit_kw, level, priority, source_payload, trace_id,
                                  intervals, randomize_start_s)
           VALUES ($1, $2, $3, $4, 'received', $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13::jsonb, $14)
           ON CONFLICT (utility_id, utility_event_id) DO NOTHING RETURNING dr_event_id""",
        new_id,
        ev.utility_id,
        ev.utility_event_id,
        ev.program_id,
        ev.start,
        ev.end,
        ev.target_kw,
        ev.import_limit_kw,
        ev.level,
        ev.priority,
        json.dumps(ev.source_payload, default=str),
        ctx.trace_id,
        intervals_json(ev.intervals),
        ev.randomize_start_s,
    )
    if row is None:
        existing = await conn.fetchval(
            "SELECT dr_event_id FROM dr_events WHERE utility_id = $1 AND utility_event_id = $2",
            ev.utility_id,
            ev.utility_event_id,
        )
        return existing, True
    # The first chunk of facilities now; a larger event keeps the rest in intake_facility_ids for
    # complete_intake (decision 0920), so this transaction does not grow with the fleet.
    first, rest = ev.facility_ids[:INTAKE_CHUNK], ev.facility_ids[INTAKE_CHUNK:]
    await _add_facilities(conn, new_id, list(first))
    if rest:
        await conn.execute(
            "UPDATE dr_events SET intake_facility_ids = $2::text[] WHERE dr_event_id = $1",
            new_id,
            list(ev.facility_ids),
        )
    await conn.execute(
        """INSERT INTO dr_event_log (dr_event_id, entry_type, to_state, detail, trace_id)
           VALUES ($1, 'received', 'received', $2::jsonb, $3)""",
        new_id,
        json.dumps({"utility_event_id": ev.utility_event_id, "facilities": list(ev.facility_ids)}),
        ctx.trace_id,
    )
    payload = DrEventReceived(
        dr_event_id=new_id,
        utility_id=ev.utility_id,
        utility_event_id=ev.utility_event_id,
        program_id=ev.program_id,
        facility_ids=ev.facility_ids,
        start=ev.start,
        end=ev.end,
        target_kw=ev.target_kw,
        level=ev.level,
        priority=min(ev.priority, 100),
    )
    event = DrEventReceivedEvent.wrap(payload, source=SOURCE, occurred_at=now, correlation_id=ctx.trace_id)
    await add_outbox(conn, DR_EVENTS, str(new_id), event)
    return new_id, False


async def _add_facilities(conn: Any, dr_event_id: uuid.UUID, facility_ids: list[str]) -> None:
    """One statement per chunk; a facility already added (a repeated chunk) is left as it is."""
    if facility_ids:
        await conn.execute(
            """INSERT INTO dr_event_facilities (dr_event_id, facility_id, state)
               SELECT $1, f, 'pending' FROM unnest($2::text[]) AS f
               ON CONFLICT (dr_event_id, facility_id) DO NOTHING""",
            dr_event_id,
            facility_ids,
        )


async def complete_intake(pool: Any, dr_event_id: uuid.UUID) -> int:
    """Add the facilities an event's intake left to add, one transaction per chunk of
    ``INTAKE_CHUNK``, then mark the intake complete; ``(facilities in the list)``, 0 if complete.

    Safe to repeat and to run concurrently (another coordinator, a crash half-way): a chunk adds only
    the facilities missing, and the list is cleared only after every chunk is in. Until then the
    event stays ``received`` (the timers do not schedule it), so no saga sees a partial event."""
    facility_ids = await pool.fetchval("SELECT intake_facility_ids FROM dr_events WHERE dr_event_id = $1", dr_event_id)
    if facility_ids is None:
        return 0
    for i in range(0, len(facility_ids), INTAKE_CHUNK):
        async with pool.acquire() as conn, conn.transaction():
            await _add_facilities(conn, dr_event_id, facility_ids[i : i + INTAKE_CHUNK])
    await pool.execute("UPDATE dr_events SET intake_facility_ids = NULL WHERE dr_event_id = $1", dr_event_id)
    log.info("dr_event_intake_completed", dr_event_id=str(dr_event_id), facilities=len(facility_ids))
    return len(facility_ids)


# --- persisting a decision ---------------------------------------------------------------------


async def save_decision(conn: Any, before: Saga, decision: Decision, message: Message, now: datetime) -> None:
    after = decision.saga
    ctx = tracing.current_or_new()
    updated = await conn.fetchval(
        """UPDATE dr_events SET state = $3, start_at = $4, end_at = $5, strategy = $6, cancel_requested = $7,
                                version = version + 1, updated_at = $8, interval_index = $9, replan_due = $10
           WHERE dr_event_id = $1 AND version = $2 RETURNING created_at""",
        after.dr_event_id,
        before.version,
        after.state.value,
        after.start,
        after.end,
        after.strategy,
        after.cancel_requested,
        now,
        after.interval_index,
        after.replan_due,
    )
    if updated is None:
        raise ConcurrencyError(f"DR event {after.dr_event_id} changed since version {before.version}")
    if completed_dispatch(decision):  # observed in the transaction, like the transition counter below
        DISPATCH_SECONDS.observe(dispatch_delay_s(after.start, updated, now))
    old = {f.facility_id: f for f in before.facilities}
    plans = message.plans if isinstance(message, StartDispatch | ApplyPlans) else {}
    if isinstance(message, ReleaseHold):
        plans = {message.plan.facility_id: message.plan}
    # One statement per kind of row, not one per row: a dispatch of 200 facilities writes ~1,000
    # commands, outbox and log rows, and row-by-row round trips dominated its transaction.
    changed = []
    for fac in after.facilities:
        plan = plans.get(fac.facility_id)
        if fac == old.get(fac.facility_id) and plan is None:
            continue
        changed.append(
            (
                after.dr_event_id,
                fac.facility_id,
                fac.state.value,
                _facility_detail(fac),
                now,
                plan.target_kw if plan else None,
                plan.strategy.value if plan else None,
            )
        )
    if changed:
        await conn.executemany(
            """UPDATE dr_event_facilities SET state = $3, detail = $4::jsonb, version = version + 1, updated_at = $5,
                      target_kw = COALESCE($6, target_kw), strategy = COALESCE($7, strategy)
               WHERE dr_event_id = $1 AND facility_id = $2""",
            changed,
        )
    await _supersede(conn, after, [ev for ev in decision.events if isinstance(ev, CommandIssued)], now)
    await _record_all(conn, after, decision.events, now, ctx)


async def _supersede(conn: Any, saga: Saga, issued: list[CommandIssued], now: datetime) -> None:
    """Before this decision's commands are inserted: a restore makes its facility's unsent dispatch
    commands moot; a re-plan's command makes its zone's unsent older commands of this event moot."""
    facilities = sorted({c.facility_id for c in issued if c.supersedes_pending})
    if facilities:
        await conn.execute(
            """UPDATE bms_commands SET status = 'superseded', updated_at = $3
               WHERE dr_event_id = $1 AND facility_id = ANY($2::text[]) AND action <> 'restore'
                 AND status = 'pending'""",
            saga.dr_event_id,
            facilities,
            now,
        )
    zones = sorted({(c.facility_id, c.zone_id) for c in issued if c.revision and not c.supersedes_pending})
    if zones:
        await conn.executemany(
            """UPDATE bms_commands SET status = 'superseded', updated_at = $4
               WHERE dr_event_id = $1 AND facility_id = $2 AND zone_id = $3 AND status = 'pending'""",
            [(saga.dr_event_id, facility_id, zone_id, now) for facility_id, zone_id in zones],
        )


_LOG_ROW = """INSERT INTO dr_event_log (dr_event_id, facility_id, entry_type, from_state, to_state, detail, trace_id)
              VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)"""
_OUTBOX_ROW = """INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, $3, $4, $5::jsonb)
                 ON CONFLICT (event_id) DO NOTHING"""


async def _record_all(
    conn: Any,
    saga: Saga,
    events: list[StateChanged | CommandIssued | Noted] | Any,
    now: datetime,
    ctx: tracing.TraceContext,
) -> None:
    """The decision's log, command and outbox rows, in the decision's order, one statement per table.
    A command whose idempotency key exists already is not announced again (as before: ON CONFLICT)."""
    commands = []
    for ev in events:
        if isinstance(ev, CommandIssued):
            key = idempotency_key(saga.dr_event_id, ev.facility_id, ev.zone_id, ev.action, ev.revision)
            commands.append((ev, key))
    inserted: set[uuid.UUID] = set()
    if commands:
        rows = await conn.fetch(
            """INSERT INTO bms_commands (command_id, idempotency_key, dr_event_id, facility_id, zone_id, action,
                                         value, trace_id, dispatch_order, not_before, traceparent)
               SELECT c.id, c.key, $1, c.facility_id, c.zone_id, c.action, c.value, $2, c.ord, c.not_before, $3
               FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::float8[], $10::int[],
                           $11::timestamptz[])
                    WITH ORDINALITY AS c(id, key, facility_id, zone_id, action, value, ord, not_before, n)
               ORDER BY c.n
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING command_id""",
            saga.dr_event_id,
            ctx.trace_id,
            ctx.traceparent,
            [command_id(key) for _, key in commands],
            [key for _, key in commands],
            [ev.facility_id for ev, _ in commands],
            [ev.zone_id for ev, _ in commands],
            [ev.action for ev, _ in commands],
            [ev.value for ev, _ in commands],
            [ev.order for ev, _ in commands],
            [max(now, ev.not_before) if ev.not_before else now for ev, _ in commands],
        )
        inserted = {r["command_id"] for r in rows}
    logs: list[tuple[Any, ...]] = []
    outbox: list[tuple[Any, ...]] = []

    def announce(topic: str, key: str | None, event: Envelope[Any]) -> None:
        headers = json.dumps({"traceparent": ctx.traceparent, "event_type": event.event_type})
        outbox.append((event.event_id, topic, key, event.to_bytes(), headers))

    for seq, ev in enumerate(events):
        if isinstance(ev, StateChanged):
            SAGA_TRANSITIONS.labels("facility" if ev.facility_id else "event", ev.to_state).inc()
            logs.append(
                (
                    saga.dr_event_id,
                    ev.facility_id,
                    "state_changed",
                    ev.from_state,
                    ev.to_state,
                    json.dumps({"reason": ev.reason}),
                    ctx.trace_id,
                )
            )
            payload = DrEventStateChanged(
                dr_event_id=saga.dr_event_id,
                facility_id=ev.facility_id,
                from_state=ev.from_state,
                to_state=ev.to_state,
                reason=(ev.reason or "")[:500] or None,
                version=saga.version + 1,
            )
            # Deterministic id: a retried transaction cannot publish the same transition twice.
            eid = uuid.uuid5(saga.dr_event_id, f"{saga.version + 1}:{seq}")
            announce(
                DR_EVENTS,
                str(saga.dr_event_id),
                DrEventStateChangedEvent.wrap(
                    payload, source=SOURCE, occurred_at=now, event_id=eid, correlation_id=ctx.trace_id
                ),
            )
        elif isinstance(ev, CommandIssued):
            key = idempotency_key(saga.dr_event_id, ev.facility_id, ev.zone_id, ev.action, ev.revision)
            if command_id(key) not in inserted:
                continue
            cmd = BmsCommand(
                command_id=command_id(key),
                idempotency_key=key,
                dr_event_id=saga.dr_event_id,
                facility_id=ev.facility_id,
                zone_id=ev.zone_id,
                action=BmsAction(ev.action),
                value=ev.value,
            )
            announce(
                BMS_COMMANDS,
                ev.facility_id,
                BmsCommandIssuedEvent.wrap(
                    cmd,
                    source=SOURCE,
                    occurred_at=now,
                    event_id=uuid.uuid5(command_id(key), "issued"),
                    correlation_id=ctx.trace_id,
                ),
            )
        else:
            logs.append(
                (
                    saga.dr_event_id,
                    ev.facility_id,
                    ev.entry_type,
                    None,
                    None,
                    json.dumps(ev.detail, default=str),
                    ctx.trace_id,
                )
            )
    if logs:
        await conn.executemany(_LOG_ROW, logs)
    if outbox:
        await conn.executemany(_OUTBOX_ROW, outbox)


# --- handle: load, decide, save; retried on optimistic-lock conflicts ----------------------------


async def handle_in(conn: Any, dr_event_id: uuid.UUID, message: Message, now: datetime) -> Decision:
    """Decide and persist within the caller's transaction (raises ConcurrencyError on a lost race).

    One span per message; the commands and outbox rows it writes carry its traceparent."""
    with tracing.use_trace(
        name="dr.saga.handle", attributes={"dr_event_id": str(dr_event_id), "message": type(message).__name__}
    ):
        saga = await load_saga(conn, dr_event_id, lock=True)
        decision = decide(saga, message, now)
        if decision.changed:
            await save_decision(conn, saga, decision, message, now)
        return decision


def postgres_transient(exc: BaseException) -> bool:
    """Errors of a PostgreSQL that is loaded, restarting or out of connections (not a bug of ours)."""
    return isinstance(
        exc,
        TimeoutError
        | OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.QueryCanceledError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.TooManyConnectionsError,
    )


def _lost_a_race(exc: BaseException) -> bool:
    return isinstance(exc, ConcurrencyError | asyncpg.SerializationError | asyncpg.DeadlockDetectedError)


async def with_retry(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one saga transaction again when another writer won the race (optimistic lock, serialization
    failure, deadlock); any other error is raised at once. Bounded by the pool's command timeout."""
    return await guarded_call("postgres-saga", fn, timeout_s=None, retry=SAGA_RACE_RETRY, is_transient=_lost_a_race)


async def handle(pool: Any, dr_event_id: uuid.UUID, message: Message, now: Callable[[], datetime]) -> Decision:
    """One message into one saga, in one transaction, retried when another writer won the race."""

    async def once() -> Decision:
        async with pool.acquire() as conn, conn.transaction():
            return await handle_in(conn, dr_event_id, message, now())

    return await with_retry(once)
