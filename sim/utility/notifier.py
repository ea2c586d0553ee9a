"""Delivery of the VTN's notifications to subscribers' callback URLs (webhooks).

A bounded queue feeds the workers (one by default, so notifications leave in order); each notification is POSTed with
``Authorization: Bearer <subscription bearerToken>`` and retried with backoff on transient
failures (connection errors, timeouts, 408/429/5xx) up to ``attempts`` times, waiting as long as a
``Retry-After`` asks (capped by the retry policy's maximum); a 4xx is final.
Faults (:class:`sim.utility.model.NotifyFaults`) drop, duplicate, reorder or re-encode them.
Every outcome is kept in :attr:`Notifier.deliveries` for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import structlog

from energy.resilience import RetryPolicy, guarded_call
from sim.utility.model import Change, NotifyFaults, Subscriber, encode_notification, notification

log = structlog.get_logger("sim.utility.notifier")


@dataclass
class Delivery:
    seq: int
    subscription_id: str
    callback_url: str
    object_type: str
    operation: str
    object_id: str
    copy: int = 1  # 2 for an injected duplicate
    outcome: str = "queued"  # queued | delivered | not_200 | rejected | failed | dropped
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    queued_at: float = field(default_factory=time.time)


@dataclass
class _Job:
    delivery: Delivery
    subscriber: Subscriber
    body: dict[str, Any]
    faults: NotifyFaults


class _Transient(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def _retry_after_s(resp: httpx.Response) -> float | None:
    """A VEN's Retry-After in seconds (RFC 9110 section 10.2.3); an HTTP date is ignored (plain backoff)."""
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class _Rejected(Exception):
    pass


