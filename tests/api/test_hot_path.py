"""The cached read's hot path (decision 1060): the current-load JSON rendered once per cached value, and the
credentials require_principal reads itself still declared in the OpenAPI document."""

from __future__ import annotations

import json

import pytest

from api.app import create_app
from api.cache import CacheResult
from api.routes.readings import current_body, current_json

VALUE = {
    "facility_id": "fac-001",
    "as_of": "2026-01-05T10:00:00Z",
    "current_kw": 412.75,
    "meters_reporting": 10,
    "rollup_1m": {
        "window_start": "2026-01-05T09:59:00Z",
        "window": "1m",
        "avg_kw": 401.5,
        "min_kw": None,
        "max_kw": 420.0,
        "energy_kwh": 6.69,
        "sample_count": 40,
        "coverage": 1.0,
    },
    "fetched_at": "2026-01-05T10:00:02Z",
}


@pytest.mark.parametrize(
    ("stale", "age_s", "staleness"),
    [(False, 0.0, 0.0), (False, 3.14159, 3.142), (True, 1234.5678, 1234.568), (False, 0.0004, 0.0)],
)
def test_current_json_is_the_models_own_rendering_with_this_requests_staleness(stale, age_s, staleness) -> None:
    memo: dict[str, object] = {}
    first = current_json(CacheResult(VALUE, "memory", 1.0, False, memo))
    body = current_json(CacheResult(VALUE, "memory", age_s, stale, memo))  # the memo's head, this request's tail
    assert body == current_body(CacheResult(VALUE, "memory", age_s, stale)).model_dump_json().encode()
    parsed = json.loads(body)
    assert (parsed["stale"], parsed["staleness_s"], parsed["current_kw"]) == (stale, staleness, 412.75)
    assert list(parsed)[-2:] == ["stale", "staleness_s"]
    assert json.loads(first)["staleness_s"] == 1.0


def test_the_rendering_belongs_to_the_cached_value() -> None:
    memo: dict[str, object] = {}
    current_json(CacheResult(VALUE, "memory", 0.0, False, memo))
    other = {**VALUE, "current_kw": 99.0}
    # A refreshed value is a new cache entry with its own (empty) memo: never the old rendering.
    assert json.loads(current_json(CacheResult(other, "memory", 0.0, False, {})))["current_kw"] == 99.0
    assert json.loads(current_json(CacheResult(VALUE, "memory", 0.0, False, memo)))["current_kw"] == 412.75


def test_operations_that_need_a_principal_declare_both_credentials_and_others_none(settings) -> None:
    doc = create_app(settings).openapi()
    either = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    paths = doc["paths"]
    assert paths["/api/facilities/{facility_id}/current"]["get"]["security"] == either
    assert paths["/api/facilities"]["post"]["security"] == either  # through require_role
    assert paths["/api/auth/me"]["get"]["security"] == either
    assert "security" not in paths["/api/auth/token"]["post"]
    assert "security" not in paths["/healthz"]["get"]
    assert doc["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "JWT from POST /api/auth/token"},
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Api-Key",
            "description": "API key of a service or script",
        },
    }
