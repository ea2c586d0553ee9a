"""The platform's VEN side of a utility's OpenADR 3 VTN: :class:`VtnClient` (REST over httpx).

- every call bounded by ``timeout_s``; one circuit breaker per VTN (``vtn:<host:port>``);
- retries with full-jitter backoff for transient failures only: for reads (GET), connection
  errors, timeouts, 408/429/5xx; for writes (POST), only when the request cannot have been
  processed (connection refused, connect timeout, 429, 503), since OpenADR has no idempotency
  key and a retried POST after a lost answer would create the object twice;
- ``Retry-After`` (seconds) is honoured, capped by the backoff maximum;
- 4xx answers raise :class:`VtnRejectedError` (never retried, does not trip the breaker); what is
  still failing after the retries, or an open breaker, raises :class:`VtnUnavailableError`;
- the current W3C ``traceparent`` travels as an HTTP header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
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
            return exc.status in (_RETRYABLE_READ if method == "GET" else _RETRYABLE_WRITE)
        if method == "GET":
            return isinstance(exc, httpx.TransportError | TimeoutError)
        # A write is retried only if it cannot have reached the VTN.
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)

    return is_transient


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
        token: str,
        timeout_s: float = 5.0,
        *,
        client_name: str = "energy-platform",
        retry: RetryPolicy | None = None,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_name = client_name
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=2.0)
        self._name = f"vtn:{urlsplit(self.base_url).netloc}"
        self.breaker = make_breaker(self._name, breaker_fail_max, breaker_reset_s, exclude=[VtnRejectedError])
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s)),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    async def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        ctx = tracing.current()

        async def attempt() -> Any:
            headers = {"traceparent": ctx.traceparent} if ctx is not None else {}
            response = await self._http.request(method, url, json=json, params=params, headers=headers)
            if response.status_code >= 400:
                error = _HttpStatusError(response)
                if _is_refusal(error):
                    raise VtnRejectedError(error.status, error.detail)
                raise error
            return response.json() if response.content else None

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
            raise VtnUnavailableError(f"{method} {path}: HTTP {exc.status}: {exc.detail}") from exc
        except CircuitOpenError as exc:
            raise VtnUnavailableError(f"{method} {path}: {exc}") from exc
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            raise VtnUnavailableError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        created = await self._request("POST", path, json=body)
        if not isinstance(created, dict) or not isinstance(created.get("id"), str):
            raise VtnError(f"POST {path}: the VTN answered without the created object's id: {str(created)[:200]}")
        return created

    async def register_ven(self, ven_name: str) -> str:
        """Register (or find, when the name is taken) the VEN; returns its VTN id."""
        try:
            ven = await self._create("/vens", {"objectType": "VEN", "venName": ven_name})
        except VtnRejectedError as exc:
            if exc.status != 409:
                raise
            found = await self._request("GET", "/vens", params={"venName": ven_name})
            matches = [v for v in found or [] if v.get("venName") == ven_name]
            if not matches:
                raise
            ven = matches[0]
        log.info("vtn_ven_registered", vtn=self.base_url, ven_name=ven_name, ven_id=ven["id"])
        return str(ven["id"])

    async def subscribe(self, callback_url: str, bearer_token: str, program_id: str | None = None) -> str:
        """Ask the VTN to POST event creations, updates and deletions to ``callback_url``."""
        body: dict[str, Any] = {
            "objectType": "SUBSCRIPTION",
            "clientName": self.client_name,
            "objectOperations": [
                {
                    "objects": ["EVENT"],
                    "operations": ["POST", "PUT", "DELETE"],
                    "callbackUrl": callback_url,
                    "bearerToken": bearer_token,
                }
            ],
        }
        if program_id is not None:
            body["programID"] = program_id
        sub = await self._create("/subscriptions", body)
        log.info("vtn_subscribed", vtn=self.base_url, subscription_id=sub["id"], program_id=program_id)
        return str(sub["id"])

    async def poll_events(self, program_id: str | None = None) -> list[dict[str, Any]]:
        """Every event the VTN lists (all pages): the fallback when notifications are lost."""
        events: list[dict[str, Any]] = []
        for page in range(_MAX_PAGES):
            params: dict[str, Any] = {"skip": page * _PAGE, "limit": _PAGE}
            if program_id is not None:
                params["programID"] = program_id
            batch = await self._request("GET", "/events", params=params)
            if not isinstance(batch, list):
                raise VtnUnavailableError(f"GET /events: expected a list, got {type(batch).__name__}")
            events.extend(batch)
            if len(batch) < _PAGE:
                break
        return events

    async def post_report(self, report: dict[str, Any]) -> str:
        body = {"objectType": "REPORT", **report}
        created = await self._create("/reports", body)
        log.info("vtn_report_posted", vtn=self.base_url, report_id=created["id"], event_id=report.get("eventID"))
        return str(created["id"])

    async def close(self) -> None:
        await self._http.aclose()
