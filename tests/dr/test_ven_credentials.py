"""Per-utility VEN credentials encrypted at rest (decision 0860): what PostgreSQL holds is not the
token, it opens only with the configured key (or the previous one during a rotation), a wrong key
fails naming the key ids, rows written in plaintext before migration 0660 are sealed by
``energy utility reencrypt-credentials``, and production refuses the development key."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from dr_coordinator.adapters import onboarding
from dr_coordinator.adapters.ven_credentials import unseal_hmac
from dr_coordinator.adapters.vtn_registry import UTILITY_VTN_COLUMNS, VtnTarget
from energy.secretbox import SecretBox, SecretBoxError
from energy.settings import InsecureSettingsError, Settings
from schemas.utilities import UtilityIn
from tests.dr.conftest import _CREATED_UTILITIES

DEV_KEY = "local-dev-ven-credentials-key-change-me"  # written by hand from dr_coordinator/config.py


RAW = "SELECT ven_credentials::text AS plain, ven_credentials_encrypted AS sealed FROM utilities WHERE utility_id = $1"


def _key() -> str:
    return secrets.token_urlsafe(40)


async def _row(pool: Any, utility_id: str) -> Any:
    return await pool.fetchrow(f"SELECT {UTILITY_VTN_COLUMNS} FROM utilities u WHERE u.utility_id = $1", utility_id)


def _body(utility_id: str, **kw: Any) -> UtilityIn:
    base: dict[str, Any] = {
        "utility_id": utility_id,
        "name": utility_id,
        "vtn_base_url": "http://127.0.0.1:9/openadr3/3.1.0",
        "webhook_token": f"hook-token-{utility_id}",
    }
    base.update(kw)
    return UtilityIn(**base)


# --- the box itself ---------------------------------------------------------------------------------


def test_a_sealed_value_opens_with_its_key_and_context_only() -> None:
    box = SecretBox(_key())
    sealed = box.encrypt(b"the-ven-token-1234567890", "utility:a:ven_credentials")
    assert b"the-ven-token" not in sealed.encode() and b"the-ven-token" not in base64.urlsafe_b64decode(
        sealed.split(".")[2]
    )
    assert sealed.split(".")[:2] == ["v1", box.key_id]
    assert box.decrypt(sealed, "utility:a:ven_credentials") == b"the-ven-token-1234567890"
    # Two seals of the same value differ (random nonce).
    assert box.encrypt(b"x", "c") != box.encrypt(b"x", "c")
    # Copied to another utility's row: does not authenticate.
    with pytest.raises(SecretBoxError, match="does not authenticate"):
        box.decrypt(sealed, "utility:b:ven_credentials")
    # One byte changed: does not authenticate.
    body = bytearray(base64.urlsafe_b64decode(sealed.split(".")[2]))
    body[-1] ^= 1
    tampered = f"v1.{box.key_id}.{base64.urlsafe_b64encode(bytes(body)).decode()}"
    with pytest.raises(SecretBoxError, match="does not authenticate"):
        box.decrypt(tampered, "utility:a:ven_credentials")
    with pytest.raises(SecretBoxError, match="malformed"):
        box.decrypt('{"token": "plain"}', "utility:a:ven_credentials")


def test_a_wrong_key_fails_naming_the_key_ids_and_the_previous_key_still_opens() -> None:
    old, new = SecretBox(_key()), SecretBox(_key())
    sealed = old.encrypt(b"secret", "ctx")
    with pytest.raises(SecretBoxError) as err:
        new.decrypt(sealed, "ctx")
    message = str(err.value)
    assert old.key_id in message and new.key_id in message and "secret" not in message.replace("previous", "")
    new_key, old_key = _key(), _key()
    rotating = SecretBox(new_key, previous=old_key)
    sealed_old = SecretBox(old_key).encrypt(b"v", "ctx")
    assert rotating.decrypt(sealed_old, "ctx") == b"v"
    assert rotating.needs_rotation(sealed_old) and not rotating.needs_rotation(rotating.encrypt(b"v", "ctx"))
    assert rotating.key_id == SecretBox(new_key).key_id  # encrypts with the current key only


# --- settings -------------------------------------------------------------------------------------


def test_production_refuses_the_development_key_and_a_rotation_needs_two_keys() -> None:
    from tests.foundation.test_secure_defaults import production_env

    env = production_env()
    dev = {**env, "ENERGY_DR__CREDENTIALS_KEY": DEV_KEY}
    with mock.patch.dict(os.environ, dev, clear=True), pytest.raises(InsecureSettingsError) as err:
        Settings()
    assert [p.split(" ")[0] for p in err.value.problems] == ["ENERGY_DR__CREDENTIALS_KEY"]
    with mock.patch.dict(os.environ, {"ENERGY_ENVIRONMENT": "local"}, clear=True):
        assert Settings().dr.credentials_key.get_secret_value() == DEV_KEY  # the laptop keeps its default
    same = {**env, "ENERGY_DR__CREDENTIALS_PREVIOUS_KEY": env["ENERGY_DR__CREDENTIALS_KEY"]}
    with mock.patch.dict(os.environ, same, clear=True), pytest.raises(ValueError, match="equals credentials_key"):
        Settings()


# --- PostgreSQL -------------------------------------------------------------------------------------


async def test_what_postgres_holds_is_not_the_token_and_opens_only_with_the_key(pg_pool, uid):
    utility_id = f"cred-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    token = f"ven-bearer-{secrets.token_hex(12)}"
    box = SecretBox(_key())
    async with pg_pool.acquire() as conn:
        shown = await onboarding.add_utility(conn, _body(utility_id, ven_token=token), "test", box=box)
    assert shown.ven_credentials_set
    raw = await pg_pool.fetchrow(
        RAW,
        utility_id,
    )
    assert json.loads(raw["plain"]) == {}
    assert token not in raw["sealed"] and token.encode() not in base64.urlsafe_b64decode(raw["sealed"].split(".")[2])
    assert raw["sealed"].startswith(f"v1.{box.key_id}.")

    target = VtnTarget.from_row(await _row(pg_pool, utility_id), box)
    assert target.credentials == {"token": token}
    other = SecretBox(_key())
    with pytest.raises(SecretBoxError, match=box.key_id):
        VtnTarget.from_row(await _row(pg_pool, utility_id), other)

    # OAuth2 client secrets too; replacing the utility re-seals.
    secret = f"client-secret-{secrets.token_hex(12)}"
    async with pg_pool.acquire() as conn:
        await onboarding.add_utility(
            conn,
            _body(utility_id, ven_auth="oauth2", oauth_client_id="ven-client", oauth_client_secret=secret),
            "test",
            replace=True,
            box=box,
        )
    sealed = await pg_pool.fetchval("SELECT ven_credentials_encrypted FROM utilities WHERE utility_id = $1", utility_id)
    assert secret not in sealed
    assert VtnTarget.from_row(await _row(pg_pool, utility_id), box).credentials == {
        "client_id": "ven-client",
        "client_secret": secret,
    }
    audit = json.dumps([r["detail"] for r in await pg_pool.fetch(
        "SELECT detail FROM utility_audit WHERE utility_id = $1", utility_id
    )])  # fmt: skip
    assert token not in audit and secret not in audit


async def test_plaintext_rows_are_sealed_and_a_key_rotation_re_encrypts(pg_pool, uid):
    utility_id = f"cred-legacy-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    token = f"legacy-token-{secrets.token_hex(12)}"
    # A row as the code before migration 0660 wrote it: the credentials in plaintext JSON.
    await pg_pool.execute(
        """INSERT INTO utilities (utility_id, name, vtn_base_url, bearer_token_hash, hmac_secret, ven_credentials)
           VALUES ($1, $1, 'http://127.0.0.1:9/openadr3/3.1.0', $2, '', $3::jsonb)""",
        utility_id,
        "0" * 64,
        json.dumps({"token": token}),
    )
    old_key, new_key = _key(), _key()
    old = SecretBox(old_key)
    assert VtnTarget.from_row(await _row(pg_pool, utility_id), old).credentials == {"token": token}  # read meanwhile

    async with pg_pool.acquire() as conn:
        counts = await onboarding.reencrypt_credentials(conn, "test", old, [utility_id])
    assert counts == {"sealed_plaintext": 1, "rotated": 0, "current": 0, "unreadable": 0}
    raw = await pg_pool.fetchrow(
        RAW,
        utility_id,
    )
    assert json.loads(raw["plain"]) == {} and token not in raw["sealed"]

    # Rotation: new key current, old key previous; re-encrypt; then the new key alone opens it.
    rotating = SecretBox(new_key, previous=old_key)
    assert VtnTarget.from_row(await _row(pg_pool, utility_id), rotating).credentials == {"token": token}
    async with pg_pool.acquire() as conn:
        counts = await onboarding.reencrypt_credentials(conn, "test", rotating, [utility_id])
        again = await onboarding.reencrypt_credentials(conn, "test", rotating, [utility_id])
    assert counts["rotated"] == 1 and again == {"sealed_plaintext": 0, "rotated": 0, "current": 1, "unreadable": 0}
    assert VtnTarget.from_row(await _row(pg_pool, utility_id), SecretBox(new_key)).credentials == {"token": token}
    with pytest.raises(SecretBoxError):
        VtnTarget.from_row(await _row(pg_pool, utility_id), old)
    # A key that opens nothing: counted, the row left as it is.
    async with pg_pool.acquire() as conn:
        lost = await onboarding.reencrypt_credentials(conn, "test", SecretBox(_key()), [utility_id])
    assert lost["unreadable"] == 1
    actions = [r["action"] for r in await pg_pool.fetch(
        "SELECT action FROM utility_audit WHERE utility_id = $1 ORDER BY seq", utility_id
    )]  # fmt: skip
    assert actions == ["ven_credentials_reencrypted", "ven_credentials_reencrypted"]


async def test_the_cli_seals_a_plaintext_row_with_the_configured_key(pg_pool, uid):
    utility_id = f"cred-cli-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    token = f"cli-legacy-token-{secrets.token_hex(12)}"
    hmac_secret = f"cli-legacy-hmac-{secrets.token_hex(12)}"
    await pg_pool.execute(
        """INSERT INTO utilities (utility_id, name, vtn_base_url, bearer_token_hash, hmac_secret, ven_credentials)
           VALUES ($1, $1, 'http://127.0.0.1:9/openadr3/3.1.0', $2, $4, $3::jsonb)""",
        utility_id,
        "0" * 64,
        json.dumps({"token": token}),
        hmac_secret,
    )
    key = _key()
    exe = Path(sys.executable).with_name("energy")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "energy.cli"]
    done = subprocess.run(
        [*argv, "utility", "reencrypt-credentials", "--utility", utility_id],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ENERGY_DR__CREDENTIALS_KEY": key},
    )
    assert done.returncode == 0, done.stderr
    # both secrets of the row: the VEN token and the webhook HMAC secret (decision 0930)
    assert json.loads(done.stdout)["sealed_plaintext"] == 2 and token not in done.stdout + done.stderr
    assert hmac_secret not in done.stdout + done.stderr
    assert VtnTarget.from_row(await _row(pg_pool, utility_id), SecretBox(key)).credentials == {"token": token}
    row = await pg_pool.fetchrow(
        "SELECT u::text AS t, hmac_secret_encrypted FROM utilities u WHERE utility_id = $1", utility_id
    )
    assert hmac_secret not in row["t"] and token not in row["t"]
    assert unseal_hmac(SecretBox(key), utility_id, row["hmac_secret_encrypted"]) == hmac_secret
