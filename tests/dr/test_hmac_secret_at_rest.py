"""The webhook HMAC secret we verify a utility's signatures with is sealed at rest (decision 0930,
migration 0730): no column of the utility's row holds it, the webhook still verifies signatures
with it, a key rotation keeps it verifiable and ``energy utility reencrypt-credentials`` re-seals it
(and seals rows written in plaintext before 0730), and a secret no key opens is a 503, not a 500."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio
from pydantic import SecretStr

from dr_coordinator.adapters import onboarding
from energy.secretbox import SecretBox
from energy.settings import Settings
from schemas.utilities import UtilityIn
from tests.dr.conftest import _CREATED_UTILITIES, FLEET, api_server, dr_settings, event_body

OLD_KEY = secrets.token_urlsafe(40)
NEW_KEY = secrets.token_urlsafe(40)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def api(stack: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API in the middle of a key rotation: NEW_KEY current, OLD_KEY previous."""
    rotating = dr_settings(settings, credentials_key=SecretStr(NEW_KEY), credentials_previous_key=SecretStr(OLD_KEY))
    async with api_server(rotating) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


def _signed(secret: str, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Signature": f"sha256={mac}", "X-Signature-Timestamp": ts, "Content-Type": "application/json"}


class _Events:
    """Distinct far-future slots on distinct facilities, so no two signed events overlap."""

    def __init__(self, utility_id: str, first_facility: int) -> None:
        self.utility_id = utility_id
        self.n = 0
        self.facility = FLEET[first_facility]

    def body(self) -> bytes:
        self.n += 1
        start = datetime.now(UTC) + timedelta(hours=30 + 2 * self.n)
        return json.dumps(event_body(f"hmac-{self.n}", start, 600, [self.facility])).encode()


async def _post(api: httpx.AsyncClient, events: _Events, secret: str) -> httpx.Response:
    raw = events.body()
    return await api.post(f"/api/utility/{events.utility_id}/events", content=raw, headers=_signed(secret, raw))


async def _enroll_fleet(pg_pool: Any, utility_id: str) -> None:
    await pg_pool.executemany(
        "INSERT INTO facility_enrollments (utility_id, facility_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(utility_id, f) for f in FLEET],
    )


async def _row_text(pg_pool: Any, utility_id: str) -> str:
    return str(await pg_pool.fetchval("SELECT u::text FROM utilities u WHERE utility_id = $1", utility_id))


async def test_the_row_holds_no_plaintext_and_a_signature_still_verifies_through_a_rotation(api, pg_pool, uid):
    utility_id = f"hmac-rest-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    secret = f"hmac-{secrets.token_hex(20)}"
    body = UtilityIn(
        utility_id=utility_id,
        name=utility_id,
        vtn_base_url="http://127.0.0.1:9/openadr3/3.1.0",
        webhook_token=f"hook-token-{utility_id}",
        ven_token=f"ven-token-{uid}-abcdef",
        hmac_secret=secret,
    )
    # Onboarded before the rotation: sealed under the key that is now the previous one.
    async with pg_pool.acquire() as conn:
        shown = await onboarding.add_utility(conn, body, "test", box=SecretBox(OLD_KEY))
    await _enroll_fleet(pg_pool, utility_id)
    assert shown.hmac_set and secret not in shown.model_dump_json()
    raw = await pg_pool.fetchrow(
        "SELECT hmac_secret, hmac_secret_encrypted FROM utilities WHERE utility_id = $1", utility_id
    )
    assert raw["hmac_secret"] == ""
    assert raw["hmac_secret_encrypted"].startswith(f"v1.{SecretBox(OLD_KEY).key_id}.")
    assert secret not in await _row_text(pg_pool, utility_id)
    audit = json.dumps([r["detail"] for r in await pg_pool.fetch(
        "SELECT detail FROM utility_audit WHERE utility_id = $1", utility_id
    )])  # fmt: skip
    assert secret not in audit and "hmac_secret" in audit  # named as set, never shown

    events = _Events(utility_id, 0)
    accepted = await _post(api, events, secret)
    assert accepted.status_code == 202, accepted.text  # opened with the previous key
    wrong = await _post(api, events, secret + "x")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"

    # Second step of the rotation: re-seal under the current key; the signature still verifies.
    async with pg_pool.acquire() as conn:
        counts = await onboarding.reencrypt_credentials(conn, "test", SecretBox(NEW_KEY, OLD_KEY), [utility_id])
    assert counts == {"sealed_plaintext": 0, "rotated": 2, "current": 0, "unreadable": 0}  # VEN token + HMAC
    sealed = await pg_pool.fetchval("SELECT hmac_secret_encrypted FROM utilities WHERE utility_id = $1", utility_id)
    assert sealed.startswith(f"v1.{SecretBox(NEW_KEY).key_id}.") and secret not in sealed
    again = await _post(api, events, secret)
    assert again.status_code == 202, again.text
    actions = [r["action"] for r in await pg_pool.fetch(
        "SELECT action FROM utility_audit WHERE utility_id = $1 ORDER BY seq", utility_id
    )]  # fmt: skip
    assert actions == ["added", "ven_credentials_reencrypted", "hmac_secret_reencrypted"]


async def test_a_plaintext_row_verifies_until_sealed_and_afterwards(api, pg_pool, uid):
    utility_id = f"hmac-legacy-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    secret = f"legacy-hmac-{secrets.token_hex(20)}"
    # A row as the code before migration 0730 wrote it.
    await pg_pool.execute(
        """INSERT INTO utilities (utility_id, name, vtn_base_url, bearer_token_hash, hmac_secret)
           VALUES ($1, $1, 'http://127.0.0.1:9/openadr3/3.1.0', $2, $3)""",
        utility_id,
        "0" * 64,
        secret,
    )
    await _enroll_fleet(pg_pool, utility_id)
    events = _Events(utility_id, 5)
    before = await _post(api, events, secret)
    assert before.status_code == 202, before.text

    async with pg_pool.acquire() as conn:
        counts = await onboarding.reencrypt_credentials(conn, "test", SecretBox(NEW_KEY, OLD_KEY), [utility_id])
    assert counts == {"sealed_plaintext": 1, "rotated": 0, "current": 0, "unreadable": 0}
    assert secret not in await _row_text(pg_pool, utility_id)
    after = await _post(api, events, secret)
    assert after.status_code == 202, after.text
    async with pg_pool.acquire() as conn:
        shown = await onboarding.show_utility(conn, utility_id)
        current = await onboarding.reencrypt_credentials(conn, "test", SecretBox(NEW_KEY), [utility_id])
    assert shown.hmac_set
    assert current == {"sealed_plaintext": 0, "rotated": 0, "current": 1, "unreadable": 0}


async def test_a_secret_no_configured_key_opens_is_a_503_naming_no_secret(api, pg_pool, uid):
    utility_id = f"hmac-lost-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    secret = f"lost-hmac-{secrets.token_hex(20)}"
    body = UtilityIn(
        utility_id=utility_id,
        name=utility_id,
        vtn_base_url="http://127.0.0.1:9/openadr3/3.1.0",
        webhook_token=f"hook-token-{utility_id}",
        ven_token=f"ven-token-{uid}-abcdef",
        hmac_secret=secret,
    )
    async with pg_pool.acquire() as conn:
        await onboarding.add_utility(conn, body, "test", box=SecretBox(secrets.token_urlsafe(40)))
    await _enroll_fleet(pg_pool, utility_id)
    resp = await _post(api, _Events(utility_id, 10), secret)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "credentials_unreadable"
    assert secret not in resp.text
    assert await pg_pool.fetchval("SELECT count(*) FROM dr_events WHERE utility_id = $1", utility_id) == 0
