"""Pure helpers of the API: time slicing, timestamp formatting, CSV cells, dashboard alerts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.csv_export import cell, local_text, utc_text
from api.routes.dashboard import alerts_for
from api.timeseries import from_ns, iso_ns, time_slices, to_ns
from schemas.api import AlertKind

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@settings(deadline=None, max_examples=200)
@given(st.integers(1, 10**7), st.integers(1, 2000))
def test_time_slices_cover_the_range_exactly_without_gaps_or_overlaps(length_s, pieces):
    slice_s = max(1, length_s // pieces)
    start, end = T0, T0 + timedelta(seconds=length_s)
    slices = time_slices(start, end, slice_s)
    assert slices[0][0] == start and slices[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
    assert all(timedelta(0) < e - s <= timedelta(seconds=slice_s) for s, e in slices)


@given(st.integers(0, 4_102_444_800 * 10**6))
def test_iso_ns_is_exact_utc_and_round_trips(us):
    ns = us * 1000  # microsecond-aligned, which datetime can hold
    text = iso_ns(ns)
    assert text.endswith("Z")
    assert to_ns(datetime.fromisoformat(text[:-1] + "+00:00")) == ns
    assert to_ns(from_ns(ns)) == ns


def test_iso_ns_keeps_nanoseconds_and_drops_trailing_zeros():
    assert iso_ns(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert iso_ns(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert iso_ns(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


def test_csv_cells_write_numbers_exactly_and_missing_as_empty():
    assert cell(None) == "" and cell(0.1) == "0.1" and cell(1 / 3) == repr(1 / 3) and cell(40) == "40"
    assert cell(True) == "true"


def test_alerts_for_each_condition():
    now = T0
    fresh = {"current_kw": 95.0, "as_of": (now - timedelta(seconds=30)).isoformat()}
    assert alerts_for(fresh, 100.0, False, now, False) == [AlertKind.NEAR_PEAK]
    assert alerts_for({**fresh, "current_kw": 10.0}, 100.0, True, now, False) == [AlertKind.DR_ACTIVE]
    old = {"current_kw": 10.0, "as_of": (now - timedelta(minutes=10)).isoformat()}
    assert alerts_for(old, 100.0, False, now, False) == [AlertKind.STALE_DATA]
    assert alerts_for({"current_kw": None, "as_of": None}, 100.0, False, now, False) == [AlertKind.NO_DATA]
    assert alerts_for(None, None, False, now, False) == [AlertKind.NO_DATA]
    assert alerts_for(fresh, 100.0, False, now, True) == [AlertKind.DATA_UNAVAILABLE]


@pytest.mark.parametrize(
    ("zone", "utc", "local"),
    [  # worked by hand from each zone's published DST rules
        ("Europe/London", "2026-03-29T00:59:59Z", "2026-03-29T00:59:59+00:00"),
        ("Europe/London", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00+01:00"),  # BST starts 01:00 UTC
        ("America/Los_Angeles", "2026-11-01T08:30:00Z", "2026-11-01T01:30:00-07:00"),  # first 01:30 (PDT)
        ("America/Los_Angeles", "2026-11-01T09:30:00Z", "2026-11-01T01:30:00-08:00"),  # second 01:30 (PST)
        ("Australia/Melbourne", "2026-04-04T15:30:00Z", "2026-04-05T02:30:00+11:00"),  # AEDT ends 16:00 UTC
        ("Australia/Melbourne", "2026-04-04T16:30:00Z", "2026-04-05T02:30:00+10:00"),
    ],
)
def test_local_time_carries_the_offset_that_disambiguates_dst(zone: str, utc: str, local: str) -> None:
    moment = datetime.fromisoformat(utc)
    assert utc_text(moment) == utc
    assert local_text(moment, ZoneInfo(zone)) == local
    assert datetime.fromisoformat(local) == moment


def test_times_have_one_fixed_precision_per_column() -> None:
    ns = 1_700_000_000_120_000_000
    assert utc_text(ns, "microseconds") == "2023-11-14T22:13:20.120000Z"
    assert utc_text(1_700_000_000_000_000_000, "microseconds") == "2023-11-14T22:13:20.000000Z"
    assert local_text(ns, ZoneInfo("Asia/Kolkata"), "microseconds") == "2023-11-15T03:43:20.120000+05:30"
