"""The platform's VEN side of a utility's OpenADR 3 VTN: :class:`VtnClient` (REST over httpx).

- every call bounded by ``timeout_s``; one circuit breaker per VTN (``vtn:<host:port>``);
- retries with full-jitter backoff for transient failures only: for reads (GET), connection
  errors, timeouts, 408/429/5xx; for writes (POST), only when the request cannot have been
  processed (connection refused, connect timeout, 429, 503), since OpenADR has no idempotency
  key and a retried POST after a lost answer would create the object twice;
- ``Retry-After`` (seconds) is honoured, capped by the backoff maximum;
- 4xx answers raise :class:`VtnRejectedError` (never retried, does not trip the breaker); what is
  still failing after the retries, or an open breaker, raises :class:`VtnUnavailableError`;
- the current W3C ``traceparent`` travels as an HTTP header;
- speaks the utility's OpenADR version (``3.0.1`` or ``3.1``): the VEN registration object
  (``VEN`` / ``VEN_VEN_REQUEST``), subscription operation names (HTTP verbs / CRUD);
- authenticates with a bearer token, or with OAuth2 client credentials (RFC 6749 4.4) exchanged
  at the VTN's token endpoint, refreshed before expiry and once after a 401.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog

from energy.observability import tracing
from energy.resilience import CircuitOpenError, RetryPolicy, guarded_call, make_breaker

log = structlog.get_logger("dr_coordinator.vtn_client")

_PAGE = 50  # the OpenADR 3 maximum ``limit``
_MAX_PAGES = 200
_RETRYABLE_READ = {408, 429, 500, 502, 503, 504}
_RETRYABLE_WRITE = {429, 503}
T = TypeVar("T")


OpenAdrVersion = Literal["3.0.1", "3.1"]
_TOKEN_MARGIN_S = 30.0  # refresh an OAuth2 token this long before it expires


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str
    token_url: str | None = None  # default: ``{base_url}/auth/token``
    scope: str | None = None


class VtnError(Exception):
    """Any failure talking to a VTN."""


class VtnRejectedError(VtnError):
    """The VTN refused the request (4xx): fix the request, do not retry."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"VTN answered HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class VtnUnavailableError(VtnError):
    """Transport error, timeout, 5xx or open breaker, after the allowed retries: try later."""


class _HttpStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = response.status_code
        self.retry_after = response.headers.get("retry-after")
        self.detail = _problem_detail(response)


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]


def _transient(method: str) -> Callable[[BaseException], bool]:
    def is_transient(exc: BaseException) -> bool:
        if isinstance(exc, _HttpStatusError):
            return exc.status in (_RETRYABLE_READ if method in ("GET", "PUT") else _RETRYABLE_WRITE)
        if method in ("GET", "PUT"):  # PUT replaces: repeating it creates nothing
            return isinstance(exc, httpx.TransportError | TimeoutError)
        # A write is retried only if it cannot have reached the VTN.
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)

    return is_transient


def _raise_for_status(response: httpx.Response, detail_prefix: str = "") -> None:
    """A refusal (see ``_is_refusal``) is :class:`VtnRejectedError`; any other status >= 400 is retried by status."""
    if response.status_code < 400:
        return
    error = _HttpStatusError(response)
    if _is_refusal(error):
        raise VtnRejectedError(error.status, f"{detail_prefix}{error.detail}")
    raise error


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, _HttpStatusError) and exc.retry_after:
        try:
            return max(0.0, float(exc.retry_after))
        except ValueError:
            return None
    return None


def _is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, _HttpStatusError) and 400 <= exc.status < 500 and exc.status not in (408, 429)


