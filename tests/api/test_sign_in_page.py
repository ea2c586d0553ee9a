"""The sign-in page hints at the development credentials on a laptop only (decision 0009)."""

from __future__ import annotations

import pytest

from api.routes.dashboard import DEV_HINT_MARKER, sign_in_page

HINT_LOGIN = "operator@tenant-a.example"  # decision 0501's development operator
HINT_PASSWORD = "operator-tenant-a-dev-password"


@pytest.mark.parametrize("environment", ["local", "test"])
def test_a_laptop_shows_the_development_sign_in(environment: str) -> None:
    page = sign_in_page(f"<form>{DEV_HINT_MARKER}</form>", environment)
    assert HINT_LOGIN in page and HINT_PASSWORD in page and DEV_HINT_MARKER not in page


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_staging_and_production_show_no_hint(environment: str) -> None:
    assert sign_in_page(f"<form>{DEV_HINT_MARKER}</form>", environment) == "<form></form>"


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/facility"])
async def test_the_served_pages_carry_the_hint_in_the_test_environment(client, settings, path: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert 'id="login-form"' in resp.text
    assert (HINT_PASSWORD in resp.text) == (settings.environment in ("local", "test"))
