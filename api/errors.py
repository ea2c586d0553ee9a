"""One error body for every 4xx/5xx: ``{"error": {"code", "message", "details"}}``.

Dependency outages (PostgreSQL, InfluxDB, Redis timeouts, open breakers) become 503 with
the reason, never 500.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.examples import ERROR_EXAMPLES
from energy.adapters.influx import InfluxUnavailableError
from energy.observability.metrics import Counter
from energy.resilience import BulkheadFullError, CircuitOpenError
from schemas.api import ErrorBody

log = structlog.get_logger("api.errors")

API_ERRORS = Counter("energy_api_errors_total", "API error responses by status and code", ["status", "code"])

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class UnavailableError(ApiError):
    def __init__(self, dependency: str, reason: str, retry_after_s: int = 5) -> None:
        super().__init__(
            503,
            "dependency_unavailable",
            f"{dependency} is unavailable: {reason}",
            {"dependency": dependency},
            {"Retry-After": str(retry_after_s)},
        )


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found", {"id": ident[:100]})


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    API_ERRORS.labels(str(status), code).inc()
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}
    return JSONResponse(body, status_code=status, headers=headers)


# Every route documents these, so the OpenAPI document matches what the API answers.
_DESCRIPTIONS = {
    400: "Malformed request (e.g. a body that is not JSON)",
    401: "Missing, invalid or expired credentials",
    403: "Role not allowed",
    404: "Not found or not in the caller's scope",
    422: "Invalid parameters or body",
    429: "Rate limit exceeded (see Retry-After)",
    503: "A dependency is unavailable (see Retry-After)",
}


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Documented error answers: the one error body, with an example per status."""
    return {
        status: {
            "model": ErrorBody,
            "description": text,
            "content": {"application/json": {"example": ERROR_EXAMPLES[status]}},
        }
        for status, text in descriptions.items()
    }


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = error_responses(_DESCRIPTIONS)


DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    RedisError,
)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for template, item in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods.update(m.upper() for m in item if m in ("get", "post", "put", "patch", "delete"))
    return sorted(methods)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors()[:50]:
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", ""))[:300],
                "type": str(err.get("type", "")),
            }
        )
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette lists only the first matching route's methods; a path served by several routes has more.
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path)) or headers.get("Allow", "")
        return error_response(exc.status_code, code, message, None, headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422, "validation_error", "request parameters or body are invalid", _validation_details(exc)
        )

    @app.exception_handler(CircuitOpenError)
    async def _breaker_open(request: Request, exc: CircuitOpenError) -> JSONResponse:
        retry = max(1, int(exc.retry_after_s + 0.999))
        return error_response(
            503, "dependency_unavailable", str(exc), {"dependency": exc.dependency}, {"Retry-After": str(retry)}
        )

    @app.exception_handler(InfluxUnavailableError)
    async def _influx_down(request: Request, exc: InfluxUnavailableError) -> JSONResponse:
        return error_response(
            503,
            "dependency_unavailable",
            f"influxdb is unavailable: {exc}"[:300],
            {"dependency": "influxdb"},
            {"Retry-After": "5"},
        )

    @app.exception_handler(asyncpg.DataError)
    async def _bad_value(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # A value PostgreSQL cannot store or compare; validation should have caught it first.
        return error_response(422, "validation_error", "a value is not acceptable", {"reason": type(exc).__name__})

    @app.exception_handler(BulkheadFullError)
    async def _bulkhead_full(request: Request, exc: BulkheadFullError) -> JSONResponse:
        return error_response(503, "overloaded", str(exc), None, {"Retry-After": "1"})

    async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            503,
            "dependency_unavailable",
            f"a dependency did not answer: {type(exc).__name__}",
            None,
            {"Retry-After": "5"},
        )

    # Registered per class (not for Exception) so that Starlette's ExceptionMiddleware answers
    # them: outages of PostgreSQL and Redis are 503, not a bug.
    for cls in DEPENDENCY_ERRORS:
        app.add_exception_handler(cls, _dependency_down)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return error_response(500, "internal_error", "internal error; it was logged", None)
