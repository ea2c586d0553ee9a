"""Typed settings: defaults point at the local stack; every field rejects hostile input clearly."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from energy.settings import Settings

HOSTILE = "'; DROP TABLE facilities; --\n\x1b[31m$(rm -rf /)"  # env values cannot hold NUL


def _leaf_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        ann: Any = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_leaf_fields(ann, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


LEAVES = _leaf_fields(Settings)


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ENERGY_")]:
        monkeypatch.delenv(name)
    s = Settings()
    assert s.postgres.host == "127.0.0.1" and s.postgres.port == 55432
    assert s.kafka.bootstrap_servers == "127.0.0.1:59092"
    assert s.influx.url == "http://127.0.0.1:58086"
    assert s.redis.timeout_s == 0.1
    assert s.dr.bms_connect_timeout_s == 2.0 and s.dr.bms_total_timeout_s == 5.0


def test_every_group_is_covered() -> None:
    groups = {leaf[0] for leaf in LEAVES}
    assert {
        "postgres",
        "redis",
        "mqtt",
        "influx",
        "kafka",
        "ingestion",
        "aggregation",
        "forecast",
        "dr",
        "api",
    } <= groups
    assert len(LEAVES) > 50


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: "__".join(leaf))
def test_hostile_string_in_every_field_gets_a_clear_error(
    leaf: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = "ENERGY_" + "__".join(part.upper() for part in leaf)
    monkeypatch.setenv(env, HOSTILE)
    with pytest.raises((ValidationError, SettingsError)) as err:
        Settings()
    # The error names the offending setting, so an operator knows which variable to fix. Structured
    # settings (JSON values) fail while parsing, and pydantic-settings names their group.
    expected = ".".join(leaf) if isinstance(err.value, ValidationError) else f'"{leaf[0]}"'
    assert expected in str(err.value)


def test_environment_overrides_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGY_POSTGRES__PORT", "6543")
    monkeypatch.setenv("ENERGY_DR__BMS_TOTAL_TIMEOUT_S", "7.5")
    s = Settings()
    assert s.postgres.port == 6543
    assert s.dr.bms_total_timeout_s == 7.5


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("ENERGY_POSTGRES__PORT", "70000"),
        ("ENERGY_REDIS__TIMEOUT_S", "-1"),
        ("ENERGY_INFLUX__URL", "ftp://127.0.0.1:1"),
        ("ENERGY_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:59092,evil host"),
        ("ENERGY_ENVIRONMENT", "prod;"),
    ],
)
def test_out_of_range_values_are_rejected(env: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError):
        Settings()


def test_password_is_not_printed() -> None:
    s = Settings()
    assert "energy" not in repr(s.postgres.password)
    assert s.postgres.dsn().startswith("postgresql://energy:")
