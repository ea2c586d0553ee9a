"""Rollup maths (pure): exact expected values worked out by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.domain.lateness import LatenessPolicy, late_windows
from aggregation.domain.rollup import NS, Sample, facility_rollup, meter_rollup, window_start
from aggregation.domain.state import HOUR_NS, FacilityState, RollupParams, WindowKey, rollups_for
from aggregation.lines import raw_line, rollup_line, ts_ns
from energy.adapters.influx import point
from schemas.readings import Anomaly, MeterReading

T0 = 1_700_000_000 // 3600 * 3600 * NS  # an hour boundary


def s(sec: int, kw: float, reg: float) -> Sample:
    return Sample(T0 + sec * NS, kw, reg)


def test_meter_rollup_energy_from_power_is_rectangle_rule_with_nominal_interval():
    samples = [s(0, 4.0, 100.0), s(15, 8.0, 100.02), s(30, 12.0, 100.05), s(45, 0.0, 100.1)]
    r = meter_rollup(samples, prev=None, window_s=60, interval_s=15, max_register_gap_s=3600)
    assert r.energy_kwh == pytest.approx((4 + 8 + 12 + 0) * 15 / 3600, abs=1e-15)
    assert r.avg_kw == 6.0
    assert (r.min_kw, r.max_kw) == (0.0, 12.0)
    assert r.sample_count == 4
    assert r.coverage == 1.0
    # No previous sample: the first sample's increase is unknown; the others sum to 0.1.
    assert r.energy_register_kwh == pytest.approx(0.1, abs=1e-12)


def test_register_energy_uses_previous_sample_before_the_window():
    prev = s(-15, 1.0, 99.9)
    r = meter_rollup([s(0, 1.0, 100.0), s(15, 1.0, 100.2)], prev, 60, 15, 3600)
    assert r.energy_register_kwh == pytest.approx(0.3, abs=1e-12)
    assert r.coverage == 0.5


def test_register_decrease_and_long_gaps_add_nothing():
    r = meter_rollup([s(0, 1.0, 50.0), s(15, 1.0, 49.0), s(30, 1.0, 49.5)], s(-15, 1.0, 10.0), 60, 15, 3600)
    assert r.energy_register_kwh == pytest.approx(40.0 + 0.0 + 0.5)
    far = meter_rollup([s(0, 1.0, 50.0)], Sample(T0 - 3601 * NS, 1.0, 0.0), 60, 15, 3600)
    assert far.energy_register_kwh == 0.0


def test_facility_rollup_sums_meters_and_takes_min_max_of_the_total():
    a = [s(0, 1.0, 0.0), s(15, 3.0, 0.0)]
    b = [s(0, 10.0, 0.0), s(15, 5.0, 0.0), s(30, 2.0, 0.0)]
    ra = meter_rollup(a, None, 60, 15, 3600)
    rb = meter_rollup(b, None, 60, 15, 3600)
    f = facility_rollup([ra, rb], [a, b], 15)
    assert f.energy_kwh == pytest.approx((1 + 3 + 10 + 5 + 2) * 15 / 3600)
    assert f.avg_kw == pytest.approx(2.0 + 17 / 3)
    assert (f.min_kw, f.max_kw) == (2.0, 11.0)  # totals per slot: 11, 8, 2
    assert f.sample_count == 5
    assert f.coverage == pytest.approx((0.5 + 0.75) / 2)


def test_window_start_aligns_to_utc_boundaries():
    t = T0 + (17 * 60 + 42) * NS
    assert window_start(t, 60) == T0 + 17 * 60 * NS
    assert window_start(t, 900) == T0 + 15 * 60 * NS
    assert window_start(t, 3600) == T0


def _loaded(fid: str = "f") -> FacilityState:
    st = FacilityState(fid, RollupParams(15, 3600))
    st.load({-1 + T0 // HOUR_NS, T0 // HOUR_NS, 1 + T0 // HOUR_NS}, [])
    return st


def test_duplicates_do_not_double_count_and_rewrite_the_same_values():
    st = _loaded()
    first = rollups_for(st, st.merge("m1", s(0, 2.0, 1.0)) | st.merge("m1", s(15, 2.0, 1.5)))
    again = rollups_for(st, st.merge("m1", s(0, 2.0, 1.0)))
    by_key = {(r.meter_id, r.key): r.rollup for r in first}
    for row in again:
        assert by_key[(row.meter_id, row.key)] == row.rollup
    one_min = next(r for r in again if r.meter_id is None and r.key.window == "1m")
    assert one_min.rollup.sample_count == 2


def test_late_sample_updates_its_windows_and_the_next_samples_register_window():
    st = _loaded()
    st.merge("m1", s(45, 1.0, 10.0))
    st.merge("m1", s(75, 1.0, 10.6))  # next minute; increase 0.6 booked in minute 1
    affected = st.merge("m1", s(60, 1.0, 10.2))  # late: lands between them
    assert affected == {("m1", T0 + 60 * NS)}  # its minute, which is also the next sample's
    rows = {(r.meter_id, r.key): r.rollup for r in rollups_for(st, affected)}
    minute1 = rows[("m1", WindowKey("1m", T0 + 60 * NS))]
    assert minute1.sample_count == 2
    assert minute1.energy_register_kwh == pytest.approx(0.6)  # 0.2 + 0.4, total unchanged
    assert minute1.energy_kwh == pytest.approx(2 * 15 / 3600)


def test_merging_into_an_unloaded_hour_is_refused():
    st = FacilityState("f")
    with pytest.raises(ValueError, match="not loaded"):
        st.merge("m1", s(0, 1.0, 1.0))


def test_eviction_keeps_newest_hours_and_forgets_samples():
    st = FacilityState("f")
    h = T0 // HOUR_NS
    st.load(range(h, h + 5), [("m1", Sample((h + i) * HOUR_NS, 1.0, 1.0)) for i in range(5)])
    assert st.evict_hours(2) == [h, h + 1, h + 2]
    assert st.sample_count() == 2
    assert st.missing_hours([h, h + 4]) == [h]


POLICY = LatenessPolicy(retention_s=90 * 86_400, retention_margin_s=3600, future_tolerance_s=300, notify_after_s=3600)


def test_only_the_raw_retention_and_the_clock_skew_refuse_a_reading():
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    edge = now - timedelta(days=90) + timedelta(hours=1)  # retention minus the margin
    cases = {
        now - timedelta(days=7): None,  # a week late (our outage): still rolled up
        edge + timedelta(seconds=1): None,
        edge - timedelta(seconds=1): "too_late",
        datetime(1, 1, 1, tzinfo=UTC): "too_late",
        now + timedelta(seconds=300): None,
        now + timedelta(seconds=301): "timestamp_in_future",
        datetime(9999, 12, 31, tzinfo=UTC): "timestamp_in_future",
    }
    assert {ts: POLICY.refusal(ts, now) for ts in cases} == cases


def test_late_readings_announce_their_facility_quarter_hour_once_with_count_and_worst_lateness():
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    q = datetime(2026, 12, 3, 9, 15, tzinfo=UTC)
    readings = [
        ("f1", q + timedelta(seconds=10)),  # late by 2h44m50s
        ("f1", q + timedelta(minutes=14, seconds=59)),
        ("f2", q),
        ("f1", now - timedelta(minutes=59)),  # not late (under 1 h)
    ]
    got = late_windows(readings, now, POLICY)
    assert [(n.facility_id, n.window_start, n.window_end, n.late_readings) for n in got] == [
        ("f1", q, q + timedelta(minutes=15), 2),
        ("f2", q, q + timedelta(minutes=15), 1),
    ]
    assert got[0].max_lateness_s == 2 * 3600 + 44 * 60 + 50


def test_line_protocol_matches_the_shared_point_encoder():
    ts = datetime(2026, 1, 1, 0, 0, 15, 123456, tzinfo=UTC)
    r = MeterReading(
        reading_id=uuid.uuid4(),
        meter_id="fac_1.a:b-1-m01",
        facility_id="fac_1.a:b",
        ts=ts,
        active_power_kw=12.5,
        reactive_power_kvar=-1.25,
        voltage_v=230.1,
        current_a=54.0,
        energy_kwh=1234.5678,
        seq=7,
        anomalies=(Anomaly.NEGATIVE_POWER, Anomaly.VOLTAGE_OUT_OF_RANGE),
        received_at=ts,
    )
    expected = point(
        "readings",
        {"facility_id": "fac_1.a:b", "meter_id": "fac_1.a:b-1-m01"},
        {
            "active_power_kw": 12.5,
            "anomalies": "negative_power,voltage_out_of_range",
            "current_a": 54.0,
            "energy_kwh": 1234.5678,
            "reactive_power_kvar": -1.25,
            "reading_id": str(r.reading_id),
            "seq": 7,
            "voltage_v": 230.1,
        },
        ts_ns(ts),
    )
    assert raw_line(r) == expected
    assert ts_ns(ts) == 1767225615123456000
    st = _loaded()
    row = rollups_for(st, st.merge("m1", s(0, 2.0, 1.0)))[0]
    line = rollup_line(row)
    assert line.startswith(f"meter_rollups,facility_id=f,meter_id=m1,window={row.key.window} ")
    assert line.endswith(f"sample_count=1i {row.key.start_ns}")


# --- property: arrival order, batching and duplicates never change the result -------------


def _direct(samples_by_meter: dict[str, list[Sample]]) -> dict[tuple[str | None, str, int], tuple]:
    """Every window recomputed from scratch with meter_rollup/facility_rollup (no caches)."""
    from aggregation.domain.rollup import WINDOWS

    out = {}
    for name, secs in WINDOWS:
        starts = {window_start(x.ts_ns, secs) for ss in samples_by_meter.values() for x in ss}
        for start in starts:
            per_meter, per_samples = [], []
            for meter_id, ss in sorted(samples_by_meter.items()):
                ordered = sorted(ss, key=lambda x: x.ts_ns)
                inside = [x for x in ordered if start <= x.ts_ns < start + secs * NS]
                if not any(x.valid for x in inside):
                    continue
                before = [x for x in ordered if x.ts_ns < start and x.valid]
                after = [x for x in ordered if x.ts_ns >= start + secs * NS and x.valid]
                r = meter_rollup(inside, before[-1] if before else None, secs, 15, 3600, after[0] if after else None)
                out[(meter_id, name, start)] = r
                per_meter.append(r)
                per_samples.append(inside)
            if per_meter:
                out[(None, name, start)] = facility_rollup(per_meter, per_samples, 15)
    return out


def _close(a, b) -> bool:
    fa, fb = a.fields(), b.fields()
    return all(abs(fa[k] - fb[k]) <= 1e-9 * max(1.0, abs(fb[k])) for k in fa)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 3 * 720 - 1), st.integers(0, 400), st.booleans()),
        min_size=1,
        max_size=120,
    ),
    st.randoms(use_true_random=False),
    st.integers(1, 40),
)
def test_incremental_rollups_equal_direct_recomputation_whatever_the_order_batches_and_duplicates(
    picks, rnd, batch_size
):
    # Slots of 5 s over three hours (meters faster than nominal, irregular gaps); power and a
    # register that only grows with time; about one sample in eight flagged as an anomaly.
    truth: dict[str, dict[int, Sample]] = {}
    for meter_id, slot, kw, flag in picks:
        ts = T0 + slot * 5 * NS
        valid = not (flag and kw % 4 == 0)
        truth.setdefault(meter_id, {})[ts] = Sample(ts, kw / 10, slot * 0.25 + kw / 1000, valid)
    stream = [(m, x) for m, d in truth.items() for x in d.values()]
    stream += rnd.sample(stream, k=len(stream) // 3)  # duplicates
    rnd.shuffle(stream)  # out of order
    state = FacilityState("f", RollupParams(15, 3600))
    latest: dict[tuple[str | None, str, int], object] = {}
    for i in range(0, len(stream), batch_size):
        batch = stream[i : i + batch_size]
        state.load(state.missing_hours(state.hours_needed(x.ts_ns for _, x in batch)), [])
        touched = set()
        for meter_id, x in batch:
            touched |= state.merge(meter_id, x)
        for row in rollups_for(state, touched):
            latest[(row.meter_id, row.key.window, row.key.start_ns)] = row.rollup  # overwrite = InfluxDB
    expected = _direct({m: list(d.values()) for m, d in truth.items()})
    assert set(latest) == set(expected)
    for key, value in expected.items():
        assert _close(latest[key], value), key


# --- valid readings only, real sample spacing, coverage that shows over-sampling ---------


def bad(sec: int, kw: float, reg: float) -> Sample:
    return Sample(T0 + sec * NS, kw, reg, valid=False)


def test_a_5_second_meter_counts_each_sample_for_5_seconds_not_15():
    samples = [s(5 * i, 12.0, 100.0 + i * 12.0 * 5 / 3600) for i in range(12)]  # 12 kW for a minute
    r = meter_rollup(samples, prev=None, window_s=60, interval_s=15, max_register_gap_s=3600, after=s(60, 12.0, 0))
    assert r.energy_kwh == pytest.approx(12.0 / 60, rel=1e-12)  # 0.2 kWh: one minute at 12 kW
    assert r.avg_kw == pytest.approx(12.0, rel=1e-12)
    assert r.coverage == 1.0 and r.sample_count == 12
    assert r.energy_register_kwh == pytest.approx(11 * 12.0 * 5 / 3600, rel=1e-9)


def test_a_gap_is_uncovered_time_not_guessed_energy():
    # 0, 15, then nothing until 45: the sample at 15 holds 15 s (at most the nominal interval).
    r = meter_rollup([s(0, 4.0, 0), s(15, 8.0, 0), s(45, 2.0, 0)], None, 60, 15, 3600)
    assert r.energy_kwh == pytest.approx((4 * 15 + 8 * 15 + 2 * 15) / 3600, rel=1e-12)
    assert r.coverage == pytest.approx(45 / 60)
    # Irregular and faster than nominal: 0 -> 10 -> 15: holds 10, 5, 15.
    r = meter_rollup([s(0, 6.0, 0), s(10, 3.0, 0), s(15, 9.0, 0)], None, 60, 15, 3600)
    assert r.energy_kwh == pytest.approx((6 * 10 + 3 * 5 + 9 * 15) / 3600, rel=1e-12)
    assert r.avg_kw == pytest.approx((6 * 10 + 3 * 5 + 9 * 15) / 30, rel=1e-12)  # time-weighted
    assert r.coverage == pytest.approx(30 / 60)


def test_anomalous_samples_are_counted_but_never_in_energy_average_min_max_or_register():
    samples = [s(0, 10.0, 100.0), bad(15, 1e9, 1e9), s(30, 20.0, 100.1), bad(45, -500.0, 0.0)]
    r = meter_rollup(samples, None, 60, 15, 3600)
    # The valid sample at 0 holds until the next *valid* one (30 s away), capped at 15 s.
    assert r.energy_kwh == pytest.approx((10 * 15 + 20 * 15) / 3600, rel=1e-12)
    assert (r.min_kw, r.max_kw, r.avg_kw) == (10.0, 20.0, 15.0)
    assert (r.sample_count, r.anomaly_count) == (2, 2)
    assert r.energy_register_kwh == pytest.approx(0.1, abs=1e-9)  # 100.0 -> 100.1, the spike skipped
    with pytest.raises(ValueError, match="valid"):
        meter_rollup([bad(0, 1.0, 1.0)], None, 60, 15, 3600)


def test_facility_extremes_take_each_meters_mean_per_slot_so_a_fast_meter_counts_once():
    fast = [s(0, 3.0, 0), s(5, 6.0, 0), s(10, 9.0, 0)]  # one 15 s slot, mean 6
    slow = [s(0, 10.0, 0), s(15, 1.0, 0)]
    ra, rb = meter_rollup(fast, None, 60, 15, 3600), meter_rollup(slow, None, 60, 15, 3600)
    f = facility_rollup([ra, rb], [fast, slow], 15)
    assert (f.min_kw, f.max_kw) == (1.0, 16.0)  # slots: 6 + 10, 1
    assert f.energy_kwh == pytest.approx((3 * 5 + 6 * 5 + 9 * 15 + 10 * 15 + 1 * 15) / 3600, rel=1e-12)


def test_a_late_sample_closer_than_the_interval_rewrites_the_previous_samples_minute():
    st = _loaded()
    st.merge("m1", s(55, 6.0, 1.0))
    st.merge("m1", s(70, 6.0, 1.0))
    touched = st.merge("m1", s(60, 6.0, 1.0))  # 5 s after the sample of minute 0: its hold shrinks
    assert touched == {("m1", T0), ("m1", T0 + 60 * NS)}
    rows = {(r.meter_id, r.key): r.rollup for r in rollups_for(st, touched)}
    assert rows[("m1", WindowKey("1m", T0))].energy_kwh == pytest.approx(6.0 * 5 / 3600, rel=1e-12)
    assert rows[("m1", WindowKey("1m", T0 + 60 * NS))].energy_kwh == pytest.approx(6.0 * 25 / 3600, rel=1e-12)


def test_a_window_with_anomalous_readings_only_has_no_rollup():
    st = _loaded()
    assert rollups_for(st, st.merge("m1", bad(0, 1e9, 0.0))) == []
    rows = rollups_for(st, st.merge("m1", s(15, 2.0, 0.0)))
    one = next(r for r in rows if r.meter_id == "m1" and r.key.window == "1m")
    assert (one.rollup.sample_count, one.rollup.anomaly_count) == (1, 1)


def test_a_dead_letter_of_a_huge_record_is_truncated_below_the_broker_record_limit():
    import base64

    from aggregation.dlq import MAX_DLQ_RAW_BYTES, dead_letter

    raw = b"x" * 3_000_000
    event = dead_letter(raw, "undecodable", "bad", "kafka:t/0@1", b"f", datetime(2026, 1, 1, tzinfo=UTC))
    assert len(event.to_bytes()) < 1_000_000
    assert base64.b64decode(event.payload.raw_b64) == raw[:MAX_DLQ_RAW_BYTES]
    assert event.payload.detail.startswith("raw truncated from 3000000 to 524288 bytes; bad")
