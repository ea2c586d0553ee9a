"""Authentication (bearer JWT for users, ``X-Api-Key`` for API keys) and authorisation.

Every principal (user or API key) belongs to one tenant and sees exactly the facilities
listed for it in ``principal_facilities`` that also belong to its tenant. Route handlers
depend on :func:`require_principal` or :func:`require_role` and call
:func:`ensure_facility_access` for every facility id they touch: a facility outside the
caller's scope answers 404, the same as one that does not exist, so ids of other tenants
cannot be probed.

Tokens are JWT HS256 signed with the current key ``settings.api.token_secret``, carry its id
(``kid``) and the environment's issuer, and expire after ``settings.api.token_ttl_s``; during a
rotation window the previous key still verifies the tokens it signed (decision 0009). Role and
scope are re-read from PostgreSQL (cached for ``principal_cache_ttl_s``), so deactivating a user
or changing a scope takes effect fast.
Passwords are hashed with scrypt (standard library).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api import examples as ex
from api.errors import COMMON_RESPONSES, ApiError, not_found
from api.examples import ok, request_body
from api.passwords import hash_password, verify_password
from api.ratelimit import RateLimiter
from energy.fleet import token_hash
from energy.settings import Settings
from energy.singleflight import SingleFlight
from schemas.api import Me, Role, TokenRequest, TokenResponse

PrincipalKind = Literal["user", "api_key"]

_JWT_ALG = "HS256"
_JWT_AUDIENCE = "energy-api"


@dataclass(frozen=True)
class Principal:
    principal_id: uuid.UUID
    tenant_id: str
    role: str
    facility_ids: frozenset[str]
    kind: PrincipalKind = "user"


# --- tokens (pure) ----------------------------------------------------------


_DUMMY_HASH = hash_password("not-a-real-password", salt=b"0123456789abcdef")


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: str


@dataclass(frozen=True)
class TokenKeys:
    """The keys that sign and verify bearer tokens: the current one signs; the previous one,
    during a rotation window, only verifies until ``previous_until``."""

    current: SigningKey
    issuer: str
    previous: SigningKey | None = None
    previous_until: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenKeys:
        api = settings.api
        previous = None
        if api.token_previous_secret is not None and api.token_previous_key_id is not None:
            previous = SigningKey(api.token_previous_key_id, api.token_previous_secret.get_secret_value())
        return cls(
            current=SigningKey(api.token_key_id, api.token_secret.get_secret_value()),
            issuer=token_issuer(settings.environment),
            previous=previous,
            previous_until=api.token_previous_until,
        )

    def verification_secret(self, key_id: object, now: datetime) -> str | None:
        if key_id == self.current.key_id:
            return self.current.secret
        if (
            self.previous is not None
            and key_id == self.previous.key_id
            and self.previous_until is not None
            and now < self.previous_until
        ):
            return self.previous.secret
        return None


def token_issuer(environment: str) -> str:
    """One issuer per environment: a staging token is refused in production even if keys leaked across."""
    return f"energy-platform/{environment}"


def issue_token(
    user_id: uuid.UUID, tenant_id: str, role: str, keys: TokenKeys, ttl_s: float, now: datetime
) -> tuple[str, datetime]:
    expires_at = now + timedelta(seconds=ttl_s)
    claims = {
        "sub": str(user_id),
        "tid": tenant_id,
        "role": role,
        "aud": _JWT_AUDIENCE,
        "iss": keys.issuer,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": secrets.token_hex(8),
    }
    token = jwt.encode(claims, keys.current.secret, algorithm=_JWT_ALG, headers={"kid": keys.current.key_id})
    return token, expires_at


class VerifiedTokens:
    """A bounded in-process memo of bearer tokens this process has verified (signature, ``kid``, audience,
    issuer, required claims): token -> (claims, valid_until). A hit is the exact token string, so nothing
    unverified can match; it is honoured only while ``now < valid_until``, where ``valid_until`` is the
    token's ``exp`` (and, for a token signed by the previous key, no later than that key's
    ``previous_until``). Tokens have no other revocation: deactivating a user or changing a scope goes
    through the principal lookup, which is not memoised here (decision 0970). Entries belong to the keys
    that verified them: other keys (a rotation, a test swapping them) empty the memo first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._keys: TokenKeys | None = None

    def _bind(self, keys: TokenKeys) -> None:
        if keys is not self._keys and keys != self._keys:
            self._items.clear()
            self._keys = keys

    def get(self, token: str, now: float, keys: TokenKeys) -> dict[str, Any] | None:
        self._bind(keys)
        item = self._items.get(token)
        if item is None:
            return None
        if now >= item[1]:
            del self._items[token]
            return None
        return item[0]

    def put(self, token: str, claims: dict[str, Any], valid_until: float, keys: TokenKeys) -> None:
        self._bind(keys)
        self._items[token] = (claims, valid_until)
        self._items.move_to_end(token)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def decode_token(
    token: str, keys: TokenKeys, now: datetime | None = None, verified: VerifiedTokens | None = None
) -> dict[str, Any]:
    """Claims of a valid, unexpired token signed by a key it names (``kid``); raises 401 otherwise.
    With ``verified``, a token verified before answers from it until it expires (see :class:`VerifiedTokens`)."""
    now = now or datetime.now(UTC)
    if verified is not None and (claims := verified.get(token, now.timestamp(), keys)) is not None:
        return claims
    try:
        key_id = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        raise ApiError(401, "invalid_token", "the bearer token is invalid", headers=_CHALLENGE) from None
    secret = keys.verification_secret(key_id, now)
    if secret is None:
        raise ApiError(401, "invalid_token", "the bearer token's key is unknown or retired", headers=_CHALLENGE)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_JWT_ALG],
            audience=_JWT_AUDIENCE,
            issuer=keys.issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the bearer token has expired", headers=_CHALLENGE) from None
    except jwt.PyJWTError:
        raise ApiError(401, "invalid_token", "the bearer token is invalid", headers=_CHALLENGE) from None
    if verified is not None:
        valid_until = float(claims["exp"])
        if key_id != keys.current.key_id and keys.previous_until is not None:
            valid_until = min(valid_until, keys.previous_until.timestamp())
        verified.put(token, claims, valid_until, keys)
    return claims


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