class Notifier:
    def __init__(
        self,
        *,
        attempts: int = 3,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
        workers: int = 1,
        hmac_secret: str | None = None,
        rng: random.Random | None = None,
        default_faults: NotifyFaults | None = None,
        expect_200: bool = False,
    ) -> None:
        self.default_faults = default_faults or NotifyFaults()
        self.faults = self.default_faults
        self.expect_200 = expect_200
        self.deliveries: list[Delivery] = []
        self._retry = RetryPolicy(attempts=attempts, base_delay_s=0.1, max_delay_s=1.0)
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[list[_Job]] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._hmac_secret = hmac_secret
        self._rng = rng or random.Random()
        self._seq = itertools.count(1)
        self._held: list[_Job] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout_s, connect=min(2.0, self._timeout_s)))
        self._tasks = [asyncio.create_task(self._work(), name=f"notifier-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()

    def reset(self) -> None:
        self.deliveries.clear()
        self._held.clear()
        self.faults = self.default_faults

    def notify(self, change: Change, subscribers: list[Subscriber]) -> None:
        faults = self.faults
        body = notification(change, faults.operation_style)
        shared = body
        for sub in subscribers:
            body = (
                shared
                if sub.obj is None
                else notification(Change(change.object_type, change.operation, sub.obj), faults.operation_style)
            )
            copies = 2 if self._rng.random() < faults.duplicate_rate else 1
            for copy in range(1, copies + 1):
                delivery = Delivery(
                    seq=next(self._seq),
                    subscription_id=sub.subscription_id,
                    callback_url=sub.callback_url,
                    object_type=change.object_type,
                    operation=body["operation"],
                    object_id=str(change.obj.get("id")),
                    copy=copy,
                )
                self.deliveries.append(delivery)
                if self._rng.random() < faults.drop_rate:
                    delivery.outcome = "dropped"
                    log.info("vtn_notification_dropped", seq=delivery.seq, subscription_id=sub.subscription_id)
                    continue
                job = _Job(delivery, sub, body, faults)
                if faults.reorder:
                    self._hold(job)
                else:
                    self._enqueue([job])

    async def deliver_now(self, change: Change, subscribers: list[Subscriber]) -> list[Delivery]:
        """Deliver once to each subscriber while the request that caused the change waits, as the
        reference VTN does; drop/duplicate/reorder faults do not apply. Returns the deliveries."""
        assert self._http is not None
        faults = self.faults
        body = notification(change, faults.operation_style)
        out = []
        shared = body
        for sub in subscribers:
            # target hiding (decision 0410 rule 17): a VEN's copy names only the targets granted to it
            body = (
                shared
                if sub.obj is None
                else notification(Change(change.object_type, change.operation, sub.obj), faults.operation_style)
            )
            delivery = Delivery(
                seq=next(self._seq),
                subscription_id=sub.subscription_id,
                callback_url=sub.callback_url,
                object_type=change.object_type,
                operation=body["operation"],
                object_id=str(change.obj.get("id")),
            )
            self.deliveries.append(delivery)
            job = _Job(delivery, sub, body, faults)
            content = encode_notification(body, faults)
            delivery.attempts = 1
            try:
                resp = await self._http.post(sub.callback_url, content=content, headers=self._headers(job, content))
            except httpx.HTTPError as exc:
                delivery.outcome, delivery.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
            else:
                delivery.status_code = resp.status_code
                delivery.outcome = self._outcome(resp.status_code)
            log.info("vtn_notification", **{k: v for k, v in asdict(delivery).items() if k != "queued_at"})
            out.append(delivery)
        return out

    def _outcome(self, status: int) -> str:
        if status == 200 or (200 <= status < 300 and not self.expect_200):
            return "delivered"
        if 200 <= status < 300:
            return "not_200"  # the specification answers a notification with 200; a VTN logs anything else
        return "rejected" if status < 500 else "failed"

    def _enqueue(self, jobs: list[_Job]) -> None:
        try:
            self._queue.put_nowait(jobs)
        except asyncio.QueueFull:
            for job in jobs:
                job.delivery.outcome = "failed"
                job.delivery.error = "notification queue full"
                log.warning("vtn_notification_queue_full", seq=job.delivery.seq)

    def _hold(self, job: _Job) -> None:
        """Reordering: hold notifications for a window, then send them newest first."""
        self._held.append(job)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(job.faults.reorder_window_ms / 1000.0, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        held, self._held = self._held, []
        self._enqueue(list(reversed(held)))  # one batch: delivered in this (reversed) order

    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._held)

    async def _work(self) -> None:
        while True:
            jobs = await self._queue.get()
            try:
                for job in jobs:
                    try:
                        await self._deliver(job)
                    except Exception as exc:  # a worker never dies: the outcome is recorded instead
                        job.delivery.outcome = "failed"
                        job.delivery.error = f"{type(exc).__name__}: {exc}"[:300]
                        log.warning("vtn_notification_failed", seq=job.delivery.seq, error=job.delivery.error)
            finally:
                self._queue.task_done()

    def _headers(self, job: _Job, content: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        token = job.subscriber.bearer_token
        if job.faults.wrong_token:
            token = "not-the-token-you-issued"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self._hmac_secret:
            stamp = str(int(time.time()))
            mac = hmac.new(self._hmac_secret.encode(), stamp.encode() + b"." + content, hashlib.sha256)
            headers["X-Signature-Timestamp"] = stamp
            headers["X-Signature"] = f"sha256={mac.hexdigest()}"
        return headers

    async def _deliver(self, job: _Job) -> None:
        assert self._http is not None
        http = self._http
        delivery = job.delivery
        content = encode_notification(job.body, job.faults)

        async def post() -> httpx.Response:
            delivery.attempts += 1
            try:
                resp = await http.post(
                    job.subscriber.callback_url, content=content, headers=self._headers(job, content)
                )
            except httpx.HTTPError as exc:
                delivery.error = f"{type(exc).__name__}: {exc}"[:300]
                raise _Transient(delivery.error) from exc
            delivery.status_code = resp.status_code
            if resp.status_code in (408, 429) or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}", _retry_after_s(resp))
            if resp.status_code >= 400:
                raise _Rejected(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return resp

        try:
            await guarded_call(
                "vtn-callback",
                post,
                timeout_s=self._timeout_s,
                retry=self._retry,
                is_transient=lambda exc: isinstance(exc, _Transient | TimeoutError),
                retry_after=lambda exc: exc.retry_after_s if isinstance(exc, _Transient) else None,
            )
        except _Rejected as exc:
            delivery.outcome, delivery.error = "rejected", str(exc)
        except (_Transient, TimeoutError) as exc:
            delivery.outcome, delivery.error = "failed", str(exc) or type(exc).__name__
        else:
            delivery.outcome, delivery.error = self._outcome(delivery.status_code or 200), None
        log.info("vtn_notification", **{k: v for k, v in asdict(delivery).items() if k != "queued_at"})
