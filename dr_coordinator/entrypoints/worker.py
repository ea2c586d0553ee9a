"""BMS command worker: carries out ``bms_commands`` rows at least once, with their idempotency key.

A row is claimed (``FOR UPDATE SKIP LOCKED``) by setting it ``in_flight`` with a lease; a worker
that dies mid-call leaves the lease to expire and the row is claimed again, and the BMS answers
the repeated key as a duplicate without executing it twice. Transient failures are rescheduled
with full-jitter backoff; rejections and exhausted attempts fail the command for good (DLQ topic
via the outbox, alert metric) and the saga compensates. Results re-enter the saga in the same
transaction that records them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog

from dr_coordinator.adapters.store import (
    SOURCE,
    add_outbox,
    add_outbox_many,
    load_saga,
    postgres_transient,
    save_decision,
    with_retry,
)
from dr_coordinator.config import DrSettings
from dr_coordinator.domain.commands import RecordCommandAcknowledged, RecordCommandFailed, Schedule
from dr_coordinator.domain.saga import Decision, IllegalTransitionError, decide
from dr_coordinator.metrics import BMS_COMMAND_LATENCY, BMS_COMMANDS, BMS_COMMANDS_DUE, BMS_COMMANDS_FAILED, LOOP_ERRORS
from dr_coordinator.ports import BmsAck, BmsGateway, BmsRejectedError, BmsUnavailableError
from energy.observability import tracing
from energy.resilience import RetryPolicy, guarded_call
from schemas.dr import (
    BmsAction,
    BmsCommand,
    BmsCommandAcknowledged,
    BmsCommandAcknowledgedEvent,
    BmsCommandFailed,
    BmsCommandFailedEvent,
)
from schemas.topics import BMS_COMMANDS as BMS_TOPIC
from schemas.topics import BMS_COMMANDS_DLQ

log = structlog.get_logger("dr.worker")
# A batch of acknowledgements whose transaction hit a loaded PostgreSQL is written again at once,
# rather than left to the commands' lease (which would re-send them to the BMS as duplicates).
ACK_RETRY = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)

# A dispatch command whose zone already has a restore is moot; a restore waits while a dispatch
# command of its zone is still in flight under a live lease (so the restore lands last).
_CLAIM = """
WITH due AS (
    SELECT c.command_id FROM bms_commands c JOIN dr_events e USING (dr_event_id)
    WHERE (c.status IN ('pending', 'in_flight') OR (c.status = 'failed' AND c.action = 'restore'))
      AND c.not_before <= $1
      AND ($4::text[] IS NULL OR e.utility_id = ANY($4::text[]))
      AND NOT EXISTS (
          -- One zone, one command at a time, oldest first, across events (decision 0421): not while an
          -- older command of the zone is in flight under a live lease, or another event's is unsent.
          SELECT 1 FROM bms_commands d WHERE d.facility_id = c.facility_id AND d.zone_id = c.zone_id
            AND d.command_id <> c.command_id AND d.created_at < c.created_at
            AND ((d.status = 'in_flight' AND d.not_before > $1)
                 OR (d.status = 'pending' AND d.dr_event_id IS DISTINCT FROM c.dr_event_id
                     AND EXISTS (SELECT 1 FROM dr_events de WHERE de.dr_event_id = d.dr_event_id
                                   AND de.state IN ('dispatching', 'active', 'restoring')))))
    ORDER BY c.dispatch_order, c.not_before, c.created_at
    LIMIT $2 FOR UPDATE OF c SKIP LOCKED
)
UPDATE bms_commands c SET status = 'in_flight', attempts = c.attempts + 1, not_before = $1 + $3 * interval '1 second',
       updated_at = $1
FROM due WHERE c.command_id = due.command_id
RETURNING c.command_id, c.idempotency_key, c.dr_event_id, c.facility_id, c.zone_id, c.action, c.value, c.attempts,
          c.trace_id, c.traceparent,
          (SELECT url FROM bms_endpoints b WHERE b.facility_id = c.facility_id AND b.active) AS url,
          EXISTS (SELECT 1 FROM bms_commands r WHERE r.dr_event_id = c.dr_event_id AND r.facility_id = c.facility_id
                  AND r.zone_id = c.zone_id AND r.action = 'restore' AND r.created_at > c.created_at) AS restore_exists
