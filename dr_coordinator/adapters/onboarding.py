"""Onboarding a utility: its VTN, OpenADR version, VEN credentials, the webhook credentials we
accept from it, its programs (with per-program rules) and the facilities enrolled in each.

The one write path for utilities: the admin API (``/api/admin/utilities``), the
``energy utility`` CLI and ``energy seed`` call these functions. Every change is written to
``utility_audit`` in the same transaction; secrets are never returned nor audited (only that
they changed). Decision 0411.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dr_coordinator.adapters.ven_credentials import (
    credentials_box,
    legacy_plaintext,
    seal,
    seal_hmac,
    unseal,
    unseal_hmac,
)
from energy.secretbox import SecretBox, SecretBoxError
from schemas.utilities import (
    EnrollmentIn,
    HmacRotateIn,
    HmacSecretRotated,
    ProgramIn,
    ProgramOut,
    RotateIn,
    TokenRotated,
    UtilityIn,
    UtilityOut,
)


class OnboardingError(ValueError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ven_credentials(body: UtilityIn) -> dict[str, Any]:
    if body.ven_auth == "oauth2":
        assert body.oauth_client_secret is not None
        creds: dict[str, Any] = {
            "client_id": body.oauth_client_id,
            "client_secret": body.oauth_client_secret.get_secret_value(),
        }
        if body.oauth_token_url:
            creds["token_url"] = body.oauth_token_url
        return creds
    assert body.ven_token is not None
    return {"token": body.ven_token.get_secret_value()}


async def audit(conn: Any, utility_id: str, actor: str, action: str, detail: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO utility_audit (utility_id, actor, action, detail) VALUES ($1, $2, $3, $4::jsonb)",
        utility_id,
        actor,
        action,
        json.dumps(detail, default=str),
    )


def _public(body: UtilityIn) -> dict[str, Any]:
    """What the audit may keep: everything but secret values (which are named, not shown)."""
    out = body.model_dump(exclude={"ven_token", "oauth_client_secret", "webhook_token", "hmac_secret"}, mode="json")
    out["secrets_set"] = sorted(
        k for k in ("ven_token", "oauth_client_secret", "webhook_token", "hmac_secret") if getattr(body, k)
    )
    return out


async def add_utility(
    conn: Any, body: UtilityIn, actor: str, *, replace: bool = False, box: SecretBox | None = None
) -> UtilityOut:
    """Create a utility (``replace``: update it if it exists, as ``energy seed`` does). The VEN
    credentials and the webhook HMAC secret are stored encrypted only (``box``: the process
    settings' key by default; decisions 0860, 0930)."""
    box = box or credentials_box()
    sealed = seal(box, body.utility_id, _ven_credentials(body))
    sealed_hmac = seal_hmac(box, body.utility_id, body.hmac_secret.get_secret_value()) if body.hmac_secret else None
    async with conn.transaction():
        exists = await conn.fetchval("SELECT active FROM utilities WHERE utility_id = $1", body.utility_id)
        if exists is not None and not replace:
            raise OnboardingError(409, "utility_exists", f"utility {body.utility_id!r} exists (use remove first)")
        hook_hash = token_hash(body.webhook_token.get_secret_value())
        await conn.execute(
            """INSERT INTO utilities (utility_id, name, vtn_base_url, bearer_token_hash, hmac_secret, ven_name,
                                      baseline_method, openadr_version, ven_auth, ven_credentials,
                                      ven_credentials_encrypted, hmac_secret_encrypted, hmac_required, active,
                                      updated_at)
               VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8, '{}'::jsonb, $9, $10, $11, true, now())
               ON CONFLICT (utility_id) DO UPDATE SET name = EXCLUDED.name, vtn_base_url = EXCLUDED.vtn_base_url,
                 bearer_token_hash = EXCLUDED.bearer_token_hash, hmac_secret = '',
                 hmac_secret_encrypted = EXCLUDED.hmac_secret_encrypted,
                 hmac_previous_secret_encrypted = NULL, hmac_previous_expires_at = NULL,
                 ven_name = EXCLUDED.ven_name, baseline_method = EXCLUDED.baseline_method,
                 openadr_version = EXCLUDED.openadr_version, ven_auth = EXCLUDED.ven_auth,
                 ven_credentials = '{}'::jsonb, ven_credentials_encrypted = EXCLUDED.ven_credentials_encrypted,
                 hmac_required = EXCLUDED.hmac_required,
                 active = true, updated_at = now()""",
            body.utility_id,
            body.name,
            body.vtn_base_url,
            hook_hash,
            body.ven_name,
            body.baseline_method,
            body.openadr_version,
            body.ven_auth,
            sealed,
            sealed_hmac,
            body.hmac_required,
        )
        await conn.execute(
            """INSERT INTO utility_webhook_tokens (utility_id, token_hash) VALUES ($1, $2)
               ON CONFLICT (utility_id, token_hash) DO UPDATE SET expires_at = NULL""",
            body.utility_id,
            hook_hash,
        )
        # Replacing sets the credentials at once (an overlap is what the rotate commands are for):
        # webhook tokens from before stop working, as the previous HMAC secret does (decision 0932).
        await conn.execute(
            """UPDATE utility_webhook_tokens SET expires_at = now()
               WHERE utility_id = $1 AND token_hash <> $2 AND (expires_at IS NULL OR expires_at > now())""",
            body.utility_id,
            hook_hash,
        )
        await audit(conn, body.utility_id, actor, "replaced" if exists is not None else "added", _public(body))
    return await show_utility(conn, body.utility_id)


async def add_program(conn: Any, utility_id: str, body: ProgramIn, actor: str) -> UtilityOut:
    async with conn.transaction():
        await _require(conn, utility_id)
        await conn.execute(
            """INSERT INTO utility_programs (utility_id, program_id, program_name, notice_s, max_duration_s,
                                             dispatch_lead_s, max_events_per_day)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (utility_id, program_id) DO UPDATE SET program_name = EXCLUDED.program_name,
                 notice_s = EXCLUDED.notice_s, max_duration_s = EXCLUDED.max_duration_s,
                 dispatch_lead_s = EXCLUDED.dispatch_lead_s, max_events_per_day = EXCLUDED.max_events_per_day""",
            utility_id,
            body.program_id,
            body.program_name,
            body.notice_s,
            body.max_duration_s,
            body.dispatch_lead_s,
            body.max_events_per_day,
        )
        await audit(conn, utility_id, actor, "program_set", body.model_dump(mode="json"))
    return await show_utility(conn, utility_id)


async def enroll(conn: Any, utility_id: str, body: EnrollmentIn, actor: str) -> UtilityOut:
    """Enroll facilities in a program (the program is created without rules when new); re-enrolling
    replaces the groups and resource name."""
    async with conn.transaction():
        await _require(conn, utility_id)
        known = {
            r["facility_id"]
            for r in await conn.fetch(
                "SELECT facility_id FROM facilities WHERE facility_id = ANY($1::text[]) AND active", body.facility_ids
            )
        }
        unknown = sorted(set(body.facility_ids) - known)
        if unknown:
            raise OnboardingError(422, "unknown_facility", f"unknown or inactive facilities: {unknown[:20]}")
        await conn.execute(
            """INSERT INTO utility_programs (utility_id, program_id) VALUES ($1, $2) ON CONFLICT DO NOTHING""",
            utility_id,
            body.program_id,
        )
        await conn.executemany(
            """INSERT INTO facility_enrollments (utility_id, facility_id, program_id, groups, resource_name)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (utility_id, facility_id, program_id)
               DO UPDATE SET groups = EXCLUDED.groups, resource_name = EXCLUDED.resource_name""",
            [
                (utility_id, f, body.program_id, sorted(set(body.groups)), body.resource_name)
                for f in sorted(set(body.facility_ids))
            ],
        )
        await audit(conn, utility_id, actor, "enrolled", body.model_dump(mode="json"))
    return await show_utility(conn, utility_id)


async def unenroll(conn: Any, utility_id: str, program_id: str, facility_ids: list[str], actor: str) -> int:
    async with conn.transaction():
        await _require(conn, utility_id)
        status = await conn.execute(
            """DELETE FROM facility_enrollments
               WHERE utility_id = $1 AND program_id = $2 AND facility_id = ANY($3::text[])""",
            utility_id,
            program_id,
            facility_ids,
        )
        await audit(conn, utility_id, actor, "unenrolled", {"program_id": program_id, "facility_ids": facility_ids})
    return int(status.split()[-1])


async def rotate_webhook_token(conn: Any, utility_id: str, body: RotateIn, actor: str) -> TokenRotated:
    """A new webhook token; the ones in use stay valid for ``overlap_s`` so the utility can switch."""
    new = body.new_token.get_secret_value() if body.new_token else secrets.token_urlsafe(32)
    if len(new) < 16:
        raise OnboardingError(422, "weak_token", "webhook tokens are at least 16 characters")
    until = datetime.now(UTC) + timedelta(seconds=body.overlap_s)
    async with conn.transaction():
        await _require(conn, utility_id)
        await conn.execute(
            """UPDATE utility_webhook_tokens SET expires_at = LEAST(COALESCE(expires_at, $2), $2)
               WHERE utility_id = $1""",
            utility_id,
            until,
        )
        await conn.execute(
            """INSERT INTO utility_webhook_tokens (utility_id, token_hash) VALUES ($1, $2)
               ON CONFLICT (utility_id, token_hash) DO UPDATE SET expires_at = NULL""",
            utility_id,
            token_hash(new),
        )
        await conn.execute(
            "UPDATE utilities SET bearer_token_hash = $2, updated_at = now() WHERE utility_id = $1",
            utility_id,
            token_hash(new),
        )
        await audit(conn, utility_id, actor, "webhook_token_rotated", {"previous_valid_until": until.isoformat()})
    shown = None if body.new_token else new  # a generated token is shown once; a supplied one never echoed
    return TokenRotated(utility_id=utility_id, webhook_token=shown, previous_valid_until=until)


async def rotate_hmac_secret(
    conn: Any, utility_id: str, body: HmacRotateIn, actor: str, box: SecretBox | None = None
) -> HmacSecretRotated:
    """A new webhook HMAC secret, sealed; the current one moves, sealed as it is, beside it and still
    verifies signatures for ``overlap_s`` (decision 0932). One overlap at a time: a second rotation
    while the previous secret is still accepted would cut off whoever signs with it, so it is refused
    (``add --replace`` swaps at once)."""
    box = box or credentials_box()
    sealed_new = seal_hmac(box, utility_id, body.new_secret.get_secret_value())
    async with conn.transaction():
        row = await conn.fetchrow(
            """SELECT active, hmac_secret, hmac_secret_encrypted, hmac_previous_expires_at,
                      hmac_previous_expires_at > now() AS previous_open, now() AS db_now
               FROM utilities WHERE utility_id = $1 FOR UPDATE""",
            utility_id,
        )
        if row is None or row["active"] is not True:
            raise OnboardingError(404, "not_found", f"no active utility {utility_id!r}")
        if row["previous_open"]:
            until = row["hmac_previous_expires_at"].isoformat()
            raise OnboardingError(
                409,
                "hmac_rotation_in_progress",
                f"the previous HMAC secret is accepted until {until}: rotate again after that, "
                "or set the secret at once with `energy utility add --replace`",
            )
        current = row["hmac_secret_encrypted"]
        if not current and row["hmac_secret"]:  # a pre-0730 plaintext secret: sealed on its way out
            current = seal_hmac(box, utility_id, row["hmac_secret"])
        until = row["db_now"] + timedelta(seconds=body.overlap_s) if current else None
        await conn.execute(
            """UPDATE utilities SET hmac_previous_secret_encrypted = $2, hmac_previous_expires_at = $3,
                      hmac_secret_encrypted = $4, hmac_secret = '', updated_at = now()
               WHERE utility_id = $1""",
            utility_id,
            current,
            until,
            sealed_new,
        )
        await audit(
            conn,
            utility_id,
            actor,
            "hmac_secret_rotated",
            {"previous_valid_until": until.isoformat() if until else None, "key_id": box.key_id},
        )
    return HmacSecretRotated(utility_id=utility_id, previous_valid_until=until)


@dataclass(frozen=True)
class _SealedSecret:
    """One sealed secret column of ``utilities``: how to open its value and seal it again."""

    column: str
    legacy_column: str | None  # the plaintext column it replaced (emptied when sealed), if any
    has_legacy: Callable[[Any], bool]
    open: Callable[[SecretBox, str, str | None, Any], Any]
    seal: Callable[[SecretBox, str, Any], str]
    update_sql: str  # $1 utility id, $2 the new ciphertext
    audit_event: str


_SEALED_SECRETS = (
    _SealedSecret(
        "ven_credentials_encrypted",
        "ven_credentials",
        lambda legacy: bool(legacy_plaintext(legacy)),
        unseal,
        seal,
        "UPDATE utilities SET ven_credentials_encrypted = $2, ven_credentials = '{}'::jsonb WHERE utility_id = $1",
        "ven_credentials_reencrypted",
    ),
    _SealedSecret(
        "hmac_secret_encrypted",
        "hmac_secret",
        bool,
        unseal_hmac,
        seal_hmac,
        "UPDATE utilities SET hmac_secret_encrypted = $2, hmac_secret = '' WHERE utility_id = $1",
        "hmac_secret_reencrypted",
    ),
    _SealedSecret(
        "hmac_previous_secret_encrypted",
        None,
        lambda _legacy: False,
        unseal_hmac,
        seal_hmac,
        "UPDATE utilities SET hmac_previous_secret_encrypted = $2 WHERE utility_id = $1",
        "hmac_previous_secret_reencrypted",
    ),
)


async def reencrypt_credentials(
    conn: Any, actor: str, box: SecretBox | None = None, utility_ids: list[str] | None = None
) -> dict[str, int]:
    """Seal every utility's VEN credentials and webhook HMAC secret under the current key: plaintext
    rows written before migrations 0660 / 0730, and rows under the previous key (the second step of a
    key rotation). A value no key opens is left as it is and counted (it must be entered again).
    ``utility_ids``: only these utilities (default: all). Counts are per secret, not per row."""
    box = box or credentials_box()
    counts = {"sealed_plaintext": 0, "rotated": 0, "current": 0, "unreadable": 0}
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT utility_id, ven_credentials, ven_credentials_encrypted, hmac_secret, hmac_secret_encrypted,
                      hmac_previous_secret_encrypted
               FROM utilities
               WHERE $1::text[] IS NULL OR utility_id = ANY($1::text[]) ORDER BY utility_id FOR UPDATE""",
            utility_ids,
        )
        for r in rows:
            uid = r["utility_id"]
            for stored in _SEALED_SECRETS:
                sealed = r[stored.column]
                legacy = r[stored.legacy_column] if stored.legacy_column else None
                kind = _reseal_kind(box, sealed, stored.has_legacy(legacy))
                if kind is None:
                    counts["current"] += bool(sealed)
                    continue
                try:
                    value = stored.open(box, uid, sealed, legacy)
                except SecretBoxError:
                    counts["unreadable"] += 1
                    continue
                await conn.execute(stored.update_sql, uid, stored.seal(box, uid, value))
                await audit(conn, uid, actor, stored.audit_event, {"from": kind, "key_id": box.key_id})
                counts[kind] += 1
    return counts


def _reseal_kind(box: SecretBox, encrypted: str | None, plaintext_present: bool) -> str | None:
    """Why a stored secret must be re-sealed ('sealed_plaintext' / 'rotated'), or None (current, or none)."""
    if encrypted:
        return "rotated" if box.needs_rotation(encrypted) else None
    return "sealed_plaintext" if plaintext_present else None


async def remove_utility(conn: Any, utility_id: str, actor: str) -> None:
    """Deactivate (events and audit stay): its webhook tokens stop working and its VEN runtime stops."""
    async with conn.transaction():
        await _require(conn, utility_id)
        await conn.execute("UPDATE utilities SET active = false, updated_at = now() WHERE utility_id = $1", utility_id)
        await conn.execute(
            "UPDATE utility_webhook_tokens SET expires_at = now() WHERE utility_id = $1 AND expires_at IS NULL",
            utility_id,
        )
        await audit(conn, utility_id, actor, "removed", {})


async def _require(conn: Any, utility_id: str) -> None:
    if await conn.fetchval("SELECT active FROM utilities WHERE utility_id = $1", utility_id) is not True:
        raise OnboardingError(404, "not_found", f"no active utility {utility_id!r}")


async def list_utilities(conn: Any) -> list[UtilityOut]:
    ids = [r["utility_id"] for r in await conn.fetch("SELECT utility_id FROM utilities ORDER BY utility_id")]
    return [await show_utility(conn, u) for u in ids]


async def show_utility(conn: Any, utility_id: str) -> UtilityOut:
    row = await conn.fetchrow("SELECT * FROM utilities WHERE utility_id = $1", utility_id)
    if row is None:
        raise OnboardingError(404, "not_found", f"no utility {utility_id!r}")
    tokens = await conn.fetchval(
        """SELECT count(*) FROM utility_webhook_tokens
           WHERE utility_id = $1 AND (expires_at IS NULL OR expires_at > now())""",
        utility_id,
    )
    programs = await conn.fetch(
        """SELECT p.*, (SELECT count(*) FROM facility_enrollments e
                         WHERE e.utility_id = p.utility_id AND e.program_id = p.program_id) AS n
           FROM utility_programs p WHERE p.utility_id = $1 ORDER BY p.program_id""",
        utility_id,
    )
    creds_set = bool(row["ven_credentials_encrypted"]) or bool(legacy_plaintext(row["ven_credentials"]))
    previous_until, now = row["hmac_previous_expires_at"], await conn.fetchval("SELECT now()")
    return UtilityOut(
        utility_id=row["utility_id"],
        name=row["name"],
        vtn_base_url=row["vtn_base_url"],
        openadr_version=row["openadr_version"],
        ven_name=row["ven_name"],
        ven_auth=row["ven_auth"],
        ven_credentials_set=creds_set,
        webhook_tokens_active=int(tokens),
        hmac_set=bool(row["hmac_secret_encrypted"]) or bool(row["hmac_secret"]),
        hmac_previous_valid_until=previous_until if previous_until and previous_until > now else None,
        hmac_required=row["hmac_required"],
        active=row["active"],
        baseline_method=row["baseline_method"],
        programs=[
            ProgramOut(
                program_id=p["program_id"],
                program_name=p["program_name"],
                notice_s=p["notice_s"],
                max_duration_s=p["max_duration_s"],
                dispatch_lead_s=p["dispatch_lead_s"],
                max_events_per_day=p["max_events_per_day"],
                enrolled_facilities=int(p["n"]),
            )
            for p in programs
        ],
        updated_at=row["updated_at"],
    )
