"""Map ENERGY_* variable names onto energy.settings.Settings, the one source of configuration."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

from pydantic import BaseModel

from energy.settings import Settings

PREFIX = "ENERGY_"


def field_path(variable: str) -> tuple[str, ...]:
    """('postgres', 'host') for ENERGY_POSTGRES__HOST; AssertionError naming the bad part otherwise."""
    assert variable.startswith(PREFIX), f"{variable}: not an ENERGY_* variable"
    parts = tuple(p.lower() for p in variable[len(PREFIX) :].split("__"))
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{variable}: Settings has no field {'.'.join(parts[: i + 1])}"
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (
                f"{variable}: {'.'.join(parts[: i + 1])} is not a settings group"
            )
            model = annotation
    return parts


def settings_from(env: dict[str, str]) -> Settings:
    """Build Settings exactly as a process with these variables (and no others) would."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


def value_at(settings: Settings, path: tuple[str, ...]) -> Any:
    obj: Any = settings
    for part in path:
        obj = getattr(obj, part)
    return obj


def is_secret(path: tuple[str, ...]) -> bool:
    """Whether the field is typed as a secret (SecretStr, optional or not), whatever its default."""
    model: Any = Settings
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return "SecretStr" in str(model.model_fields[path[-1]].annotation)
