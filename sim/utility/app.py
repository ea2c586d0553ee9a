"""The simulated utility's OpenADR 3 VTN as a FastAPI app under ``/openadr3/3.1.0``.

Endpoints: ``programs``, ``events`` (GET/POST/PUT/DELETE), ``vens`` (POST registration, GET, PUT),
``resources`` (POST, GET), ``subscriptions`` (POST, GET, DELETE), ``reports`` (POST, GET, PUT). In
3.1 mode a VEN's token sees only its own objects and the programs/events targeted to it (object
privacy, decision 0410 rules 17-19). Every call needs
``Authorization: Bearer <token>`` with one of the accepted tokens. Errors are RFC 7807 problems
(the OpenADR ``problem`` schema). Creating, updating or deleting an event notifies every matching
subscription (:mod:`sim.utility.notifier`).

Admin (no auth, for tests): ``POST /_admin/faults`` (notification faults), ``GET /_admin/faults``,
``GET /_admin/deliveries``, ``POST /_admin/settings {verify_callbacks}``, ``POST /_admin/reset``,
``POST /_admin/restart`` (forget every object and restart the id counters, as a process restart
of an in-memory VTN does).

Versions (:mod:`sim.utility.spec`): ``lenient`` accepts either version's spelling (historical
behaviour); ``3.0.1`` and ``3.1`` validate every body against that version's schemas, notify
subscribers while the request waits (``POST /events`` answers 500 when a callback cannot be
reached, the event being stored all the same), and serve the OAuth2 client-credentials token
endpoint (``POST /auth/token``, ``GET /auth/server``). Rules and their spec sections:
``docs/decisions/0410-strict-vtn-simulator.md``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, TypeVar

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from energy.observability.health import Health
from energy.observability.http import ops_router
from sim.utility.layouts import check_report_layout
from sim.utility.model import (
    BUSINESS_LOGIC,
    ApiProblem,
    Change,
    Client,
    EventIn,
    NotifyFaults,
    ProgramIn,
    ReportIn,
    ResourceIn,
    SubscriptionIn,
    VenIn,
    VtnStore,
)
from sim.utility.notifier import Notifier
from sim.utility.spec import BASE_PATHS, BODIES, ClientCredentialRequest, Version

BASE_PATH = "/openadr3/3.1.0"
# Who may write which object (both OpenAPI documents, securitySchemes oAuth2ClientCredentials scopes,
# the scope each write path requires): decision 0410, rules 20-22. Strict versions only.
WRITE_SCOPES: dict[str, tuple[str, frozenset[str]]] = {
    "PROGRAM": ("write_programs", frozenset({"BL"})),
    "EVENT": ("write_events", frozenset({"BL"})),
    "REPORT": ("write_reports", frozenset({"VEN"})),
    "SUBSCRIPTION": ("write_subscriptions", frozenset({"BL", "VEN"})),
    "VEN": ("write_vens", frozenset({"BL", "VEN"})),
    "RESOURCE": ("write_vens", frozenset({"BL", "VEN"})),
}
MAX_BODY_BYTES = 1_000_000
M = TypeVar("M", bound=BaseModel)


@dataclass
class VtnState:
    store: VtnStore
    notifier: Notifier
    tokens: frozenset[str]
    verify_callbacks: bool = False
    seeded_programs: dict[str, str] = field(default_factory=dict)  # id -> name, kept across resets
    version: Version = "lenient"
    oauth_clients: dict[str, str] = field(default_factory=dict)  # client_id -> client_secret
    token_ttl_s: float = 3600.0
    issued: dict[str, float] = field(default_factory=dict)  # access token -> expiry (monotonic)
    clients: dict[str, Client] = field(default_factory=dict)  # static token -> who (default: business logic)
    issued_to: dict[str, Client] = field(default_factory=dict)  # access token -> the OAuth2 client (a VEN)

    @property
    def strict(self) -> bool:
        return self.version != "lenient"

    @property
    def base_path(self) -> str:
        return BASE_PATHS[self.version]


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiProblem(413, "Payload Too Large", f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiProblem(400, "Bad Request", f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiProblem(400, "Bad Request", "body must be a JSON object")
    return data


def _reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])


async def _versioned_body(request: Request, state: VtnState, object_type: str, lenient: type[M]) -> BaseModel:
    """The body validated against the version's schema (one of several for a oneOf)."""
    if not state.strict:
        return await _body(request, lenient)
    data = await _json_object(request)
    failures = []
    for model in BODIES[state.version][object_type]:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            failures.append(f"{model.__name__}: {_reasons(exc)}")
    detail = failures[0] if len(failures) == 1 else "valid under none of the schemas: " + " | ".join(failures)
    raise ApiProblem(400, "Bad Request", f"OpenADR {state.version}: {detail}"[:2000])


