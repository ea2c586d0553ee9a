"""Rotating a utility's webhook HMAC secret with an overlap window (decision 0932, migration 0731),
through the admin API and the CLI, verified by the real webhook over HTTP with real PostgreSQL:
the old secret is accepted inside the window and refused after it (the stored expiry is moved into
the past, nothing sleeps), the new one is accepted throughout, a wrong one is a 401 with a reason;
secrets are never echoed nor audited; ``reencrypt-credentials`` re-seals both secrets. Also the
bearer webhook token's overlap ending at its stored expiry, and ``add --replace`` ending overlaps.

Signatures are computed here with hmac/hashlib, independently of the webhook's code."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio
from pydantic import SecretStr

from dr_coordinator.adapters import onboarding
from dr_coordinator.adapters.ven_credentials import credentials_box
from energy.secretbox import SecretBox
from energy.settings import Settings
from schemas.utilities import HmacRotateIn, RotateIn, UtilityIn
from tests.dr.conftest import _CREATED_UTILITIES, api_server, dr_settings
from tests.dr.test_hmac_secret_at_rest import _enroll_fleet, _Events, _post, _row_text
from tests.dr.test_onboarding import energy

KEY = secrets.token_urlsafe(40)
OLD_KEY = secrets.token_urlsafe(40)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def hook(stack: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API, its credentials key KEY only (so a secret still under OLD_KEY would not open)."""
    rotating_api = api_server(dr_settings(settings, credentials_key=SecretStr(KEY)))
    async with rotating_api as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


async def _admin_key(pg_pool: Any) -> dict[str, str]:
    key = f"k-{secrets.token_hex(12)}"
    await pg_pool.execute(
        "INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role) VALUES ($1, 'tenant-a', 'rotation', $2, $3)",
        uuid.uuid4(),
        hashlib.sha256(key.encode()).hexdigest(),
        "platform_admin",
    )
    return {"X-Api-Key": key}


async def _onboard(pg_pool: Any, utility_id: str, box: SecretBox, hmac_secret: str | None, token: str) -> None:
    _CREATED_UTILITIES.add(utility_id)
    body = UtilityIn(
        utility_id=utility_id,
        name=utility_id,
        vtn_base_url="http://127.0.0.1:9/openadr3/3.1.0",
        webhook_token=token,
        ven_token=f"ven-token-{utility_id}",
        hmac_secret=hmac_secret,
    )
    async with pg_pool.acquire() as conn:
        await onboarding.add_utility(conn, body, "test", replace=True, box=box)
    await _enroll_fleet(pg_pool, utility_id)


async def _audit(pg_pool: Any, utility_id: str) -> list[Any]:
    return await pg_pool.fetch(
        "SELECT action, detail FROM utility_audit WHERE utility_id = $1 ORDER BY seq", utility_id
    )


def _error(resp: httpx.Response) -> tuple[int, str, str]:
    err = resp.json()["error"]
    return resp.status_code, err["code"], err["message"]


