"""Every event schema stays compatible with the previous release's (docs/decisions/0204).

``previous_release_jsonschema/`` is a copy of ``schemas/jsonschema/`` as released before
forward compatibility was introduced (git ``cc24f1c``). For every event and major it holds:
- the event still exists at that major;
- every field an old producer sends is still accepted with a type at least as wide (a new
  consumer reads old events), and nothing an old producer may omit became required;
- enums only grow;
- a field this release added is optional (an old producer does not send it);
- unknown fields are allowed (a consumer of this release reads a newer minor's events).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.registry import json_schemas

PREVIOUS = Path(__file__).resolve().parent / "previous_release_jsonschema"
IGNORED_KEYS = {"title", "description", "default", "additionalProperties", "examples"}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return schema


def _incompatibilities(
    old: dict[str, Any], new: dict[str, Any], old_root: dict[str, Any], new_root: dict[str, Any], path: str
) -> list[str]:
    """Where ``new`` refuses a value ``old`` accepted (the checks this test's docstring lists)."""
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    if "anyOf" in old or "anyOf" in new:
        olds = old.get("anyOf", [old])
        news = new.get("anyOf", [new])
        for i, branch in enumerate(olds):
            if not any(not _incompatibilities(branch, nb, old_root, new_root, path) for nb in news):
                problems.append(f"{path}: variant {i} of the previous release is no longer accepted")
        return problems
    if old.get("type") != new.get("type"):
        return [f"{path}: type {old.get('type')!r} became {new.get('type')!r}"]
    if "enum" in old:
        lost = set(old["enum"]) - set(new.get("enum", old["enum"]))
        if lost:
            problems.append(f"{path}: enum values removed {sorted(lost)}")
    if "const" in old and new.get("const", old["const"]) != old["const"]:
        problems.append(f"{path}: const changed")
    for key in ("pattern", "format", "minimum", "maximum", "maxLength", "minLength", "maxItems", "minItems"):
        if key in new and new.get(key) != old.get(key):
            problems.append(f"{path}: {key} {old.get(key)!r} -> {new.get(key)!r} (narrower or different)")
    if old.get("type") == "object":
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        for name, sub in old_props.items():
            if name not in new_props:
                problems.append(f"{path}.{name}: field removed")
            else:
                problems += _incompatibilities(sub, new_props[name], old_root, new_root, f"{path}.{name}")
        newly_required = set(new.get("required", [])) - set(old.get("required", []))
        if newly_required:
            problems.append(f"{path}: newly required {sorted(newly_required)}")
        if new.get("additionalProperties") is False:
            problems.append(f"{path}: unknown fields are refused (a newer minor could not be read)")
    if old.get("type") == "array" and "items" in old:
        problems += _incompatibilities(old["items"], new.get("items", {}), old_root, new_root, f"{path}[]")
    return problems


PREVIOUS_FILES = sorted(PREVIOUS.glob("*.json"))


def test_the_previous_release_fixture_is_complete() -> None:
    assert len(PREVIOUS_FILES) == 8, [p.name for p in PREVIOUS_FILES]


@pytest.mark.parametrize("path", PREVIOUS_FILES, ids=lambda p: p.stem)
def test_event_schema_is_compatible_with_the_previous_release(path: Path) -> None:
    current = json_schemas()
    assert path.name in current, f"{path.name}: event or major version dropped"
    old, new = json.loads(path.read_text()), current[path.name]
    assert _incompatibilities(old, new, old, new, path.stem) == []


def test_the_checker_catches_what_it_claims() -> None:
    """The rules above can fail: each breaking edit of a real schema is reported."""
    name = "meter.reading.v1.json"
    old = json.loads((PREVIOUS / name).read_text())

    def broken(edit: Any) -> list[str]:
        new = json.loads(json.dumps(json_schemas()[name]))
        edit(new["$defs"])
        return _incompatibilities(old, new, old, new, "meter.reading")

    assert broken(lambda d: d["MeterReading"]["properties"].pop("seq"))
    assert broken(lambda d: d["MeterReading"]["properties"]["seq"].update(type="string"))
    assert broken(lambda d: d["MeterReading"].update(additionalProperties=False))
    assert broken(lambda d: d["MeterReading"]["required"].append("anomalies"))
    assert broken(lambda d: d["Anomaly"]["enum"].remove("negative_power"))
    assert broken(lambda d: d["MeterReading"]["properties"]["meter_id"].update(pattern="^x$"))
    assert broken(lambda d: None) == []


def _reading_doc() -> dict[str, Any]:
    from datetime import UTC, datetime

    from schemas.readings import MeterReading, MeterReadingEvent, reading_id

    ts = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    r = MeterReading(
        reading_id=reading_id("m1", ts),
        meter_id="m1",
        facility_id="f1",
        ts=ts,
        active_power_kw=1.5,
        reactive_power_kvar=0.1,
        voltage_v=230.0,
        current_a=2.0,
        energy_kwh=10.0,
        seq=1,
        received_at=ts,
    )
    doc: dict[str, Any] = json.loads(MeterReadingEvent.wrap(r, source="ingestion", occurred_at=ts).to_bytes())
    return doc


def test_a_newer_minor_with_extra_fields_decodes_and_an_other_major_is_refused() -> None:
    from schemas.readings import MeterReadingEvent
    from schemas.registry import IncompatibleVersionError, decode_as, decode_event

    doc = _reading_doc()
    doc["schema_minor"] = 1
    doc["payload"]["power_factor"] = 0.97  # a field of "1.1"
    raw = json.dumps(doc).encode()
    for decoded in (decode_event(raw), decode_as(raw, MeterReadingEvent)):
        assert isinstance(decoded, MeterReadingEvent)
        assert decoded.payload.active_power_kw == 1.5
        assert not hasattr(decoded.payload, "power_factor")
    doc["schema_version"] = 2
    with pytest.raises(IncompatibleVersionError, match="major version 2"):
        decode_as(json.dumps(doc).encode(), MeterReadingEvent)
    with pytest.raises(IncompatibleVersionError):
        decode_event(json.dumps(doc).encode())


def test_a_known_field_of_the_wrong_type_is_still_refused() -> None:
    from pydantic import ValidationError

    from schemas.readings import MeterReadingEvent
    from schemas.registry import decode_as

    doc = _reading_doc()
    doc["payload"]["active_power_kw"] = "12"
    with pytest.raises(ValidationError):
        decode_as(json.dumps(doc).encode(), MeterReadingEvent)
