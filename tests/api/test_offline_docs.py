"""Swagger UI and ReDoc work offline: every asset the pages load comes from the service itself.

Checked twice: statically (every ``src``/``href`` in the HTML is a path on this host and answers
200 with the asset's real content) and in headless Chromium (every request the rendered page makes
goes to 127.0.0.1, and Swagger UI draws the API's title and its operations)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from api.app import create_app
from energy.observability.http import serve_app
from tests.api.conftest import wait_until_serving

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ASSET_REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


def referenced_assets(html: str) -> list[str]:
    return [a or b for a, b in ASSET_REF.findall(html)]


async def assert_page_is_self_contained(client: httpx.AsyncClient, page: str, min_asset_bytes: int) -> None:
    response = await client.get(page)
    assert response.status_code == 200, response.text[:200]
    refs = referenced_assets(response.text)
    assert refs, f"{page} references no assets at all"
    for ref in refs:
        parsed = urlparse(ref)
        assert not parsed.scheme and not parsed.netloc, f"{page} loads {ref} from another host"
        asset = await client.get(ref)
        assert asset.status_code == 200, f"{page}: {ref} -> {asset.status_code}"
        if ref.endswith(".js"):
            assert len(asset.content) >= min_asset_bytes, f"{ref} is too small to be the real bundle"


async def test_api_docs_and_redoc_load_only_local_assets(client: httpx.AsyncClient) -> None:
    await assert_page_is_self_contained(client, "/docs", min_asset_bytes=500_000)
    await assert_page_is_self_contained(client, "/redoc", min_asset_bytes=500_000)


@pytest.mark.browser
async def test_swagger_ui_renders_with_no_request_leaving_the_host(settings, port, stack, browser) -> None:
    app = create_app(settings)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop))
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        await wait_until_serving(app, port)
        page = await browser.new_page()
        hosts: list[str] = []
        page.on("request", lambda r: hosts.append(urlparse(r.url).hostname or r.url))
        await page.goto(f"{base}/docs")
        await page.locator(".swagger-ui .info .title").wait_for(timeout=20_000)
        assert "Energy platform API" in await page.locator(".swagger-ui .info .title").inner_text()
        assert await page.locator(".opblock").count() > 10, "the operations are listed"
        await page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)
        assert hosts, "the page made requests"
        assert set(hosts) == {"127.0.0.1"}, f"requests left the host: {sorted(set(hosts))}"
    finally:
        stop.set()
        await server
