"""Per-utility VEN credentials at rest: AES-GCM ciphertext in ``utilities.ven_credentials_encrypted``
under ``dr.credentials_key`` (``dr.credentials_previous_key`` during a rotation), bound to the utility
id. Rows written before migration 0660 hold plaintext JSON in ``utilities.ven_credentials``: they are
still read (with a warning) until ``energy utility reencrypt-credentials`` seals them. Decision 0860.

The webhook HMAC secret we verify a utility's signatures with is sealed by the same box in
``utilities.hmac_secret_encrypted`` under its own context (decision 0930, migration 0730).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import structlog

from dr_coordinator.config import DrSettings
from energy.secretbox import SecretBox, SecretBoxError

log = structlog.get_logger("dr.ven_credentials")

__all__ = [
    "SecretBoxError",
    "credentials_box",
    "legacy_plaintext",
    "seal",
    "seal_hmac",
    "unseal",
    "unseal_hmac",
]


@lru_cache(maxsize=8)
def _box(current: str, previous: str | None) -> SecretBox:
    return SecretBox(current, previous)


def credentials_box(dr: DrSettings | None = None) -> SecretBox:
    """The box of these DR settings (default: the process settings)."""
    if dr is None:
        from energy.settings import get_settings

        dr = get_settings().dr
    previous = dr.credentials_previous_key.get_secret_value() if dr.credentials_previous_key else None
    return _box(dr.credentials_key.get_secret_value(), previous)


def _context(utility_id: str) -> str:
    return f"utility:{utility_id}:ven_credentials"


def seal(box: SecretBox, utility_id: str, credentials: dict[str, Any]) -> str:
    return box.encrypt(json.dumps(credentials, sort_keys=True).encode(), _context(utility_id))


def legacy_plaintext(value: Any) -> dict[str, Any]:
    """The pre-0660 plaintext column (jsonb: a dict, or its text)."""
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def unseal(box: SecretBox, utility_id: str, encrypted: str | None, legacy: Any = None) -> dict[str, Any]:
    """The utility's VEN credentials; :class:`SecretBoxError` when the stored ciphertext does not open."""
    if encrypted:
        value = json.loads(box.decrypt(encrypted, _context(utility_id)))
        if not isinstance(value, dict):
            raise SecretBoxError("stored VEN credentials are not an object")
        return value
    plain = legacy_plaintext(legacy)
    if plain:
        log.warning("dr_ven_credentials_plaintext", utility_id=utility_id, hint="energy utility reencrypt-credentials")
    return plain


def _hmac_context(utility_id: str) -> str:
    return f"utility:{utility_id}:hmac_secret"


def seal_hmac(box: SecretBox, utility_id: str, secret: str) -> str:
    return box.encrypt(secret.encode(), _hmac_context(utility_id))


def unseal_hmac(box: SecretBox, utility_id: str, encrypted: str | None, legacy: str | None = None) -> str:
    """The utility's webhook HMAC secret ('' when none is configured); :class:`SecretBoxError` when
    the stored ciphertext does not open. A pre-0730 plaintext value is still returned, with a warning."""
    if encrypted:
        return box.decrypt(encrypted, _hmac_context(utility_id)).decode()
    if legacy:
        log.warning("dr_hmac_secret_plaintext", utility_id=utility_id, hint="energy utility reencrypt-credentials")
    return legacy or ""
