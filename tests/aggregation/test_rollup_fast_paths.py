"""The engine's hot paths (decision 1010) against straightforward computations, bit for bit.

``combine`` and ``facility_from_meters`` add in one pass; the line protocol inlines the float text.
Each is compared here with the obvious form it replaced (``sum``/``min``/``max`` over the parts,
the shared point encoder of ``energy.adapters.influx``), on generated values: any difference in
a single bit of a sum or a character of a line fails.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.domain.rollup import NS, Partial, Rollup, Sample, combine, facility_from_meters
from aggregation.domain.state import FacilityState, RollupParams, RollupRow, WindowKey, rollups_for
from aggregation.lines import raw_line, reading_ids, rollup_line, ts_ns
from energy.adapters.influx import point
from schemas.readings import Anomaly, MeterReading
from schemas.readings_fast import _SUB_MICROSECOND, has_sub_microsecond_time

finite = st.floats(allow_nan=False, allow_infinity=False)
kw = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)

partials = st.builds(
    Partial,
    energy_kwh=finite,
    covered_s=st.floats(min_value=0, max_value=3600, allow_nan=False),
    count=st.integers(0, 500),
    min_kw=st.one_of(kw, st.just(float("inf"))),
    max_kw=st.one_of(kw, st.just(float("-inf"))),
    register_kwh=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    anomalies=st.integers(0, 50),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), partials), max_size=16))
def test_combine_is_sum_min_max_over_the_present_parts(parts: list[Partial | None]) -> None:
    present = [p for p in parts if p is not None]
    got = combine(parts)
    if not present:
        assert got is None
        return
    expected = Partial(
        sum(p.energy_kwh for p in present),
        sum(p.covered_s for p in present),
        sum(p.count for p in present),
        min(p.min_kw for p in present),
        max(p.max_kw for p in present),
        sum(p.register_kwh for p in present),
        sum(p.anomalies for p in present),
    )
    assert got is not None
    # repr compares floats bit for bit (and tells -0.0 from 0.0)
    assert repr(got) == repr(expected)


rollups = st.builds(
    Rollup,
    energy_kwh=finite,
    energy_register_kwh=finite,
    avg_kw=finite,
    min_kw=finite,
    max_kw=finite,
    sample_count=st.integers(0, 10_000),
    coverage=st.floats(min_value=0, max_value=1),
    anomaly_count=st.integers(0, 100),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(rollups, min_size=1, max_size=12), kw, kw)
def test_facility_from_meters_sums_in_the_meters_order(meters: list[Rollup], low: float, high: float) -> None:
    got = facility_from_meters(meters, low, high)
    assert repr(got) == repr(
        Rollup(
            energy_kwh=sum(r.energy_kwh for r in meters),
            energy_register_kwh=sum(r.energy_register_kwh for r in meters),
            avg_kw=sum(r.avg_kw for r in meters),
            min_kw=low,
            max_kw=high,
            sample_count=sum(r.sample_count for r in meters),
            coverage=sum(r.coverage for r in meters) / len(meters),
            anomaly_count=sum(r.anomaly_count for r in meters),
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(finite, min_size=5, max_size=5),
    st.integers(0, 2**40),
    st.lists(st.sampled_from(list(Anomaly)), max_size=3, unique=True),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)
def test_raw_line_is_the_shared_encoders_line(
    values: list[float], seq: int, anomalies: list[Anomaly], ts: datetime
) -> None:
    power, reactive, voltage, current, register = values
    r = MeterReading(
        reading_id=uuid.uuid4(),
        meter_id="fac-007-m03",
        facility_id="fac-007",
        ts=ts,
        active_power_kw=power,
        reactive_power_kvar=reactive,
        voltage_v=voltage,
        current_a=current,
        energy_kwh=register,
        seq=seq,
        anomalies=tuple(anomalies),
        received_at=ts,
    )
    expected = point(
        "readings",
        {"facility_id": "fac-007", "meter_id": "fac-007-m03"},
        {
            "active_power_kw": power,
            "anomalies": ",".join(a.value for a in anomalies),
            "current_a": current,
            "energy_kwh": register,
            "reactive_power_kvar": reactive,
            "reading_id": str(r.reading_id),
            "seq": seq,
            "voltage_v": voltage,
        },
        ts_ns(ts),
    )
    assert raw_line(r) == expected


@settings(max_examples=200, deadline=None)
@given(rollups, st.sampled_from(["1m", "15m", "1h"]), st.integers(0, 2**62), st.booleans())
def test_rollup_line_is_the_shared_encoders_line(ru: Rollup, window: str, start_ns: int, facility_row: bool) -> None:
    meter_id = None if facility_row else "fac 1,a=b-m01"  # characters a tag must escape
    tags = {"facility_id": "fac 1,a=b"} | ({} if meter_id is None else {"meter_id": meter_id}) | {"window": window}
    measurement = "facility_rollups" if meter_id is None else "meter_rollups"
    fields = {
        "anomaly_count": ru.anomaly_count,
        "avg_kw": ru.avg_kw,
        "coverage": ru.coverage,
        "energy_kwh": ru.energy_kwh,
        "energy_register_kwh": ru.energy_register_kwh,
        "max_kw": ru.max_kw,
        "min_kw": ru.min_kw,
        "sample_count": ru.sample_count,
    }
    line = rollup_line(RollupRow("fac 1,a=b", meter_id, WindowKey(window, start_ns), ru))
    assert line == point(measurement, tags, fields, start_ns)


def test_a_late_sample_between_two_others_rewrites_the_neighbours_windows():
    """The append fast path of ``merge`` must not hide an insertion in the middle of a series."""
    hour = 1_700_000_000 // 3600 * 3600
    state = FacilityState("f", RollupParams(interval_s=15.0))
    state.load([hour // 3600 - 1, hour // 3600, hour // 3600 + 1], [])
    t0 = hour * NS
    state.merge("m1", Sample(t0, 4.0, 100.0))
    state.merge("m1", Sample(t0 + 120 * NS, 4.0, 100.4))
    rollups_for(state, {("m1", t0), ("m1", t0 + 120 * NS)})  # caches filled
    touched = state.merge("m1", Sample(t0 + 65 * NS, 8.0, 100.1))  # lands between them
    # its own minute, the next sample's minute (register increase from it): both rewritten
    assert touched == {("m1", t0 + 60 * NS), ("m1", t0 + 120 * NS)}
    rows = {(r.meter_id, r.key): r.rollup for r in rollups_for(state, touched)}
    later = rows[("m1", WindowKey("1m", t0 + 120 * NS))]
    assert later.energy_register_kwh == 100.4 - 100.1  # by hand: from the inserted sample, not from t0
    assert state.meters["m1"].times == [t0, t0 + 65 * NS, t0 + 120 * NS]
    assert rows[("m1", WindowKey("1m", t0 + 60 * NS))].avg_kw == 8.0


_pieces = [b"0", b"7", b":", b".", b'"', b"T", b"Z", b"-", b"1234567", b":00."]
_time_bytes = st.lists(st.sampled_from(_pieces), max_size=40)


@settings(max_examples=500, deadline=None)
@given(_time_bytes)
def test_the_fast_sub_microsecond_check_is_the_regex_search(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert has_sub_microsecond_time(raw) == (_SUB_MICROSECOND.search(raw) is not None), raw


def test_the_fast_sub_microsecond_check_on_events():
    base = b'{"ts":"2026-01-01T10:00:00.123456Z","active_power_kw":12.12345678,"x":"1:00.1234567"}'
    assert not has_sub_microsecond_time(base.replace(b'"1:00.1234567"', b'"a"'))  # a float's 8 decimals
    assert has_sub_microsecond_time(base)  # a string holding a time-like text: left to pydantic
    assert has_sub_microsecond_time(base.replace(b"00.123456Z", b"00.1234567Z"))
    assert has_sub_microsecond_time(b"9:59.1234567")  # at the very start
    assert not has_sub_microsecond_time(b":59.1234567")  # no digit before the colon


@settings(max_examples=100, deadline=None)
@given(st.lists(st.uuids(), max_size=50))
def test_reading_ids_are_the_uuids_canonical_text(ids: list[uuid.UUID]) -> None:
    class _R:
        def __init__(self, reading_id: uuid.UUID) -> None:
            self.reading_id = reading_id

    assert reading_ids([_R(i) for i in ids]) == [str(i) for i in ids]  # type: ignore[arg-type]