# --- principal lookup (PostgreSQL, cached briefly) ----------------------------------------


class PrincipalCache:
    """A small bounded in-process cache of principals, so a busy dashboard does not query
    PostgreSQL for its scope on every request."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self.inflight: SingleFlight[str, Principal | None] = SingleFlight()

    def get(self, key: str) -> tuple[bool, Principal | None]:
        item = self._items.get(key)
        if item is None or self._clock() - item[0] > self.ttl_s:
            return False, None
        return True, item[1]

    def put(self, key: str, principal: Principal | None) -> None:
        self._items[key] = (self._clock(), principal)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


_SCOPE_SQL = """SELECT pf.facility_id FROM principal_facilities pf
                JOIN facilities f ON f.facility_id = pf.facility_id
                WHERE pf.principal_id = $1 AND f.tenant_id = $2"""


async def _load_user(pool: Any, user_id: uuid.UUID) -> Principal | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT tenant_id, role, active FROM users WHERE user_id = $1", user_id)
        if row is None or not row["active"]:
            return None
        facilities = await conn.fetch(_SCOPE_SQL, user_id, row["tenant_id"])
    return Principal(user_id, row["tenant_id"], row["role"], frozenset(r["facility_id"] for r in facilities), "user")


async def _load_api_key(pool: Any, key_hash: str) -> Principal | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT key_id, tenant_id, role FROM api_keys
               WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            key_hash,
        )
        if row is None:
            return None
        facilities = await conn.fetch(_SCOPE_SQL, row["key_id"], row["tenant_id"])
    return Principal(
        row["key_id"], row["tenant_id"], row["role"], frozenset(r["facility_id"] for r in facilities), "api_key"
    )


_bearer = HTTPBearer(auto_error=False, description="JWT from POST /api/auth/token")
_api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="API key of a service or script")


async def _cached(cache: PrincipalCache, key: str, load: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
    hit, principal = cache.get(key)
    if hit:
        return principal

    # Single flight: when the entry expires under load, one PostgreSQL query serves every waiting request.
    def done(f: asyncio.Future[Principal | None]) -> None:
        if not f.cancelled() and f.exception() is None:
            cache.put(key, f.result())

    flight, _ = cache.inflight.join(key, load, done)
    return await flight


async def require_principal(request: Request) -> Principal:
    """The authenticated caller, rate limited per principal; 401 without valid credentials.

    The two credential headers are read by calling the security schemes directly, not as FastAPI
    dependencies: FastAPI resolves every dependency level per request, and these two were half of a cached
    read's dependency work (decision 1060). :func:`document_credentials` puts them in the OpenAPI document.

    Failed attempts are counted per client address: a client that keeps sending bad tokens or
    guessing keys gets 429 before any lookup (``auth_failure_rate_per_s``, ``auth_failure_burst``).
    """
    failures: RateLimiter = request.app.state.auth_failure_limiter
    client = f"ip:{request.client.host if request.client else 'unknown'}"
    failures.ensure_not_exhausted(client)
    bearer = await _bearer(request)
    api_key = await _api_key(request)
    try:
        principal = await _authenticate(request, bearer, api_key)
    except ApiError as exc:
        if exc.status == 401:
            failures.charge(client)
        raise
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.check(f"p:{principal.principal_id}")
    request.state.principal = principal
    return principal


async def _authenticate(
    request: Request, bearer: HTTPAuthorizationCredentials | None, api_key: str | None
) -> Principal:
    state = request.app.state
    cache: PrincipalCache = state.principal_cache
    principal: Principal | None
    if api_key:
        if len(api_key) > 256:
            raise ApiError(401, "invalid_api_key", "the API key is invalid")
        digest = token_hash(api_key)
        principal = await _cached(cache, f"k:{digest}", lambda: _load_api_key(state.pool, digest))
        if principal is None:
            raise ApiError(401, "invalid_api_key", "the API key is invalid, expired or revoked")
    elif bearer is not None:
        claims = decode_token(bearer.credentials, state.token_keys, verified=state.verified_tokens)
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise ApiError(401, "invalid_token", "the bearer token is invalid", headers=_CHALLENGE) from None
        principal = await _cached(cache, f"u:{user_id}", lambda: _load_user(state.pool, user_id))
        if principal is None:
            raise ApiError(401, "invalid_token", "the user is unknown or inactive", headers=_CHALLENGE)
    else:
        raise ApiError(401, "unauthenticated", "send a bearer token or an X-Api-Key header", headers=_CHALLENGE)
    return principal


def _needs_principal(dependant: Dependant) -> bool:
    return any(d.call is require_principal or _needs_principal(d) for d in dependant.dependencies)


def document_credentials(app: FastAPI) -> None:
    """Declare the credentials :func:`require_principal` reads in ``app``'s OpenAPI document, as FastAPI does
    for security dependencies: both schemes under ``components.securitySchemes`` and, on every operation
    whose dependencies include :func:`require_principal`, either scheme as its security requirement."""
    generate = app.openapi
    schemes = {
        scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
        for scheme in (_bearer, _api_key)
    }
    requirement: list[dict[str, list[str]]] = [{name: []} for name in schemes]
    documented: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached by FastAPI until the routes change
        if documented and documented[0] is schema:
            return schema
        paths = schema.get("paths", {})
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            if route.path_format in paths and _needs_principal(route.dependant):
                for method in route.methods or ():
                    if (operation := paths[route.path_format].get(method.lower())) is not None:
                        operation["security"] = requirement
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)
        documented[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def require_role(*roles: str | Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only principals with one of ``roles`` (403 otherwise)."""
    allowed = frozenset(str(r.value if isinstance(r, Role) else r) for r in roles)

    async def dependency(principal: Principal = Depends(require_principal)) -> Principal:
        if principal.role not in allowed:
            raise ApiError(
                403, "forbidden", f"role {principal.role} may not do this", {"allowed_roles": sorted(allowed)}
            )
        return principal

    return dependency


