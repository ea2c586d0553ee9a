"""The runbooks in ``docs/runbooks`` for the local Prometheus's alert links.

Alerts link ``{{ $externalLabels.runbook_base }}/<runbook>.md``; the local Prometheus sets that base
to this route. Served only in the local and test environments (a deployed API has no docs folder;
production Prometheus points the base at the published docs)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from api.errors import ApiError
from energy.settings_paths import PROJECT_ROOT

router = APIRouter(tags=["ops"], include_in_schema=False)

RUNBOOKS_DIR = PROJECT_ROOT / "docs" / "runbooks"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}\.md$")


@router.get("/runbooks/{name}", response_class=PlainTextResponse)
async def runbook(name: str, request: Request) -> PlainTextResponse:
    if request.app.state.settings.environment not in ("local", "test"):
        raise ApiError(404, "not_found", "runbooks are published with the docs outside local runs")
    path = RUNBOOKS_DIR / name
    if not _NAME.match(name) or not path.is_file():
        raise ApiError(404, "not_found", f"no runbook named {name[:100]!r}")
    return PlainTextResponse(path.read_text(encoding="utf-8"), media_type="text/markdown; charset=utf-8")
