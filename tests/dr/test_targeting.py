"""Target resolution through a program's enrollments (pure): both spellings, fails closed."""

from __future__ import annotations

import pytest

from dr_coordinator.domain.targeting import Enrollment, Target, TargetFormatError, parse_targets, resolve

ENROLLED = [
    Enrollment("fac-1", "peak", "meter-1", frozenset({"north"})),
    Enrollment("fac-2", "peak", None, frozenset({"north", "south"})),
    Enrollment("fac-3", "peak", None, frozenset({"south"})),
    Enrollment("fac-4", "other", None, frozenset({"north"})),  # another program: never reached from "peak"
]


def test_both_spellings_parse_to_the_same_targets():
    assert parse_targets(["fac-1", "north"]) == [Target(None, "fac-1"), Target(None, "north")]
    assert parse_targets([{"type": "resource_name", "values": ["fac-1", "fac-2"]}]) == [
        Target("RESOURCE_NAME", "fac-1"),
        Target("RESOURCE_NAME", "fac-2"),
    ]
    assert parse_targets(None) is None
    with pytest.raises(TargetFormatError):
        parse_targets([42])
    with pytest.raises(TargetFormatError):
        parse_targets([" "])


def test_plain_strings_name_resources_resource_names_or_groups_of_the_program():
    r = resolve(parse_targets(["fac-1", "meter-1", "south"]), "peak", ENROLLED)
    assert r.facility_ids == ("fac-1", "fac-2", "fac-3") and r.unknown_targets == ()


def test_group_valuesmap_resolves_only_inside_the_program():
    r = resolve(parse_targets([{"type": "GROUP", "values": ["north"]}]), "peak", ENROLLED)
    assert r.facility_ids == ("fac-1", "fac-2")  # fac-4 is north too, but in another program


def test_no_targets_means_the_program_not_the_fleet():
    assert resolve(None, "peak", ENROLLED).facility_ids == ("fac-1", "fac-2", "fac-3")
    assert resolve([], "other", ENROLLED).facility_ids == ("fac-4",)
    assert not resolve(None, "unknown-program", ENROLLED).applicable


def test_unknown_targets_dispatch_nothing_and_are_reported():
    r = resolve(parse_targets(["fac-2", "fac-999", "fac-4"]), "peak", ENROLLED)
    assert r.facility_ids == ("fac-2",)
    assert r.unknown_targets == ("fac-999", "fac-4")  # fac-4 exists, but not in this program
    only_unknown = resolve(parse_targets([{"type": "POSTAL_CODE", "values": ["94110"]}]), "peak", ENROLLED)
    assert not only_unknown.applicable and only_unknown.unknown_targets == ("POSTAL_CODE:94110",)


def test_ven_name_targets_every_resource_of_the_program_only_for_our_ven():
    ours = resolve(parse_targets([{"type": "VEN_NAME", "values": ["ven-a"]}]), "peak", ENROLLED, ven_name="ven-a")
    assert ours.facility_ids == ("fac-1", "fac-2", "fac-3")
    other = resolve(parse_targets(["ven-b"]), "peak", ENROLLED, ven_name="ven-a")
    assert not other.applicable and other.unknown_targets == ("ven-b",)
