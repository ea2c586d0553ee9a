"""Fault injection for the meter simulator (pure): what a real fleet sends on a bad day."""

from __future__ import annotations

import json
import random
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    MALFORMED_JSON = "malformed_json"  # rejected: invalid_json
    WRONG_TYPE = "wrong_type"  # rejected: schema_mismatch
    OUT_OF_RANGE = "out_of_range"  # kept, flagged as an anomaly (and copied to the DLQ)
    DUPLICATE = "duplicate"  # the same meter+ts sent twice: same reading id
    LATE = "late"  # sent a few ticks after later readings

    @property
    def rejected(self) -> bool:
        return self in (Fault.MALFORMED_JSON, Fault.WRONG_TYPE)


def pick(rng: random.Random, rate: float) -> Fault | None:
    if rate <= 0 or rng.random() >= rate:
        return None
    return rng.choice(list(Fault))


def malformed(payload: bytes, rng: random.Random) -> bytes:
    """Truncated or garbled JSON, as from a meter losing power mid-write."""
    if rng.random() < 0.5:
        return payload[: rng.randint(1, max(1, len(payload) - 2))]
    return payload.replace(b'"', b"", 1).replace(b":", b"=", 1)


def wrong_type(reading: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    field = rng.choice(["active_power_kw", "voltage_v", "seq", "ts"])
    bad = dict(reading)
    bad[field] = {"active_power_kw": str(reading["active_power_kw"]), "voltage_v": None, "seq": "x", "ts": 12345}[field]
    return bad


def out_of_range(reading: dict[str, Any], rng: random.Random, rated_kw: float) -> dict[str, Any]:
    bad = dict(reading)
    kind = rng.choice(["negative_power", "over_rating", "voltage"])
    if kind == "negative_power":
        bad["active_power_kw"] = -abs(reading["active_power_kw"]) - 1.0
    elif kind == "over_rating":
        bad["active_power_kw"] = round(rated_kw * 3.0, 3)
    else:
        bad["voltage_v"] = 480.0
    return bad


def encode(reading: dict[str, Any]) -> bytes:
    return json.dumps(reading, separators=(",", ":")).encode()