def ensure_facility_access(principal: Principal, facility_id: str) -> None:
    """404 unless the facility is in the caller's scope (which never crosses tenants)."""
    if facility_id not in principal.facility_ids:
        raise not_found("facility", facility_id)


# --- routes -------------------------------------------------------------------------------

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Exchange email and password for a bearer token",
    responses={
        **{k: v for k, v in COMMON_RESPONSES.items() if k in (400, 401, 422, 429, 503)},
        **ok(ex.TOKEN_RESPONSE),
    },
    openapi_extra=request_body(ex.TOKEN_REQUEST),
)
async def create_token(body: TokenRequest, request: Request) -> TokenResponse:
    state = request.app.state
    client = request.client.host if request.client else "unknown"
    state.login_limiter.check(f"ip:{client}")
    async with state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT user_id, tenant_id, role, password_hash, active FROM users WHERE email = $1", body.email.lower()
        )
    stored = row["password_hash"] if row is not None else _DUMMY_HASH
    ok = await asyncio.to_thread(verify_password, body.password, stored)
    if row is None or not ok or not row["active"]:
        raise ApiError(401, "invalid_credentials", "email or password is wrong")
    token, expires_at = issue_token(
        row["user_id"],
        row["tenant_id"],
        row["role"],
        state.token_keys,
        state.settings.api.token_ttl_s,
        datetime.now(UTC),
    )
    return TokenResponse(access_token=token, expires_at=expires_at, role=Role(row["role"]), tenant_id=row["tenant_id"])


@router.get(
    "/me",
    response_model=Me,
    summary="Who the caller is and which facilities it sees",
    responses={**COMMON_RESPONSES, **ok(ex.ME)},
)
async def me(principal: Principal = Depends(require_principal)) -> Me:
    return Me(
        principal_id=principal.principal_id,
        kind=principal.kind,
        tenant_id=principal.tenant_id,
        role=Role(principal.role),
        facility_ids=sorted(principal.facility_ids),
    )
