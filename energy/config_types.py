"""Validated value types shared by every settings group (see :mod:`energy.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def validate_host(value: str) -> str:
    if not value or len(value) > 253 or not set(value) <= _HOST_CHARS:
        raise ValueError("must be a hostname or IP address (letters, digits, '.', '-', ':')")
    return value


def validate_name(value: str) -> str:
    if not value or len(value) > 63 or not set(value) <= _NAME_CHARS or not value[0].isalpha():
        raise ValueError("must start with a lowercase letter and use only [a-z0-9_.-], at most 63 chars")
    return value


def validate_printable(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def validate_http_url(value: str) -> str:
    from urllib.parse import urlsplit

    validate_printable(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8080/path")
    validate_host(parts.hostname)
    return value.rstrip("/")


Host = Annotated[str, AfterValidator(validate_host)]
Name = Annotated[str, AfterValidator(validate_name)]
HttpUrl = Annotated[str, AfterValidator(validate_http_url)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
Count = Annotated[int, Field(ge=1, le=10_000_000)]


class SettingsGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


def validate_secret_text(value: str) -> str:
    return validate_printable(value)


def _secret_printable(value: SecretStr) -> SecretStr:
    validate_printable(value.get_secret_value())
    return value


def validate_path(value: Path) -> Path:
    validate_printable(str(value))
    return value


SecretText = Annotated[SecretStr, AfterValidator(_secret_printable)]


@dataclass(frozen=True)
class SecretPolicy:
    """How a secret setting is checked in staging and production (``energy.settings.insecure_settings``).

    Every ``SecretText`` field carries one, as ``Annotated`` metadata beside its default: the
    default is the development value, refused outside local/test.
    """

    min_length: int
    required: bool = True  # unset (None) is refused outside local/test
    local_only: bool = False  # read only in local/test; never checked or needed in staging/production


SafePath = Annotated[Path, AfterValidator(validate_path)]


def _optional_http_url(value: str) -> str:
    return value if value == "" else validate_http_url(value)


def _id_list(value: str) -> str:
    if any(not part or len(part) > 64 or not set(part) <= _ID_CHARS for part in value.split(",")) and value != "":
        raise ValueError("must be a comma-separated list of ids ([A-Za-z0-9_.:-], at most 64 chars each)")
    return value


def _storage_uri(value: str) -> str:
    validate_printable(value)
    if not value or " " in value or not (value.startswith(("s3://", "file://", "/", ".")) or value[0].isalnum()):
        raise ValueError("must be a local path or an s3:// / file:// URI without spaces")
    return value


_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")
OptionalHttpUrl = Annotated[str, AfterValidator(_optional_http_url)]
IdList = Annotated[str, AfterValidator(_id_list)]
StorageUri = Annotated[str, AfterValidator(_storage_uri)]
