"""API-4: authentication (passwords, tokens with expiry, API keys) and roles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from api.auth import SigningKey, TokenKeys, issue_token
from tests.api.conftest import PASSWORD


async def test_login_with_email_and_password_returns_an_expiring_bearer_token(client, world):
    resp = await client.post("/api/auth/token", json={"email": world.a.emails["analyst"], "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer" and body["role"] == "analyst" and body["tenant_id"] == world.a.tenant_id
    expires = datetime.fromisoformat(body["expires_at"])
    # Short-lived (decision 0009): 15 minutes by default.
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15, seconds=5)
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert sorted(me.json()["facility_ids"]) == sorted(world.a.facility_ids)


async def test_wrong_password_and_unknown_email_get_the_same_401(client, world):
    wrong = await client.post("/api/auth/token", json={"email": world.a.emails["analyst"], "password": "nope"})
    unknown = await client.post("/api/auth/token", json={"email": "nobody@example.test", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "invalid_credentials"


async def test_expired_token_is_refused_with_401(client, world, settings):
    token, _ = issue_token(
        uuid.uuid4(),
        world.a.tenant_id,
        "analyst",
        TokenKeys.from_settings(settings),
        60,
        datetime.now(UTC) - timedelta(hours=2),
    )
    resp = await client.get("/api/facilities", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "token_expired"


async def test_token_signed_with_another_secret_is_refused(client, world, settings):
    # Same key id and issuer as the API's, another secret.
    genuine = TokenKeys.from_settings(settings)
    forged = TokenKeys(SigningKey(genuine.current.key_id, "not-the-secret-but-long-enough-for-hs256!"), genuine.issuer)
    token, _ = issue_token(uuid.uuid4(), world.a.tenant_id, "operator", forged, 600, datetime.now(UTC))
    resp = await client.get("/api/facilities", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_token"


async def test_missing_credentials_get_401_with_error_body(client):
    resp = await client.get("/api/facilities")
    assert resp.status_code == 401
    assert set(resp.json()["error"]) == {"code", "message", "details"}


async def test_api_key_authenticates_and_revoked_key_does_not(client, world, pg_pool, api_app):
    ok = await client.get("/api/auth/me", headers=world.a.headers["api_key"])
    assert ok.status_code == 200 and ok.json()["kind"] == "api_key"
    await pg_pool.execute("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1", world.a.tenant_id)
    api_app.state.principal_cache.clear()
    revoked = await client.get("/api/auth/me", headers=world.a.headers["api_key"])
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "invalid_api_key"


async def test_only_operators_may_create_facilities(client, world, uid):
    body = {"facility_id": f"new-{uid}", "name": "New", "timezone": "Europe/London", "latitude": 1, "longitude": 2}
    for role in ("analyst", "facility_manager", "api_key"):
        resp = await client.post("/api/facilities", json=body, headers=world.a.headers[role])
        assert resp.status_code == 403, role
        assert resp.json()["error"]["code"] == "forbidden"
    created = await client.post("/api/facilities", json=body, headers=world.a.headers["operator"])
    assert created.status_code == 201, created.text
    assert created.json()["tenant_id"] == world.a.tenant_id


async def test_seeded_dev_credentials_sign_in_and_see_only_their_tenants_fleet(client):
    from energy.seed import dev_principals

    users = {(t, r): (login, secret) for kind, t, r, login, secret in dev_principals() if kind == "user"}
    login, secret = users[("tenant-a", "operator")]
    token = await client.post("/api/auth/token", json={"email": login, "password": secret})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    page = await client.get("/api/facilities", params={"limit": 500}, headers=headers)
    ids = {f["facility_id"] for f in page.json()["items"]}
    assert "fac-001" in ids and "fac-002" not in ids  # the seeded fleet alternates tenants
    assert {f["tenant_id"] for f in page.json()["items"]} == {"tenant-a"}
    key = await client.get("/api/auth/me", headers={"X-Api-Key": "dev-key-tenant-b-analyst"})
    assert key.status_code == 200 and key.json()["tenant_id"] == "tenant-b"
