"""Every route of the API and of the ingestion HTTP service is documented for a newcomer reading
/docs: a summary, its client errors (4xx) with the service's error body and an example, and an
example of what it takes or answers. Every example must validate against the schema it
illustrates, so examples cannot drift from the models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
from fastapi import FastAPI

from api.app import create_app
from energy.observability.health import Health
from energy.settings import get_settings
from ingestion.http_api import BATCH_EXAMPLE
from ingestion.pipeline import Buffer
from ingestion.service import http_app
from schemas.readings import GatewayBatch

METHODS = ("get", "post", "put", "patch", "delete")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def has_example(media: dict[str, Any]) -> bool:
    return "example" in media or bool(media.get("examples"))


def media_examples(media: dict[str, Any]) -> list[Any]:
    found = [media["example"]] if "example" in media else []
    return found + [e["value"] for e in (media.get("examples") or {}).values() if "value" in e]


def invalid_example(doc: dict[str, Any], schema: dict[str, Any], example: Any) -> str | None:
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": doc.get("components", {})})
    errors = list(validator.iter_errors(example))
    return "; ".join(f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in errors[:3]) or None


def problems(doc: dict[str, Any], error_model: str) -> list[str]:
    """One line per missing piece, naming the route."""
    out: list[str] = []
    error_ref = f"#/components/schemas/{error_model}"
    for name, op in operations(doc):
        summary = (op.get("summary") or "").strip()
        # FastAPI fills an unset summary from the function's name ("List Utilities"): not a summary
        derived = summary.lower().replace(" ", "_")
        if not summary or (derived and op.get("operationId", "").startswith(derived + "_")):
            out.append(f"{name}: no summary")
        responses: dict[str, Any] = op.get("responses", {})
        client_errors = {code: r for code, r in responses.items() if code.startswith("4")}
        # a route that takes nothing (no parameters, body or credentials) has no client error to document
        takes_input = bool(op.get("parameters") or op.get("requestBody") or op.get("security"))
        if takes_input and not client_errors:
            out.append(f"{name}: no documented 4xx response")
        for code, r in client_errors.items():
            media = r.get("content", {}).get("application/json", {})
            if media.get("schema", {}).get("$ref") != error_ref:
                out.append(f"{name}: {code} is not documented with the error body {error_model}")
            if not has_example(media):
                out.append(f"{name}: {code} has no example")

        bodies = [
            (f"{code} {media_type}", media)
            for code, r in responses.items()
            for media_type, media in r.get("content", {}).items()
            if code.startswith("2")
        ]
        request = op.get("requestBody", {}).get("content", {})
        for label, media in bodies:
            if not has_example(media):
                out.append(f"{name}: response {label} has no example")
        for media_type, media in request.items():
            if not has_example(media):
                out.append(f"{name}: request body {media_type} has no example")
        if not bodies and not request and not any(has_example(p) for p in op.get("parameters", [])):
            out.append(f"{name}: no request or response example (neither body has one, nor any parameter)")

        examples = [(label, media) for label, media in bodies] + [(f"request {t}", m) for t, m in request.items()]
        examples += [(f"{code}", r.get("content", {}).get("application/json", {})) for code, r in client_errors.items()]
        for label, media in examples:
            for example in media_examples(media):
                reason = invalid_example(doc, media.get("schema", {}), example)
                if reason:
                    out.append(f"{name}: the {label} example does not match its schema ({reason})")
    return out


def api_doc() -> dict[str, Any]:
    return create_app(get_settings()).openapi()


def ingestion_doc() -> dict[str, Any]:
    # only the routes are built here: no validator, registry or producer is needed to describe them
    app = http_app(get_settings(), Health("ingestion"), None, None, Buffer(1), None)  # type: ignore[arg-type]
    return app.openapi()


def test_every_api_route_has_a_summary_its_errors_and_an_example() -> None:
    doc = api_doc()
    assert len(list(operations(doc))) >= 40  # the walk sees the whole API, not an empty document
    assert problems(doc, "ErrorBody") == []


def test_every_ingestion_route_has_a_summary_its_errors_and_an_example() -> None:
    doc = ingestion_doc()
    names = [name for name, _ in operations(doc)]
    assert "POST /v1/readings" in names and "GET /ready" in names
    assert problems(doc, "ErrorResponse") == []
    GatewayBatch.model_validate_json(
        json.dumps(BATCH_EXAMPLE)
    )  # the request example is a real batch (its schema is loose)


def test_the_check_names_each_missing_piece() -> None:
    app = FastAPI()

    @app.get("/bare/{item_id}")
    async def bare(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get(
        "/wrong-example",
        summary="An example of the wrong type",
        responses={
            200: {"content": {"application/json": {"example": {"n": "not a number"}}}},
            404: {"description": "missing", "content": {"application/json": {"example": {}}}},
        },
    )
    async def wrong(q: int = 0) -> dict[str, int]:
        return {"n": q}

    found = problems(app.openapi(), "ErrorBody")
    assert "GET /bare/{item_id}: no summary" in found
    assert "GET /bare/{item_id}: 422 is not documented with the error body ErrorBody" in found
    assert "GET /bare/{item_id}: 422 has no example" in found
    assert "GET /bare/{item_id}: response 200 application/json has no example" in found
    assert "GET /wrong-example: 404 is not documented with the error body ErrorBody" in found
    assert any(p.startswith("GET /wrong-example: the 200 application/json example does not match") for p in found)
