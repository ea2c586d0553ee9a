"""The platform's VEN, one per onboarded utility: register, discover programs, subscribe our
webhook, and poll events as the fallback when notifications are lost (decision 0411).

Everything the VTN says goes through the one intake: polled events are handed to our own webhook
(``/api/utility/<id>/openadr3/notifications``) with a token minted for this runtime (stored hashed
like any webhook token), so authentication, validation, targeting, identity (id + createdDateTime),
tombstones and modificationDateTime ordering are the webhook's, whichever way an event arrived.

- Registration and subscription happen at start and whenever the utility's row changes
  (fingerprint of URL, version, VEN name and credentials). 3.0.1 subscribes once per program we
  have enrollments in (its subscriptions name a program); 3.1 once for all programs.
- Polling: at start (a restart may have missed notifications), then every ``ven_poll_interval_s``,
  and at once after a failed poll once the VTN answers again. Events are handed over oldest
  ``modificationDateTime`` first; an event already seen with the same modification time is skipped.
- An open event of a polled program that the VTN no longer lists was deleted while we were not
  listening: it is handed over as a DELETE (not when the program lists no event at all: that is
  more likely a VTN that lost its store on restart than a deletion).
- Bounded: the VtnClient's timeout, retries of transient errors, breaker per VTN and Retry-After;
  one poll at a time per utility; a failing utility never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import structlog

from dr_coordinator.adapters.onboarding import token_hash
from dr_coordinator.adapters.ven_credentials import SecretBoxError, credentials_box
from dr_coordinator.adapters.vtn_client import VtnClient, VtnError
from dr_coordinator.adapters.vtn_registry import UTILITY_VTN_COLUMNS, VtnClients, VtnTarget
from dr_coordinator.metrics import LOOP_ERRORS
from energy.settings import Settings

log = structlog.get_logger("dr.ven_runtime")
TERMINAL = ("completed", "partially_failed", "failed", "cancelled")
_TARGETS_PER_QUERY = 50  # keeps the query string of a targeted poll short


def webhook_base(settings: Settings) -> str:
    configured = str(settings.dr.webhook_base_url or "").rstrip("/")
    if configured:
        return configured
    ep = settings.endpoints
    return f"http://{ep.api_host}:{ep.api_port}"


class UtilityVen:
    """The VEN of one utility."""

    def __init__(self, pool: Any, settings: Settings, clients: VtnClients, target: VtnTarget) -> None:
        self.pool = pool
        self.settings = settings
        self.clients = clients
        self.target = target
        self.callback_url = f"{webhook_base(settings)}/api/utility/{target.utility_id}/openadr3/notifications"
        self.ven_id: str | None = None
        self.granted: list[str] = []  # 3.1: targets the utility granted this VEN (decision 0410 rule 17)
        self.subscribed = False
        self._hook_token: str | None = None
        self.last_poll_ok = False
        self.polls = 0
        self.handed_over = 0

    async def client(self) -> VtnClient:
        return await self.clients.client_for(self.target)

    async def _mint_hook_token(self) -> str:
        """A webhook token for this runtime: given to the VTN with the subscription and used to hand
        polled events to our own webhook; only its hash is stored."""
        if self._hook_token is None:
            token = secrets.token_urlsafe(32)
            await self.pool.execute(
                "INSERT INTO utility_webhook_tokens (utility_id, token_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                self.target.utility_id,
                token_hash(token),
            )
            self._hook_token = token
        return self._hook_token

    async def programs_enrolled(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT program_id FROM facility_enrollments WHERE utility_id = $1 ORDER BY 1",
            self.target.utility_id,
        )
        return [r["program_id"] for r in rows]

    async def setup(self) -> None:
        client = await self.client()
        self.ven_id = await client.register_ven(self.target.ven_name)
        programs = {p.get("id"): p for p in await client.programs() if isinstance(p, dict)}
        enrolled = await self.programs_enrolled()
        missing = [p for p in enrolled if p not in programs]
        if missing:
            log.warning("dr_ven_programs_unknown_to_vtn", utility_id=self.target.utility_id, programs=missing)
        existing = await self._our_subscriptions(client)
        if client.version == "3.0.1":
            if not existing:
                token = await self._mint_hook_token()
                for program_id in [p for p in enrolled if p in programs]:
                    await client.subscribe(self.callback_url, token, program_id)
        else:
            await self._subscribe_31(client, existing)
        self.subscribed = True
        log.info(
            "dr_ven_ready",
            utility_id=self.target.utility_id,
            ven_id=self.ven_id,
            version=client.version,
            programs=len(programs),
            reused_subscription=bool(existing),
        )

    async def _subscribe_31(self, client: VtnClient, existing: list[dict[str, Any]]) -> None:
        """A 3.1 VTN notifies a VEN of targeted events only through a subscription naming granted targets,
        and of untargeted ones only through a subscription naming none: one of each (the second when
        targets were granted); a targeted subscription for targets no longer granted is removed."""
        self.granted = await client.granted_targets(self.ven_id) if self.ven_id else []
        untargeted = [s for s in existing if not s.get("targets")]
        targeted = [s for s in existing if s.get("targets")]
        token = None
        if not untargeted:
            token = await self._mint_hook_token()
            await client.subscribe(self.callback_url, token, None)
        current = [s for s in targeted if sorted(s["targets"]) == self.granted]
        if self.granted and not current:
            await client.subscribe(self.callback_url, token or await self._mint_hook_token(), None, self.granted)
        for stale in (s for s in targeted if s not in current):
            await client.unsubscribe(str(stale["id"]))

    async def _our_subscriptions(self, client: VtnClient) -> list[dict[str, Any]]:
        """Our subscriptions on the VTN: those that call our webhook."""
        return [
            s
            for s in await client.subscriptions()
            if any(
                isinstance(op, dict) and op.get("callbackUrl") == self.callback_url
                for op in s.get("objectOperations") or []
            )
        ]

    async def poll(self, http: httpx.AsyncClient) -> int:
        """One poll: every event of the programs we are enrolled in, handed over in modification order.
        A VTN that lost our subscription (restarted) gets a new one on the next round."""
        client = await self.client()
        if not await self._our_subscriptions(client):
            self.subscribed = False
            log.warning("dr_ven_subscription_lost", utility_id=self.target.utility_id)
        enrolled = set(await self.programs_enrolled())
        listed_events = await client.poll_events()
        if client.version == "3.1" and self.ven_id is not None:
            granted = await client.granted_targets(self.ven_id)
            if granted != self.granted:  # grants changed: subscribe for the new ones next round
                self.subscribed = False
            for chunk in range(0, len(granted), _TARGETS_PER_QUERY):  # targeted events are listed only so
                listed_events.extend(await client.poll_events(targets=granted[chunk : chunk + _TARGETS_PER_QUERY]))
        unique: dict[tuple[str, Any], dict[str, Any]] = {}
        for e in (e for e in listed_events if isinstance(e, dict)):
            ident = (str(e.get("id")), e.get("createdDateTime"))
            first = unique.get(ident)
            if first is not None and isinstance(first.get("targets"), list) and isinstance(e.get("targets"), list):
                # each targeted query shows only the targets it named (target hiding): the union is ours
                e = {**e, "targets": list(dict.fromkeys([*first["targets"], *e["targets"]]))}
            unique[ident] = e
        events = [e for e in unique.values() if e.get("programID") in enrolled]
        events.sort(key=lambda e: str(e.get("modificationDateTime") or e.get("createdDateTime") or ""))
        seen = {
            (r["vtn_event_id"], r["vtn_created_at"]): r
            for r in await self.pool.fetch(
                """SELECT vtn_event_id, vtn_created_at, vtn_modified_at, state, program_id FROM dr_events
                   WHERE utility_id = $1 AND vtn_event_id IS NOT NULL""",
                self.target.utility_id,
            )
        }
        handed = 0
        listed = set()
        for ev in events:
            key = (str(ev.get("id")), ev.get("createdDateTime"))
            listed.add(key)
            known = seen.get(key)
            if known is not None and not self._newer(ev, known["vtn_modified_at"]):
                continue
            handed += await self._hand_over(http, "UPDATE" if known is not None else "CREATE", ev)
        programs_listed = {e.get("programID") for e in events}
        for key, row in seen.items():
            # Absent from a program that still lists events: deleted while we were not listening. A program
            # listing nothing at all is more likely a wiped VTN (in-memory store restarted): nothing inferred.
            if key not in listed and row["state"] not in TERMINAL and row["program_id"] in programs_listed:
                obj = {"id": key[0], "createdDateTime": key[1], "programID": row["program_id"], "intervals": []}
                handed += await self._hand_over(http, "DELETE", obj)
        self.polls += 1
        self.handed_over += handed
        return handed

    @staticmethod
    def _newer(ev: dict[str, Any], stored: datetime | None) -> bool:
        from dr_coordinator.domain.intake import parse_vtn_time

        modified = parse_vtn_time(ev.get("modificationDateTime"), [])
        return modified is not None and (stored is None or modified > stored)

    async def _hand_over(self, http: httpx.AsyncClient, operation: str, obj: dict[str, Any]) -> int:
        token = await self._mint_hook_token()
        note = {"objectType": "EVENT", "operation": operation, "object": obj}
        resp = await http.post(self.callback_url, json=note, headers={"Authorization": f"Bearer {token}"})
        if resp.status_code >= 500:
            raise VtnError(f"our webhook answered {resp.status_code} for a polled event")
        if resp.status_code >= 400:  # the event itself is refused (bad timing, overlap...): logged, not retried
            log.warning(
                "dr_ven_polled_event_refused",
                utility_id=self.target.utility_id,
                vtn_event_id=obj.get("id"),
                status=resp.status_code,
                reason=resp.text[:300],
            )
            return 0
        log.info("dr_ven_polled_event", utility_id=self.target.utility_id, vtn_event_id=obj.get("id"), op=operation)
        return 1


class VenRuntime:
    """Every utility's VEN; reloads the utilities each round so onboarding changes take effect."""

    def __init__(
        self,
        pool: Any,
        settings: Settings,
        utility_ids: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.utility_ids = utility_ids
        self.clock = clock
        self.clients = VtnClients(settings.dr.vtn_token.get_secret_value())
        self.vens: dict[str, UtilityVen] = {}
        self._next_poll: dict[str, float] = {}

    async def load(self) -> list[VtnTarget]:
        rows = await self.pool.fetch(
            f"""SELECT {UTILITY_VTN_COLUMNS} FROM utilities u
               WHERE u.active AND u.vtn_base_url IS NOT NULL
                 AND ($1::text[] IS NULL OR u.utility_id = ANY($1::text[]))""",
            self.utility_ids,
        )
        box = credentials_box(self.settings.dr)
        targets = []
        for r in rows:
            try:
                targets.append(VtnTarget.from_row(r, box))
            except SecretBoxError as exc:  # one utility's credentials; the others carry on
                LOOP_ERRORS.labels("ven_runtime").inc()
                log.error("dr_ven_credentials_unreadable", utility_id=r["utility_id"], error=str(exc))
        return targets

    async def round(self, http: httpx.AsyncClient) -> None:
        targets = {t.utility_id: t for t in await self.load()}
        for gone in set(self.vens) - set(targets):
            del self.vens[gone]
        now = self.clock()
        for uid, target in targets.items():
            ven = self.vens.get(uid)
            if ven is None or ven.target.fingerprint() != target.fingerprint():
                ven = self.vens[uid] = UtilityVen(self.pool, self.settings, self.clients, target)
                self._next_poll[uid] = now  # new or changed: poll at once
            try:
                if not ven.subscribed:
                    await ven.setup()
                if now >= self._next_poll.get(uid, now):
                    recovered = not ven.last_poll_ok
                    handed = await ven.poll(http)
                    ven.last_poll_ok = True
                    self._next_poll[uid] = now + self.settings.dr.ven_poll_interval_s
                    if handed or recovered:
                        log.info("dr_ven_polled", utility_id=uid, handed_over=handed)
            except (VtnError, httpx.HTTPError, TimeoutError, ValueError, KeyError) as exc:
                ven.last_poll_ok = False
                self._next_poll[uid] = now + min(5.0, self.settings.dr.ven_poll_interval_s)  # at once when back
                LOOP_ERRORS.labels("ven_runtime").inc()
                log.warning("dr_ven_round_failed", utility_id=uid, error=f"{type(exc).__name__}: {exc}"[:300])

    async def run(self, stop: asyncio.Event) -> None:
        tick = min(1.0, self.settings.dr.ven_poll_interval_s)
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0)) as http:
            while not stop.is_set():  # polling rounds, not a retry loop; calls retry in VtnClient (decision 0840)
                try:
                    await self.round(http)
                except Exception as exc:  # the loop survives anything
                    LOOP_ERRORS.labels("ven_runtime").inc()
                    log.error("dr_ven_runtime_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        await self.clients.close()


__all__ = ["UtilityVen", "VenRuntime", "webhook_base"]
