"""Which enrolled facilities an OpenADR event targets. Pure; fails closed.

Targets come in two spellings: OpenADR 3.1 plain strings (``"fac-012"``) and OpenADR 3.0.1
valuesMaps (``{"type": "RESOURCE_NAME", "values": ["fac-012"]}``). They are resolved only through
the enrollments of the event's program:

- a resource (facility id or the resource name the VTN knows it by) enrolled in the program;
- a GROUP that enrolled resources of the program belong to;
- the VEN's name: every resource enrolled in the program;
- no targets at all: every resource enrolled in the program (never the utility's whole fleet).

A target that resolves to nothing is *unknown*: it dispatches nothing and is reported. An event
whose targets resolve to no facility is *not applicable*: recorded and reported, never widened.
A 3.0.1 valuesMap of a type we do not act on (e.g. POSTAL_CODE) is reported as unknown too.
See ``docs/decisions/0412-dr-targeting-and-event-identity.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

RESOURCE_TYPES = frozenset({"RESOURCE_NAME", "FACILITY_ID", "FACILITY_NAME", "VEN_NAME_FACILITY", "RESOURCE_ID"})
GROUP_TYPES = frozenset({"GROUP"})
VEN_TYPES = frozenset({"VEN_NAME"})
PROGRAM_TYPES = frozenset({"PROGRAM_NAME", "PROGRAM_ID"})


@dataclass(frozen=True)
class Target:
    """One target value; ``kind`` is the 3.0.1 valuesMap type, or None for a 3.1 plain string."""

    kind: str | None
    value: str

    def label(self) -> str:
        return self.value if self.kind is None else f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Enrollment:
    facility_id: str
    program_id: str
    resource_name: str | None = None
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Resolution:
    facility_ids: tuple[str, ...]
    unknown_targets: tuple[str, ...] = ()
    matched: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target label -> facilities

    @property
    def applicable(self) -> bool:
        return bool(self.facility_ids)

    def as_detail(self) -> dict[str, Any]:
        return {
            "facilities": list(self.facility_ids),
            "unknown_targets": list(self.unknown_targets),
            "matched": {k: list(v) for k, v in self.matched.items()},
            "applicable": self.applicable,
        }


class TargetFormatError(ValueError):
    """A target that is neither a string nor a valuesMap."""


def parse_targets(raw: Sequence[Any] | None) -> list[Target] | None:
    """Both spellings into :class:`Target` values; None when the event carries no ``targets``."""
    if raw is None:
        return None
    out: list[Target] = []
    for item in raw:
        if isinstance(item, str):
            if not item.strip():
                raise TargetFormatError("a target string is empty")
            out.append(Target(None, item.strip()))
        elif isinstance(item, dict) and isinstance(item.get("type"), str) and isinstance(item.get("values"), list):
            kind = item["type"].strip().upper()
            out.extend(Target(kind, str(v).strip()) for v in item["values"] if str(v).strip())
        elif hasattr(item, "type") and hasattr(item, "values"):
            kind = str(item.type).strip().upper()
            out.extend(Target(kind, str(v).strip()) for v in item.values if str(v).strip())
        else:
            raise TargetFormatError(f"a target must be a string (3.1) or a {{type, values}} map (3.0.1): {item!r}")
    return out


def resolve(
    targets: Iterable[Target] | None,
    program_id: str,
    enrollments: Iterable[Enrollment],
    *,
    ven_name: str | None = None,
) -> Resolution:
    in_program = [e for e in enrollments if e.program_id == program_id]
    everyone = tuple(sorted({e.facility_id for e in in_program}))
    target_list = list(targets) if targets is not None else None
    if target_list is None or not target_list:
        return Resolution(everyone, (), {"*": everyone} if everyone else {})
    by_resource: dict[str, set[str]] = {}
    by_group: dict[str, set[str]] = {}
    for e in in_program:
        by_resource.setdefault(e.facility_id, set()).add(e.facility_id)
        if e.resource_name:
            by_resource.setdefault(e.resource_name, set()).add(e.facility_id)
        for g in e.groups:
            by_group.setdefault(g, set()).add(e.facility_id)
    chosen: set[str] = set()
    unknown: list[str] = []
    matched: dict[str, tuple[str, ...]] = {}
    for t in target_list:
        hits: set[str] = set()
        if t.kind is None:  # 3.1: a plain string may name a resource, a group or the VEN
            hits = by_resource.get(t.value, set()) | by_group.get(t.value, set())
            if not hits and ven_name is not None and t.value == ven_name:
                hits = set(everyone)
        elif t.kind in RESOURCE_TYPES:
            hits = by_resource.get(t.value, set())
        elif t.kind in GROUP_TYPES:
            hits = by_group.get(t.value, set())
        elif t.kind in VEN_TYPES:
            hits = set(everyone) if ven_name is not None and t.value == ven_name else set()
        elif t.kind in PROGRAM_TYPES:
            hits = set(everyone) if t.value == program_id else set()
        if hits:
            matched[t.label()] = tuple(sorted(hits))
            chosen |= hits
        else:
            unknown.append(t.label())
    return Resolution(tuple(sorted(chosen)), tuple(unknown), matched)


__all__ = [
    "Enrollment",
    "Resolution",
    "Target",
    "TargetFormatError",
    "parse_targets",
    "resolve",
]