async def _body(request: Request, model: type[M]) -> M:
    data = await _json_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiProblem(400, "Bad Request", _reasons(exc)) from exc


async def _verify_callback(url: str) -> None:
    """Optional echo check: ``GET {callbackUrl}/echo?echo=X`` must answer X before subscribing."""
    challenge = secrets.token_hex(8)
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            resp = await client.get(f"{url.rstrip('/')}/echo", params={"echo": challenge})
    except httpx.HTTPError as exc:
        raise ApiProblem(400, "Bad Request", f"callback verification failed: {type(exc).__name__}") from exc
    answer = resp.text.strip()
    if answer.startswith('"'):
        with suppress(ValueError):
            answer = str(json.loads(answer))
    if resp.status_code != 200 or answer != challenge:
        raise ApiProblem(400, "Bad Request", f"callback verification failed: HTTP {resp.status_code}, wrong echo")


def build_app(state: VtnState) -> FastAPI:
    health = Health("utility-sim")
    health.add_check("notifier_queue", _queue_check(state))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.notifier.start()
        try:
            yield
        finally:
            await state.notifier.stop()

    app = FastAPI(title="Simulated utility VTN (OpenADR 3)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(ops_router(health))

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return _problem(exc.status, exc.title, exc.detail)

    app.include_router(_auth_router(state))
    app.include_router(_api_router(state))
    app.include_router(_admin_router(state))
    return app


def _queue_check(state: VtnState) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        if state.notifier.queue_depth() >= 1000:
            raise RuntimeError("notification queue full")
        return True

    return check


def _api_router(state: VtnState) -> APIRouter:
    async def authorized(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiProblem(401, "Unauthorized", "send Authorization: Bearer <token>")
        for known in state.tokens:
            if secrets.compare_digest(token, known):
                request.state.client = state.clients.get(known, BUSINESS_LOGIC)
                return
        expiry = state.issued.get(token)
        if expiry is not None:
            if expiry > time.monotonic():
                request.state.client = state.issued_to.get(token, BUSINESS_LOGIC)
                return
            raise ApiProblem(401, "Unauthorized", "access token expired: ask /auth/token for a new one")
        raise ApiProblem(403, "Forbidden", "unknown bearer token")

    router = APIRouter(prefix=state.base_path, dependencies=[Depends(authorized)])
    store, notifier = state.store, state.notifier

    def who(request: Request) -> Client:
        return getattr(request.state, "client", BUSINESS_LOGIC)

    def readable(request: Request, objs: list[dict[str, Any]], targets: list[str] | None) -> list[dict[str, Any]]:
        client = who(request)
        return [seen for o in objs if (seen := store.readable(o, client, targets)) is not None]

    def one_readable(request: Request, obj: dict[str, Any], targets: list[str] | None, kind: str) -> dict[str, Any]:
        seen = store.readable(obj, who(request), targets)
        if seen is None:  # not targeted to this VEN: as if it did not exist
            raise ApiProblem(404, "Not Found", f"no {kind} with id {obj.get('id')!r}")
        return seen

    def owned(request: Request, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        client = who(request)
        return [o for o in objs if store.owns(o, client)]

    def own(request: Request, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        if not store.owns(obj, who(request)):
            raise ApiProblem(404, "Not Found", f"no {kind} with id {obj.get('id')!r}")
        return obj

    def may_write(request: Request, object_type: str) -> None:
        """Strict versions: the write scope of the path, held by business logic, VENs or both (rules 20-22)."""
        if not state.strict:
            return
        scope, roles = WRITE_SCOPES[object_type]
        client = who(request)
        if client.role not in roles:
            holders = "business logic" if roles == {"BL"} else "VENs"
            raise ApiProblem(
                403,
                "Forbidden",
                f"OpenADR {state.version}: writing {object_type.lower()} objects needs scope {scope}, "
                f"which only {holders} hold; this token is a {client.role} ({client.client_id})",
            )

    def bl_representation_by_bl_only(request: Request, body: BaseModel) -> None:
        """3.1: BL_VEN_REQUEST / BL_RESOURCE_REQUEST are business logic's representations (they set a
        clientID): a VEN sends the VEN_* ones (rule 23)."""
        kind = str(getattr(body, "objectType", "") or "")
        if state.version == "3.1" and who(request).role == "VEN" and kind.startswith("BL_"):
            raise ApiProblem(
                403,
                "Forbidden",
                f"OpenADR 3.1: {kind} is business logic's representation; a VEN sends {kind.replace('BL_', 'VEN_', 1)}",
            )

    def page(items: list[dict[str, Any]], skip: int, limit: int) -> list[dict[str, Any]]:
        if skip < 0 or not 0 <= limit <= 50:
            raise ApiProblem(400, "Bad Request", "skip must be >= 0 and limit in [0, 50]")
        return items[skip : skip + limit]

    def publish(change: Change) -> dict[str, Any]:
        notifier.notify(change, store.subscribers(change))
        return change.obj

    async def publish_event(change: Change) -> dict[str, Any]:
        """Strict versions notify while the request waits: an unreachable callback is a 500,
        though the change is kept (the reference VTN behaves so)."""
        if not state.strict:
            return publish(change)
        deliveries = await notifier.deliver_now(change, store.subscribers(change))
        failed = [d for d in deliveries if d.outcome == "failed"]
        if failed:
            raise ApiProblem(
                500,
                "Internal Server Error",
                f"{change.object_type.lower()} {change.obj.get('id')} stored, but notifying "
                f"{failed[0].callback_url} failed: {failed[0].error}",
            )
        return change.obj

    @router.get("/programs")
    async def search_programs(
        request: Request, targets: Annotated[list[str] | None, Query()] = None, skip: int = 0, limit: int = 50
    ) -> list[dict[str, Any]]:
        return page(readable(request, store.matching("PROGRAM"), targets), skip, limit)

    @router.post("/programs", status_code=201)
    async def create_program(request: Request) -> dict[str, Any]:
        may_write(request, "PROGRAM")
        return publish(store.create_program(await _versioned_body(request, state, "PROGRAM", ProgramIn)))

    @router.get("/programs/{program_id}")
    async def get_program(
        program_id: str, request: Request, targets: Annotated[list[str] | None, Query()] = None
    ) -> dict[str, Any]:
        return one_readable(request, store.get("PROGRAM", program_id), targets, "program")

    @router.delete("/programs/{program_id}")
    async def delete_program(program_id: str, request: Request) -> dict[str, Any]:
        may_write(request, "PROGRAM")
        return publish(store.delete("PROGRAM", program_id))

    @router.get("/events")
    async def search_events(
        request: Request,
        programID: str | None = None,
        targets: Annotated[list[str] | None, Query()] = None,
        skip: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        return page(readable(request, store.matching("EVENT", programID=programID), targets), skip, limit)

    @router.post("/events", status_code=201)
    async def create_event(request: Request) -> dict[str, Any]:
        may_write(request, "EVENT")
        return await publish_event(store.create_event(await _versioned_body(request, state, "EVENT", EventIn)))

    @router.get("/events/{event_id}")
    async def get_event(
        event_id: str, request: Request, targets: Annotated[list[str] | None, Query()] = None
    ) -> dict[str, Any]:
        return one_readable(request, store.get("EVENT", event_id), targets, "event")

    @router.put("/events/{event_id}")
    async def update_event(event_id: str, request: Request) -> dict[str, Any]:
        may_write(request, "EVENT")
        body = await _versioned_body(request, state, "EVENT", EventIn)
        return await publish_event(store.update_event(event_id, body))

    @router.delete("/events/{event_id}")
    async def delete_event(event_id: str, request: Request) -> dict[str, Any]:
        may_write(request, "EVENT")
        return await publish_event(store.delete("EVENT", event_id))

    @router.get("/vens")
    async def search_vens(
        request: Request, venName: str | None = None, skip: int = 0, limit: int = 50
    ) -> list[dict[str, Any]]:
        return page(owned(request, store.matching("VEN", venName=venName)), skip, limit)

    @router.post("/vens", status_code=201)
    async def create_ven(request: Request) -> dict[str, Any]:
        may_write(request, "VEN")
        body = await _versioned_body(request, state, "VEN", VenIn)
        bl_representation_by_bl_only(request, body)
        return publish(store.create_ven(body, who(request)))

    @router.get("/vens/{ven_id}")
    async def get_ven(ven_id: str, request: Request) -> dict[str, Any]:
        ven = store.get("VEN", ven_id)
        if not store.owns(ven, who(request)):
            raise ApiProblem(404, "Not Found", f"no ven with id {ven_id!r}")
        return ven

    @router.put("/vens/{ven_id}")
    async def update_ven(ven_id: str, request: Request) -> dict[str, Any]:
        may_write(request, "VEN")
        body = await _versioned_body(request, state, "VEN", VenIn)
        bl_representation_by_bl_only(request, body)
        return publish(store.update_ven(ven_id, body, who(request)))

    @router.get("/resources")
    async def search_resources(
        request: Request,
        venID: str | None = None,
        resourceName: str | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        found = store.matching("RESOURCE", venID=venID, resourceName=resourceName)
        return page(owned(request, found), skip, limit)

    @router.post("/resources", status_code=201)
    async def create_resource(request: Request) -> dict[str, Any]:
        may_write(request, "RESOURCE")
        body = await _versioned_body(request, state, "RESOURCE", ResourceIn)
        bl_representation_by_bl_only(request, body)
        return publish(store.create_resource(body, who(request)))

    @router.get("/subscriptions")
    async def search_subscriptions(
        request: Request,
        programID: str | None = None,
        clientName: str | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        found = store.matching("SUBSCRIPTION", programID=programID, clientName=clientName)
        return page(owned(request, found), skip, limit)

    @router.post("/subscriptions", status_code=201)
    async def create_subscription(request: Request) -> dict[str, Any]:
        may_write(request, "SUBSCRIPTION")
        body = await _versioned_body(request, state, "SUBSCRIPTION", SubscriptionIn)
        if state.verify_callbacks:
            for op in getattr(body, "objectOperations", []):
                await _verify_callback(op.callbackUrl)
        return publish(store.create_subscription(body, who(request)))

    @router.get("/subscriptions/{subscription_id}")
    async def get_subscription(subscription_id: str, request: Request) -> dict[str, Any]:
        return own(request, store.get("SUBSCRIPTION", subscription_id), "subscription")

    @router.delete("/subscriptions/{subscription_id}")
    async def delete_subscription(subscription_id: str, request: Request) -> dict[str, Any]:
        may_write(request, "SUBSCRIPTION")
        own(request, store.get("SUBSCRIPTION", subscription_id), "subscription")
        return publish(store.delete("SUBSCRIPTION", subscription_id))

    @router.get("/reports")
    async def search_reports(
        request: Request,
        programID: str | None = None,
        eventID: str | None = None,
        clientName: str | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        found = store.matching("REPORT", programID=programID, eventID=eventID, clientName=clientName)
        return page(owned(request, found), skip, limit)

    def follows_layout(body: BaseModel) -> None:
        """3.1: report intervals laid out as the event's reportDescriptors ask (rule 25)."""
        if state.version == "3.1":
            report = body.model_dump(mode="json")
            check_report_layout(report, store.events.get(str(report.get("eventID"))))

    @router.post("/reports", status_code=201)
    async def create_report(request: Request) -> dict[str, Any]:
        may_write(request, "REPORT")
        body = await _versioned_body(request, state, "REPORT", ReportIn)
        follows_layout(body)
        return publish(store.create_report(body, who(request)))

    @router.get("/reports/{report_id}")
    async def get_report(report_id: str, request: Request) -> dict[str, Any]:
        return own(request, store.get("REPORT", report_id), "report")

    @router.put("/reports/{report_id}")
    async def update_report(report_id: str, request: Request) -> dict[str, Any]:
        may_write(request, "REPORT")
        body = await _versioned_body(request, state, "REPORT", ReportIn)
        follows_layout(body)
        return publish(store.update_report(report_id, body, who(request)))

    return router


def _auth_router(state: VtnState) -> APIRouter:
    """OAuth2 client credentials (RFC 6749 section 4.4), as both versions define ``/auth/token``."""
    router = APIRouter(prefix=state.base_path + "/auth")

    def auth_error(status: int, error: str, description: str) -> JSONResponse:
        return JSONResponse({"error": error, "error_description": description}, status_code=status)

    @router.get("/server")
    async def server(request: Request) -> dict[str, str]:
        return {"tokenURL": str(request.url_for("oauth_token"))}

    @router.post("/token", name="oauth_token")
    async def token(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await request.body()
        if len(raw) > 16_384:
            return auth_error(400, "invalid_request", "body too large")
        if content_type != "application/x-www-form-urlencoded":
            return auth_error(400, "invalid_request", "send application/x-www-form-urlencoded (RFC 6749 4.4.2)")
        from urllib.parse import parse_qs

        form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        if form.get("grant_type") not in (None, "client_credentials"):
            return auth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        try:
            creds = ClientCredentialRequest.model_validate(form)
        except ValidationError as exc:
            return auth_error(400, "invalid_request", _reasons(exc))
        secret = state.oauth_clients.get(creds.client_id)
        if secret is None or not secrets.compare_digest(secret, creds.client_secret):
            return auth_error(401, "invalid_client", "unknown client or wrong secret")
        access = secrets.token_urlsafe(24)
        state.issued[access] = time.monotonic() + state.token_ttl_s
        state.issued_to[access] = Client("VEN", creds.client_id)  # OAuth2 clients are VENs here
        return JSONResponse(
            {"access_token": access, "token_type": "Bearer", "expires_in": int(state.token_ttl_s)},
            headers={"Cache-Control": "no-store"},
        )

    return router


def _admin_router(state: VtnState) -> APIRouter:
    router = APIRouter(prefix="/_admin")

    @router.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return asdict(state.notifier.faults)

    @router.post("/faults")
    async def set_faults(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            if "operation_style" not in body:  # the version's own spelling unless a test asks otherwise
                body = {**body, "operation_style": state.notifier.default_faults.operation_style}
            state.notifier.faults = NotifyFaults.parse(body)
        except ValueError as exc:
            return _problem(400, "Bad Request", str(exc)[:1000])
        return JSONResponse(asdict(state.notifier.faults))

    @router.post("/settings")
    async def set_settings(request: Request) -> JSONResponse:
        body = json.loads(await request.body() or b"{}")
        verify = body.get("verify_callbacks") if isinstance(body, dict) else None
        if not isinstance(verify, bool):
            return _problem(400, "Bad Request", "verify_callbacks must be true or false")
        state.verify_callbacks = verify
        return JSONResponse({"verify_callbacks": verify})

    @router.get("/deliveries")
    async def deliveries(subscription_id: str | None = None) -> list[dict[str, Any]]:
        return [
            asdict(d)
            for d in state.notifier.deliveries
            if subscription_id is None or d.subscription_id == subscription_id
        ]

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        store = state.store
        for collection in (store.events, store.vens, store.subscriptions, store.reports, store.programs):
            collection.clear()
        store.resources.clear()
        store.subscriber_clients.clear()
        for program_id, name in state.seeded_programs.items():
            store.seed_program(program_id, name)
        state.notifier.reset()
        return {"reset": True}

    @router.post("/restart")
    async def restart() -> dict[str, Any]:
        state.store.restart()
        state.issued.clear()
        state.issued_to.clear()
        for program_id, name in state.seeded_programs.items():
            state.store.seed_program(program_id, name)
        state.notifier.reset()
        return {"restarted": True}

    @router.post("/settings/token_ttl_s")
    async def set_token_ttl(request: Request) -> JSONResponse:
        body = json.loads(await request.body() or b"{}")
        ttl = body.get("token_ttl_s") if isinstance(body, dict) else None
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 86_400:
            return _problem(400, "Bad Request", "token_ttl_s must be a number in (0, 86400]")
        state.token_ttl_s = float(ttl)
        return JSONResponse({"token_ttl_s": state.token_ttl_s})

    return router