"""


def endpoint_url(settings: DrSettings, facility_id: str, registered: str | None) -> str | None:
    if settings.bms_base_url:
        return f"{settings.bms_base_url.rstrip('/')}/{facility_id}"
    return registered


def _command(row: Any) -> BmsCommand:
    return BmsCommand(
        command_id=row["command_id"],
        idempotency_key=row["idempotency_key"],
        dr_event_id=row["dr_event_id"],
        facility_id=row["facility_id"],
        zone_id=row["zone_id"],
        action=BmsAction(row["action"]),
        value=row["value"],
    )


def _trace(row: Any) -> tracing.TraceContext | None:
    """The span that issued the command (its traceparent); for rows written before that was stored,
    the event's trace id under a span id of our own."""
    if (parent := tracing.parse_traceparent(row["traceparent"])) is not None:
        return parent
    tid = row["trace_id"]
    if tid and len(tid) == 32:
        return tracing.TraceContext(tid, uuid.uuid4().hex[:16])
    return None


class CommandWorker:
    def __init__(
        self,
        pool: Any,
        gateway: BmsGateway,
        settings: DrSettings,
        clock: Callable[[], datetime],
        utility_ids: list[str] | None = None,
    ) -> None:
        self.pool = pool
        self.gateway = gateway
        self.settings = settings
        self.clock = clock
        self.utility_ids = utility_ids or None
        self._inflight: set[asyncio.Task[None]] = set()
        self._commands: dict[asyncio.Task[None], uuid.UUID] = {}  # in-flight task -> its command
        self._wake = asyncio.Event()
        self._results = asyncio.Event()
        self._acks: list[tuple[BmsCommand, BmsAck, str, asyncio.Future[None]]] = []
        self._ack_flush: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claimed = await self.claim_and_start()
            except Exception as exc:  # keep the loop alive; the error is logged and counted
                LOOP_ERRORS.labels("bms_worker").inc()
                log.error("bms_worker_claim_failed", error=f"{type(exc).__name__}: {exc}")
                claimed = 0
            if claimed == 0 or len(self._inflight) >= self.settings.worker_batch:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waiter}, timeout=self.settings.poll_interval_s)
                waiter.cancel()
        if self._inflight:
            _, unfinished = await asyncio.wait(self._inflight, timeout=self.settings.worker_shutdown_wait_s)
            if unfinished:
                await self.lease_back(unfinished)

    async def lease_back(self, tasks: set[asyncio.Task[None]]) -> None:
        """Shutting down with BMS calls unanswered: stop waiting for them and hand their commands back
        (lease expired now), so another replica sends them at once instead of after ``bms_lease_s``.
        A call that did reach the BMS is harmless to repeat: the idempotency key makes it a no-op."""
        ids = [self._commands[t] for t in tasks if t in self._commands]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        now = self.clock()
        released = await self.pool.fetch(
            """UPDATE bms_commands SET not_before = $2, updated_at = $2
               WHERE command_id = ANY($1::uuid[]) AND status = 'in_flight' RETURNING command_id""",
            ids,
            now,
        )
        log.info("bms_commands_leased_back", commands=len(released))

    async def claim_and_start(self) -> int:
        free = self.settings.worker_batch - len(self._inflight)
        if free <= 0:
            return 0
        now = self.clock()
        rows = await self.pool.fetch(_CLAIM, now, free, self.settings.bms_lease_s, self.utility_ids)
        BMS_COMMANDS_DUE.set(len(self._inflight) + len(rows))
        for row in rows:
            task = asyncio.create_task(self._execute(row))
            self._inflight.add(task)
            self._commands[task] = row["command_id"]
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._commands.pop(task, None)
        self._wake.set()

    async def _execute(self, row: Any) -> None:
        cmd = _command(row)
        with (
            tracing.use_trace(
                _trace(row),
                "dr.bms.command",
                attributes={
                    "dr_event_id": str(cmd.dr_event_id),
                    "facility_id": cmd.facility_id,
                    "zone_id": cmd.zone_id,
                    "action": cmd.action.value,
                    "idempotency_key": cmd.idempotency_key,
                },
            ) as ctx,
            structlog.contextvars.bound_contextvars(
                dr_event_id=str(cmd.dr_event_id),
                facility_id=cmd.facility_id,
                zone_id=cmd.zone_id,
                action=cmd.action.value,
            ),
        ):
            try:
                if row["restore_exists"] and cmd.action is not BmsAction.RESTORE:
                    await self._supersede(row)
                    return
                url = endpoint_url(self.settings, cmd.facility_id, row["url"])
                if not url:
                    await self._fail(row, cmd, "no active BMS endpoint for the facility", transient=False)
                    return
                t0 = asyncio.get_running_loop().time()
                try:
                    ack = await asyncio.wait_for(
                        self.gateway.execute(url, cmd, ctx.traceparent), self.settings.bms_total_timeout_s + 1
                    )
                except BmsRejectedError as exc:
                    BMS_COMMANDS.labels("rejected").inc()
                    await self._fail(row, cmd, f"rejected: {exc}", transient=False)
                    return
                except (BmsUnavailableError, TimeoutError, OSError) as exc:
                    BMS_COMMANDS.labels("transient").inc()
                    await self._transient(row, cmd, f"{type(exc).__name__}: {exc}")
                    return
                finally:
                    BMS_COMMAND_LATENCY.observe(asyncio.get_running_loop().time() - t0)
                BMS_COMMANDS.labels("duplicate" if ack.duplicate else "ok").inc()
                await self._ack(row, cmd, ack)
            except Exception as exc:  # a bug or the database: the lease expires and the row is retried
                LOOP_ERRORS.labels("bms_worker").inc()
                log.error("bms_command_handling_failed", error=f"{type(exc).__name__}: {exc}")

    async def _supersede(self, row: Any) -> None:
        await self.pool.execute(
            """UPDATE bms_commands SET status = 'superseded', updated_at = $2
               WHERE command_id = $1 AND status = 'in_flight'""",
            row["command_id"],
            self.clock(),
        )

    async def _transient(self, row: Any, cmd: BmsCommand, reason: str) -> None:
        attempts = row["attempts"]
        if attempts >= self.settings.bms_command_max_attempts:
            await self._fail(row, cmd, f"gave up after {attempts} attempts: {reason}", transient=True)
            return
        # kept in the row's not_before (another replica may take it), with the one retry policy's backoff
        s = self.settings
        retry = RetryPolicy(s.bms_command_max_attempts, s.bms_retry_base_s, s.bms_retry_max_s)
        delay = retry.delay_s(attempts)
        await self.pool.execute(
            """UPDATE bms_commands SET status = 'pending', not_before = $2, last_error = $3, updated_at = $4
               WHERE command_id = $1 AND status = 'in_flight'""",
            row["command_id"],
            self.clock() + timedelta(seconds=delay),
            reason[:1000],
            self.clock(),
        )
        log.info("bms_command_retry_scheduled", attempts=attempts, delay_s=round(delay, 2), reason=reason[:300])

    async def _ack(self, row: Any, cmd: BmsCommand, ack: BmsAck) -> None:
        """Record an acknowledgement, batched with the others that arrive meanwhile: while one
        batch's transaction runs, the next acks queue and go in the next one (one UPDATE and one
        pipelined outbox insert per batch, not a transaction per command). Returns once recorded;
        a crash before that leaves the row in flight, re-sent after its lease as a BMS duplicate."""
        done = asyncio.get_running_loop().create_future()
        self._acks.append((cmd, ack, tracing.current_or_new().traceparent, done))
        if self._ack_flush is None or self._ack_flush.done():
            self._ack_flush = asyncio.create_task(self._flush_acks())
        await done

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                acks = [(cmd, ack, parent) for cmd, ack, parent, _ in batch]
                await guarded_call(
                    "postgres-dr-acks",
                    partial(self._record_acks, acks),
                    timeout_s=None,  # bounded by the pool's command timeout
                    retry=ACK_RETRY,
                    is_transient=postgres_transient,
                )
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _record_acks(self, batch: list[tuple[BmsCommand, BmsAck, str]]) -> None:
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            recorded = await conn.fetch(
                """UPDATE bms_commands SET status = 'acknowledged', acknowledged_at = $2, updated_at = $2,
                          last_error = NULL, saga_applied_at = NULL
                   WHERE command_id = ANY($1::uuid[]) AND status IN ('in_flight', 'pending') RETURNING command_id""",
                [cmd.command_id for cmd, _, _ in batch],
                now,
            )
            fresh = {r["command_id"] for r in recorded}  # the others were recorded already (a duplicate delivery)
            outbox = []
            for cmd, ack, parent in batch:
                if cmd.command_id not in fresh:
                    continue
                fresh.discard(cmd.command_id)  # the same command twice in one batch: announced once
                payload = BmsCommandAcknowledged(
                    command=cmd, executed_at=ack.executed_at, bms_reference=ack.bms_reference[:200]
                )
                event = BmsCommandAcknowledgedEvent.wrap(
                    payload, source=SOURCE, occurred_at=now, event_id=uuid.uuid5(cmd.command_id, "acknowledged")
                )
                outbox.append((BMS_TOPIC, cmd.facility_id, event, parent))
            await add_outbox_many(conn, outbox)
        self._results.set()

    async def _fail(self, row: Any, cmd: BmsCommand, reason: str, *, transient: bool) -> None:
        """Failed for good: DLQ, alert metric, saga. A restore that failed for a transient reason keeps
        being retried every ``restore_retry_interval_s`` until a BMS confirms it; those quiet repeats
        (attempts beyond the maximum) neither re-alert nor re-notify the saga."""
        now = self.clock()
        retry_at = now + timedelta(seconds=self.settings.restore_retry_interval_s)
        not_before = retry_at if (transient and cmd.action is BmsAction.RESTORE) else datetime.max.replace(tzinfo=UTC)
        if row["attempts"] > self.settings.bms_command_max_attempts:
            await self.pool.execute(
                """UPDATE bms_commands SET status = 'failed', last_error = $2, updated_at = $3, not_before = $4
                   WHERE command_id = $1 AND status = 'in_flight'""",
                cmd.command_id,
                reason[:1000],
                now,
                not_before,
            )
            return
        BMS_COMMANDS_FAILED.inc()
        log.error("bms_command_failed_for_good", reason=reason[:500], attempts=row["attempts"])
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                """UPDATE bms_commands SET status = 'failed', last_error = $2, updated_at = $3, saga_applied_at = NULL,
                          not_before = $4
                   WHERE command_id = $1 AND status IN ('in_flight', 'pending') RETURNING command_id""",
                cmd.command_id,
                reason[:1000],
                now,
                not_before,
            )
            if done is None:
                return
            payload = BmsCommandFailed(
                command=cmd, reason=reason[:1000], transient=transient, attempts=max(1, row["attempts"])
            )
            for topic in (BMS_TOPIC, BMS_COMMANDS_DLQ):
                event = BmsCommandFailedEvent.wrap(
                    payload,
                    source=SOURCE,
                    occurred_at=now,
                    event_id=uuid.uuid5(cmd.command_id, f"failed:{topic}:{row['attempts']}"),
                )
                await add_outbox(conn, topic, cmd.facility_id, event)
        self._results.set()

    # --- results -> saga, in batches per event ------------------------------------------------------

    async def apply_results(self) -> int:
        """Fold every recorded but unapplied result into its saga: one transaction per event."""
        events = await self.pool.fetch(
            """SELECT DISTINCT c.dr_event_id FROM bms_commands c JOIN dr_events e USING (dr_event_id)
               WHERE c.saga_applied_at IS NULL AND c.status IN ('acknowledged', 'failed')
                 AND ($1::text[] IS NULL OR e.utility_id = ANY($1::text[]))""",
            self.utility_ids,
        )
        applied = 0
        for ev in events:
            applied += await with_retry(partial(self._apply_event, ev["dr_event_id"]))
        return applied

    async def _apply_event(self, dr_event_id: uuid.UUID) -> int:
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            saga = await load_saga(conn, dr_event_id, lock=True)
            rows = await conn.fetch(
                """SELECT command_id, facility_id, zone_id, action, status, last_error FROM bms_commands
                   WHERE dr_event_id = $1 AND saga_applied_at IS NULL AND status IN ('acknowledged', 'failed')
                   ORDER BY updated_at FOR UPDATE SKIP LOCKED""",
                dr_event_id,
            )
            if not rows:
                return 0
            current, events = saga, []
            for r in rows:
                message: RecordCommandAcknowledged | RecordCommandFailed
                if r["status"] == "acknowledged":
                    message = RecordCommandAcknowledged(r["facility_id"], r["zone_id"], r["action"])
                else:
                    message = RecordCommandFailed(
                        r["facility_id"], r["zone_id"], r["action"], (r["last_error"] or "failed")[:300]
                    )
                try:
                    d = decide(current, message, now)
                except IllegalTransitionError as exc:
                    log.warning("bms_result_not_applicable", dr_event_id=str(dr_event_id), error=str(exc))
                    continue
                current = d.saga
                events.extend(d.events)
            decision = Decision(current, events, current != saga)
            if decision.changed:
                await save_decision(conn, saga, decision, Schedule(), now)
            await conn.execute(
                "UPDATE bms_commands SET saga_applied_at = $2 WHERE command_id = ANY($1::uuid[])",
                [r["command_id"] for r in rows],
                now,
            )
        return len(rows)

    async def run_results(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.apply_results()
            except Exception as exc:  # keep going; unapplied rows stay marked and are retried
                LOOP_ERRORS.labels("bms_worker").inc()
                log.error("bms_results_apply_failed", error=f"{type(exc).__name__}: {exc}")
            self._results.clear()
            waiter = asyncio.ensure_future(self._results.wait())
            await asyncio.wait({waiter}, timeout=self.settings.poll_interval_s)
            waiter.cancel()
