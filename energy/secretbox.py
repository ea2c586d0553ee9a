"""Encryption at rest of secrets we must send to third parties (decision 0860).

Some credentials cannot be stored hashed because the platform presents them itself: a utility's
VEN bearer token or OAuth2 client secret at its VTN. They are stored as AES-256-GCM ciphertext;
the key is derived (HKDF-SHA256) from a secret setting, so any random text of the policy's length
works as a key (Terraform's random passwords, Secrets Manager values).

    token = box.encrypt(b"...", context="utility:util-a")   # "v1.<key id>.<base64url(nonce|ciphertext)>"
    box.decrypt(token, context="utility:util-a")

- ``context`` is bound as associated data: a ciphertext copied to another row does not decrypt.
- The key id (8 hex characters of a hash of the derived key) names which key encrypted a value;
  a box holds the current key and optionally the previous one (the rotation window), decrypts with
  either and always encrypts with the current one. :meth:`SecretBox.needs_rotation` tells which
  stored values to re-encrypt.
- A value no key of the box opens raises :class:`SecretBoxError` naming the key ids involved,
  never the value.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
_INFO = b"energy-platform secretbox v1"
_NONCE = 12


class SecretBoxError(Exception):
    """A stored secret cannot be decrypted (wrong or missing key, tampered or malformed value)."""


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"key-id:" + key).hexdigest()[:8]


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM


def _key(secret: str) -> _Key:
    raw = _derive(secret)
    return _Key(_key_id(raw), AESGCM(raw))


def is_ciphertext(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 3 and parts[0] == VERSION and len(parts[1]) == 8


class SecretBox:
    def __init__(self, current: str, previous: str | None = None) -> None:
        self._current = _key(current)
        self._keys = {self._current.id: self._current}
        if previous:
            old = _key(previous)
            self._keys.setdefault(old.id, old)

    @property
    def key_id(self) -> str:
        return self._current.id

    def encrypt(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._current.aead.encrypt(nonce, plaintext, context.encode())
        return f"{VERSION}.{self._current.id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> bytes:
        if not is_ciphertext(token):
            raise SecretBoxError(f"not a {VERSION} ciphertext (stored value malformed)")
        _, key_id, body = token.split(".")
        key = self._keys.get(key_id)
        if key is None:
            known = ", ".join(sorted(self._keys))
            raise SecretBoxError(
                f"encrypted with key {key_id}, which is neither the current nor the previous key ({known}): "
                "set the key it was written with as the previous key, or re-enter the credentials"
            )
        try:
            blob = base64.urlsafe_b64decode(body.encode())
            return key.aead.decrypt(blob[:_NONCE], blob[_NONCE:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise SecretBoxError(
                f"key {key_id}: ciphertext does not authenticate (tampered, or another row's)"
            ) from exc

    def needs_rotation(self, token: str) -> bool:
        """Whether a stored value is not (yet) under the current key: plaintext or an older key."""
        return not is_ciphertext(token) or token.split(".")[1] != self._current.id