class VtnClient:
    """One VTN (utility). Create once per process and ``await close()`` on stop."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout_s: float = 5.0,
        *,
        client_name: str = "energy-platform",
        retry: RetryPolicy | None = None,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0,
        version: OpenAdrVersion = "3.1",
        oauth: OAuthClient | None = None,
    ) -> None:
        if token is None and oauth is None:
            raise ValueError("a VTN needs a bearer token or OAuth2 client credentials")
        self.base_url = base_url.rstrip("/")
        self.client_name = client_name
        self.version: OpenAdrVersion = version
        self._oauth = oauth
        self._access: tuple[str, float] | None = (token, float("inf")) if token is not None else None
        self._token_lock = asyncio.Lock()
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)
        self._name = f"vtn:{urlsplit(self.base_url).netloc}"
        self.breaker = make_breaker(self._name, breaker_fail_max, breaker_reset_s, exclude=[VtnRejectedError])
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s)),
            headers={"Accept": "application/json"},
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    async def _bearer(self, *, refresh: bool = False) -> str:
        """The access token: the configured bearer, or an OAuth2 token fetched and cached until expiry."""
        if self._oauth is None:
            assert self._access is not None
            return self._access[0]
        async with self._token_lock:
            if not refresh and self._access is not None and self._access[1] > time.monotonic():
                return self._access[0]
            self._access = await self._fetch_token(self._oauth)
            return self._access[0]

    async def _fetch_token(self, oauth: OAuthClient) -> tuple[str, float]:
        url = oauth.token_url or f"{self.base_url}/auth/token"
        form = {"grant_type": "client_credentials", "client_id": oauth.client_id, "client_secret": oauth.client_secret}
        if oauth.scope:
            form["scope"] = oauth.scope

        async def attempt() -> tuple[str, float]:
            response = await self._http.post(url, data=form)
            _raise_for_status(response, "token endpoint: ")
            body = response.json()
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise VtnError(f"token endpoint answered without an access_token: {str(body)[:200]}")
            expires_in = body.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 3600.0
            return token, time.monotonic() + max(1.0, lifetime - _TOKEN_MARGIN_S)

        return await self._guarded("token endpoint", attempt, "GET")  # asking for a token twice creates nothing

    async def _guarded(self, what: str, attempt: Callable[[], Awaitable[T]], method: str) -> T:
        """One call through the retry policy (transience as for ``method``) and the VTN's breaker;
        a failure that is not a refusal becomes :class:`VtnUnavailableError` naming ``what``."""
        try:
            return await guarded_call(
                self._name,
                attempt,
                timeout_s=self._timeout_s,
                breaker=self.breaker,
                retry=self._retry,
                is_transient=_transient(method),
                retry_after=_retry_after,
            )
        except _HttpStatusError as exc:
            raise VtnUnavailableError(f"{what}: HTTP {exc.status}: {exc.detail}") from exc
        except CircuitOpenError as exc:
            raise VtnUnavailableError(f"{what}: {exc}") from exc
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            raise VtnUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            return await self._request_once(method, path, json=json, params=params, refresh=False)
        except VtnRejectedError as exc:
            if exc.status not in (401, 403) or self._oauth is None:
                raise
            # The VTN forgot (restart) or expired our token early: one fresh token, one more try.
            # 403 too: some VTNs answer an unknown token with 403 rather than RFC 6750's 401.
            return await self._request_once(method, path, json=json, params=params, refresh=True)

    async def _request_once(
        self, method: str, path: str, *, json: Any, params: dict[str, Any] | None, refresh: bool
    ) -> Any:
        url = f"{self.base_url}{path}"
        ctx = tracing.current()
        bearer = await self._bearer(refresh=refresh)

        async def attempt() -> Any:
            headers = {"Authorization": f"Bearer {bearer}"}
            if ctx is not None:
                headers["traceparent"] = ctx.traceparent
            response = await self._http.request(method, url, json=json, params=params, headers=headers)
            _raise_for_status(response)
            return response.json() if response.content else None

        return await self._guarded(f"{method} {path}", attempt, method)

    async def _create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        created = await self._request("POST", path, json=body)
        if not isinstance(created, dict) or not isinstance(created.get("id"), str):
            raise VtnError(f"POST {path}: the VTN answered without the created object's id: {str(created)[:200]}")
        return created

    async def register_ven(self, ven_name: str) -> str:
        """Register (or find, when the name is taken) the VEN; returns its VTN id."""
        try:
            object_type = "VEN_VEN_REQUEST" if self.version == "3.1" else "VEN"
            ven = await self._create("/vens", {"objectType": object_type, "venName": ven_name})
        except VtnRejectedError as exc:
            if exc.status != 409:
                raise
            found = [
                v
                for v in await self._request("GET", "/vens", params={"venName": ven_name}) or []
                if isinstance(v, dict)
            ]
            matches = [v for v in found if v.get("venName") == ven_name]
            if not matches and len(found) == 1:
                # A 3.1 VTN scopes VEN objects to the client's credentials (one VEN per client): the one it
                # lists is ours, registered earlier under another name (seen on the reference VTN).
                log.warning("vtn_ven_name_differs", vtn=self.base_url, wanted=ven_name, found=found[0].get("venName"))
                matches = found
            if not matches:
                raise
            ven = matches[0]
        log.info("vtn_ven_registered", vtn=self.base_url, ven_name=ven_name, ven_id=ven["id"])
        return str(ven["id"])

    async def subscribe(
        self, callback_url: str, bearer_token: str, program_id: str | None = None, targets: list[str] | None = None
    ) -> str:
        """Ask the VTN to POST event creations, updates and deletions to ``callback_url``.

        3.0.1 names the operations with HTTP verbs and needs a program; 3.1 names them CREATE/UPDATE/DELETE.
        With ``targets`` (3.1) the VTN notifies the events targeted to them that it granted this VEN.
        """
        operations = ["CREATE", "UPDATE", "DELETE"] if self.version == "3.1" else ["POST", "PUT", "DELETE"]
        if self.version == "3.0.1" and program_id is None:
            raise ValueError("OpenADR 3.0.1 subscriptions name their program")
        body: dict[str, Any] = {
            "clientName": self.client_name,
            "objectOperations": [
                {
                    "objects": ["EVENT"],
                    "operations": operations,
                    "callbackUrl": callback_url,
                    "bearerToken": bearer_token,
                }
            ],
        }
        if self.version == "3.0.1":
            body["objectType"] = "SUBSCRIPTION"
        if program_id is not None:
            body["programID"] = program_id
        if targets:
            body["targets"] = list(targets)
        sub = await self._create("/subscriptions", body)
        log.info("vtn_subscribed", vtn=self.base_url, subscription_id=sub["id"], program_id=program_id)
        return str(sub["id"])

    async def unsubscribe(self, subscription_id: str) -> None:
        await self._request("DELETE", f"/subscriptions/{subscription_id}")

    async def granted_targets(self, ven_id: str) -> list[str]:
        """3.1: the targets the utility granted this VEN, on its ven object and its resources (a VEN
        sees targeted programs and events only by naming them, decision 0410 rule 17)."""
        ven = await self._request("GET", f"/vens/{ven_id}")
        found = [t for t in (ven or {}).get("targets") or [] if isinstance(t, str)]
        for page in range(_MAX_PAGES):
            params = {"venID": ven_id, "skip": page * _PAGE, "limit": _PAGE}
            try:
                batch = await self._request("GET", "/resources", params=params)
            except VtnRejectedError as exc:
                if exc.status not in (403, 404, 405):
                    raise
                break  # a VTN without a resources collection (or not for VENs): the ven object's targets only
            if not isinstance(batch, list):
                raise VtnUnavailableError(f"GET /resources: expected a list, got {type(batch).__name__}")
            found.extend(t for r in batch if isinstance(r, dict) for t in r.get("targets") or [] if isinstance(t, str))
            if len(batch) < _PAGE:
                break
        return sorted(set(found))

    async def poll_events(
        self, program_id: str | None = None, targets: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Every event the VTN lists (all pages): the fallback when notifications are lost. With
        ``targets``, the events targeted to them (a 3.1 VTN shows a VEN targeted events only so)."""
        events: list[dict[str, Any]] = []
        for page in range(_MAX_PAGES):
            params: dict[str, Any] = {"skip": page * _PAGE, "limit": _PAGE}
            if program_id is not None:
                params["programID"] = program_id
            if targets:
                params["targets"] = list(targets)
            batch = await self._request("GET", "/events", params=params)
            if not isinstance(batch, list):
                raise VtnUnavailableError(f"GET /events: expected a list, got {type(batch).__name__}")
            events.extend(batch)
            if len(batch) < _PAGE:
                break
        return events

    async def programs(self) -> list[dict[str, Any]]:
        """The programs this VEN may see (first pages; programs are few)."""
        found: list[dict[str, Any]] = []
        for page in range(_MAX_PAGES):
            batch = await self._request("GET", "/programs", params={"skip": page * _PAGE, "limit": _PAGE})
            if not isinstance(batch, list):
                raise VtnUnavailableError(f"GET /programs: expected a list, got {type(batch).__name__}")
            found.extend(batch)
            if len(batch) < _PAGE:
                break
        return found

    async def subscriptions(self) -> list[dict[str, Any]]:
        found = await self._request("GET", "/subscriptions", params={"clientName": self.client_name})
        return [s for s in found or [] if isinstance(s, dict)]

    async def post_report(self, report: dict[str, Any]) -> str:
        body = {"objectType": "REPORT", **report} if self.version == "3.0.1" else dict(report)
        created = await self._create("/reports", body)
        log.info("vtn_report_posted", vtn=self.base_url, report_id=created["id"], event_id=report.get("eventID"))
        return str(created["id"])

    async def find_reports(self, event_id: str, client_name: str | None = None) -> list[dict[str, Any]]:
        params = {"eventID": event_id, "clientName": client_name or self.client_name}
        found = await self._request("GET", "/reports", params=params)
        return [r for r in found or [] if isinstance(r, dict)]

    async def put_report(self, report_id: str, report: dict[str, Any]) -> str:
        body = {"objectType": "REPORT", **report} if self.version == "3.0.1" else dict(report)
        updated = await self._request("PUT", f"/reports/{report_id}", json=body)
        log.info("vtn_report_updated", vtn=self.base_url, report_id=report_id, event_id=report.get("eventID"))
        return str(updated.get("id", report_id)) if isinstance(updated, dict) else report_id

    async def close(self) -> None:
        await self._http.aclose()