async def test_admin_api_rotation_accepts_the_old_secret_until_its_stored_expiry(hook, pg_pool, uid):
    utility_id = f"hmac-rot-{uid}"
    old, new, wrong = (f"{name}-{secrets.token_hex(16)}" for name in ("old", "new", "wrong"))
    await _onboard(pg_pool, utility_id, SecretBox(KEY), old, f"hook-token-{utility_id}")
    admin = await _admin_key(pg_pool)
    events = _Events(utility_id, 15)
    assert (await _post(hook, events, old)).status_code == 202  # before: the only secret

    before = datetime.now(UTC)
    rotated = await hook.post(
        f"/api/admin/utilities/{utility_id}/hmac-secret", json={"new_secret": new, "overlap_s": 3600}, headers=admin
    )
    after = datetime.now(UTC)
    assert rotated.status_code == 200, rotated.text
    assert old not in rotated.text and new not in rotated.text
    until = datetime.fromisoformat(rotated.json()["previous_valid_until"])
    assert before + timedelta(seconds=3600) - timedelta(seconds=5) <= until <= after + timedelta(seconds=3605)
    row_text = await _row_text(pg_pool, utility_id)
    assert old not in row_text and new not in row_text
    stored = await pg_pool.fetchrow(
        "SELECT hmac_secret_encrypted, hmac_previous_secret_encrypted FROM utilities WHERE utility_id = $1", utility_id
    )
    prefix = f"v1.{SecretBox(KEY).key_id}."
    assert stored["hmac_secret_encrypted"].startswith(prefix)
    assert stored["hmac_previous_secret_encrypted"].startswith(prefix)

    # Inside the window: both secrets verify, a wrong one does not.
    assert (await _post(hook, events, old)).status_code == 202
    assert (await _post(hook, events, new)).status_code == 202
    status, code, message = _error(await _post(hook, events, wrong))
    assert (status, code) == (401, "unauthenticated") and "signature does not match" in message
    shown = await hook.get(f"/api/admin/utilities/{utility_id}", headers=admin)
    assert shown.json()["hmac_previous_valid_until"] is not None
    assert old not in shown.text and new not in shown.text

    # One overlap at a time: a second rotation inside the window is refused, nothing changes.
    again = await hook.post(
        f"/api/admin/utilities/{utility_id}/hmac-secret", json={"new_secret": wrong, "overlap_s": 60}, headers=admin
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "hmac_rotation_in_progress"
    assert (await _post(hook, events, wrong)).status_code == 401

    # The window ends at the stored expiry.
    await pg_pool.execute(
        "UPDATE utilities SET hmac_previous_expires_at = now() - interval '1 second' WHERE utility_id = $1",
        utility_id,
    )
    status, code, message = _error(await _post(hook, events, old))
    assert (status, code) == (401, "hmac_secret_expired") and "previous HMAC secret" in message
    assert old not in message
    assert (await _post(hook, events, new)).status_code == 202
    assert _error(await _post(hook, events, wrong))[:2] == (401, "unauthenticated")
    shown = await hook.get(f"/api/admin/utilities/{utility_id}", headers=admin)
    assert shown.json()["hmac_previous_valid_until"] is None and shown.json()["hmac_set"] is True

    # After the window a new rotation is allowed; the oldest secret is then gone altogether.
    third = f"third-{secrets.token_hex(16)}"
    assert (
        await hook.post(f"/api/admin/utilities/{utility_id}/hmac-secret", json={"new_secret": third}, headers=admin)
    ).status_code == 200
    assert (await _post(hook, events, new)).status_code == 202
    assert (await _post(hook, events, third)).status_code == 202
    assert _error(await _post(hook, events, old))[:2] == (401, "unauthenticated")

    short = await hook.post(
        f"/api/admin/utilities/{utility_id}/hmac-secret", json={"new_secret": "short"}, headers=admin
    )
    too_long = await hook.post(
        f"/api/admin/utilities/{utility_id}/hmac-secret",
        json={"new_secret": f"x-{secrets.token_hex(16)}", "overlap_s": 31 * 86_400},
        headers=admin,
    )
    assert short.status_code == 422 and too_long.status_code == 422
    assert "short" not in short.text

    audit = await _audit(pg_pool, utility_id)
    rotations = [json.loads(a["detail"]) for a in audit if a["action"] == "hmac_secret_rotated"]
    assert len(rotations) == 2 and rotations[0]["previous_valid_until"] == until.isoformat()
    blob = json.dumps([a["detail"] for a in audit])
    assert all(s not in blob for s in (old, new, wrong, third))


async def test_cli_rotation_with_a_duration_and_no_secret_on_screen(pg_pool, settings, uid, monkeypatch):
    utility_id = f"hmac-cli-{uid}"
    old, new = f"cli-old-{secrets.token_hex(16)}", f"cli-new-{secrets.token_hex(16)}"
    # The CLI seals with the process settings' key, so this test's API is given that key.
    await _onboard(pg_pool, utility_id, credentials_box(settings.dr), old, f"hook-token-{utility_id}")
    monkeypatch.setenv("HMAC_ROTATION_NEW_SECRET", new)  # energy() passes os.environ on
    done = energy("rotate-hmac-secret", utility_id, "--new-secret-env", "HMAC_ROTATION_NEW_SECRET", "--overlap", "2h")
    bad = energy("rotate-hmac-secret", utility_id, "--new-secret-env", "HMAC_ROTATION_NEW_SECRET", "--overlap", "31d")
    unset = energy("rotate-hmac-secret", utility_id, "--new-secret-env", "HMAC_NOT_SET_ANYWHERE")
    assert done.returncode == 0, done.stderr
    assert new not in done.stdout + done.stderr and old not in done.stdout + done.stderr
    until = datetime.fromisoformat(json.loads(done.stdout)["previous_valid_until"])
    assert abs((until - datetime.now(UTC)).total_seconds() - 2 * 3600) < 120
    assert bad.returncode != 0 and "30-day" in bad.stderr and new not in bad.stderr
    assert unset.returncode != 0 and "HMAC_NOT_SET_ANYWHERE" in unset.stderr

    async with api_server(dr_settings(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        events = _Events(utility_id, 16)
        assert (await _post(client, events, old)).status_code == 202
        assert (await _post(client, events, new)).status_code == 202
        assert (await _post(client, events, f"{new}x")).status_code == 401
    actions = [a["action"] for a in await _audit(pg_pool, utility_id)]
    assert actions[-1] == "hmac_secret_rotated" and actions.count("hmac_secret_rotated") == 1


async def test_reencrypt_credentials_reseals_the_current_and_the_previous_secret(hook, pg_pool, uid):
    utility_id = f"hmac-reseal-{uid}"
    old, new = f"rs-old-{secrets.token_hex(16)}", f"rs-new-{secrets.token_hex(16)}"
    under_old = SecretBox(OLD_KEY)
    await _onboard(pg_pool, utility_id, under_old, old, f"hook-token-{utility_id}")
    async with pg_pool.acquire() as conn:
        await onboarding.rotate_hmac_secret(
            conn, utility_id, HmacRotateIn(new_secret=SecretStr(new), overlap_s=3600), "test", box=under_old
        )
    events = _Events(utility_id, 17)
    # The API knows KEY only: neither secret opens yet (the current one decides: 503).
    assert _error(await _post(hook, events, new))[:2] == (503, "credentials_unreadable")

    async with pg_pool.acquire() as conn:
        counts = await onboarding.reencrypt_credentials(conn, "test", SecretBox(KEY, OLD_KEY), [utility_id])
    assert counts == {"sealed_plaintext": 0, "rotated": 3, "current": 0, "unreadable": 0}  # VEN, HMAC, previous
    stored = await pg_pool.fetchrow(
        "SELECT hmac_secret_encrypted, hmac_previous_secret_encrypted FROM utilities WHERE utility_id = $1", utility_id
    )
    prefix = f"v1.{SecretBox(KEY).key_id}."
    assert stored["hmac_secret_encrypted"].startswith(prefix)
    assert stored["hmac_previous_secret_encrypted"].startswith(prefix)
    assert (await _post(hook, events, old)).status_code == 202
    assert (await _post(hook, events, new)).status_code == 202
    actions = [a["action"] for a in await _audit(pg_pool, utility_id)]
    assert actions[-3:] == [
        "ven_credentials_reencrypted",
        "hmac_secret_reencrypted",
        "hmac_previous_secret_reencrypted",
    ]


async def test_replace_ends_every_overlap_and_the_bearer_overlap_ends_at_its_stored_expiry(hook, pg_pool, uid):
    utility_id = f"hook-rot-{uid}"
    box = SecretBox(KEY)
    t1, t2, t3 = (f"token-{n}-{secrets.token_hex(12)}" for n in (1, 2, 3))
    h1, h2, h3 = (f"hmac-{n}-{secrets.token_hex(12)}" for n in (1, 2, 3))
    await _onboard(pg_pool, utility_id, box, h1, t1)
    events = _Events(utility_id, 18)

    async def bearer(token: str) -> int:
        raw = events.body()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return (await hook.post(f"/api/utility/{utility_id}/events", content=raw, headers=headers)).status_code

    async with pg_pool.acquire() as conn:
        await onboarding.rotate_webhook_token(conn, utility_id, RotateIn(new_token=SecretStr(t2), overlap_s=3600), "t")
    assert (await bearer(t1), await bearer(t2)) == (202, 202)
    await pg_pool.execute(
        "UPDATE utility_webhook_tokens SET expires_at = now() - interval '1 second' "
        "WHERE utility_id = $1 AND token_hash = $2",
        utility_id,
        hashlib.sha256(t1.encode()).hexdigest(),
    )
    assert (await bearer(t1), await bearer(t2)) == (401, 202)

    # A fresh overlap on both credentials, then `add --replace`: the new ones apply at once.
    async with pg_pool.acquire() as conn:
        await onboarding.rotate_webhook_token(conn, utility_id, RotateIn(new_token=SecretStr(t3), overlap_s=3600), "t")
        await onboarding.rotate_hmac_secret(conn, utility_id, HmacRotateIn(new_secret=SecretStr(h2)), "t", box=box)
    assert (await bearer(t2), await bearer(t3)) == (202, 202)
    assert (await _post(hook, events, h1)).status_code == 202
    await _onboard(pg_pool, utility_id, box, h3, t1)
    assert (await bearer(t2), await bearer(t3), await bearer(t1)) == (401, 401, 202)
    assert (await _post(hook, events, h1)).status_code == 401
    assert (await _post(hook, events, h2)).status_code == 401
    assert (await _post(hook, events, h3)).status_code == 202

    # A token the caller supplies is never echoed; a generated one is shown once, and works.
    async with pg_pool.acquire() as conn:
        supplied = await onboarding.rotate_webhook_token(conn, utility_id, RotateIn(new_token=SecretStr(t2)), "t")
        generated = await onboarding.rotate_webhook_token(conn, utility_id, RotateIn(overlap_s=60), "t")
    assert supplied.webhook_token is None and t2 not in supplied.model_dump_json()
    assert generated.webhook_token is not None and len(generated.webhook_token) >= 16
    assert (await bearer(generated.webhook_token), await bearer(t2)) == (202, 202)
