"""Report interval layouts (3.1 ``reportDescriptor.reportIntervals``, decision 0931): the readings a
resource was measured over, laid out as the event's intervals, cut at their bounds, or as measured.
Expected values computed by hand in each test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dr_coordinator.domain.report import (
    OPEN_INTERVALS,
    SUB_INTERVALS,
    EventInterval,
    IntervalReading,
    build_not_applicable_report,
    event_intervals,
    first_interval_id,
    lay_out,
    report_layout,
)

T0 = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def _r(k: int, n: int, kw: float, base: float = 100.0) -> IntervalReading:
    """A reading over quarter hours [k, k+n) at ``kw`` (its energy: kW x hours)."""
    return IntervalReading(T0 + k * Q, T0 + (k + n) * Q, usage_kwh=kw * n / 4, demand_kw=kw, baseline_kw=base)


# An event of two 30-minute intervals numbered 5 and 6 by the VTN; settlement in quarter hours.
EVENT = [EventInterval(5, T0, T0 + 2 * Q), EventInterval(6, T0 + 2 * Q, T0 + 4 * Q)]
QUARTERS = (_r(0, 1, 60.0), _r(1, 1, 80.0), _r(2, 1, 40.0), _r(3, 1, 50.0))


def test_the_layout_is_the_one_the_descriptors_ask_and_intervals_by_default() -> None:
    assert report_layout(None) == "INTERVALS"
    assert report_layout([{"payloadType": "USAGE"}]) == "INTERVALS"
    assert report_layout([{"payloadType": "USAGE", "reportIntervals": "SUB_INTERVALS"}]) == "SUB_INTERVALS"
    # a payload we do not report asks nothing of us; a value the spec does not define is the default
    assert report_layout([{"payloadType": "STORAGE_CHARGE_LEVEL", "reportIntervals": "OPEN_INTERVALS"}]) == "INTERVALS"
    assert report_layout([{"payloadType": "DEMAND", "reportIntervals": "HOURLY"}]) == "INTERVALS"


def test_intervals_groups_readings_into_the_events_intervals_with_their_ids() -> None:
    out = lay_out(QUARTERS, EVENT, "INTERVALS")
    assert [(r.interval_id, r.start, r.end) for r in out] == [(5, T0, T0 + 2 * Q), (6, T0 + 2 * Q, T0 + 4 * Q)]
    # interval 5: 60 and 80 kW for a quarter hour each = 15 + 20 kWh, mean 70 kW; interval 6: 10 + 12.5, 45 kW
    assert [(r.usage_kwh, r.demand_kw, r.baseline_kw) for r in out] == [(35.0, 70.0, 100.0), (22.5, 45.0, 100.0)]


def test_intervals_cuts_a_reading_that_spans_two_event_intervals() -> None:
    whole = (_r(0, 4, 90.0),)  # one mean over the hour: 90 kWh
    out = lay_out(whole, EVENT, "INTERVALS")
    assert [(r.interval_id, r.usage_kwh, r.demand_kw) for r in out] == [(5, 45.0, 90.0), (6, 45.0, 90.0)]


def test_sub_intervals_keep_the_event_intervals_id_and_their_own_period() -> None:
    out = lay_out(QUARTERS, EVENT, SUB_INTERVALS)
    assert [(r.interval_id, r.start, r.end, r.usage_kwh) for r in out] == [
        (5, T0, T0 + Q, 15.0),
        (5, T0 + Q, T0 + 2 * Q, 20.0),
        (6, T0 + 2 * Q, T0 + 3 * Q, 10.0),
        (6, T0 + 3 * Q, T0 + 4 * Q, 12.5),
    ]
    # a reading across the boundary is cut there, its energy shared by time; what lies after the event goes
    straddling = (_r(1, 2, 80.0), _r(4, 1, 99.0))  # [16:15, 16:45) = 40 kWh; [17:00, 17:15) outside
    cut = lay_out(straddling, EVENT, SUB_INTERVALS)
    assert [(r.interval_id, r.start, r.end, r.usage_kwh) for r in cut] == [
        (5, T0 + Q, T0 + 2 * Q, 20.0),
        (6, T0 + 2 * Q, T0 + 3 * Q, 20.0),
    ]


def test_open_intervals_are_the_readings_as_measured_numbered_in_time_order() -> None:
    out = lay_out(tuple(reversed(QUARTERS)), EVENT, OPEN_INTERVALS)
    assert [(r.interval_id, r.start, r.usage_kwh) for r in out] == [
        (0, T0, 15.0),
        (1, T0 + Q, 20.0),
        (2, T0 + 2 * Q, 10.0),
        (3, T0 + 3 * Q, 12.5),
    ]


def test_missing_energy_is_not_invented_and_uncovered_intervals_are_left_out() -> None:
    gap = (IntervalReading(T0, T0 + Q, usage_kwh=None, demand_kw=None, baseline_kw=100.0), _r(1, 1, 80.0))
    [only] = lay_out(gap, EVENT, "INTERVALS")  # interval 6 has no reading at all
    assert (only.interval_id, only.usage_kwh, only.demand_kw, only.baseline_kw) == (5, None, 80.0, 100.0)


def test_the_events_interval_ids_are_paired_with_the_schedule_in_ascending_order() -> None:
    spans = [(T0, T0 + Q), (T0 + Q, T0 + 2 * Q)]
    event = {"intervals": [{"id": 8, "payloads": []}, {"id": 3, "payloads": []}]}
    assert [i.id for i in event_intervals(event, spans)] == [3, 8]
    # unreadable or not matching the schedule: positions
    assert [i.id for i in event_intervals({}, spans)] == [0, 1]
    assert [i.id for i in event_intervals({"intervals": [{"id": 1}, {"id": 1}]}, spans)] == [0, 1]


def test_a_status_only_report_names_the_events_first_interval() -> None:
    note = {"objectType": "EVENT", "object": {"intervals": [{"id": 4}, {"id": 3}, {"id": True}]}}
    assert first_interval_id(note) == 3  # a notification's object
    assert first_interval_id({"intervals": [{"id": 7}]}) == 7  # the event itself
    assert first_interval_id({"event_id": "platform-json"}) == 0  # none to read
    report = build_not_applicable_report(
        version="3.1", program_id="p", event_id="e", client_name="ven", unknown_targets=["x"], interval_id=3
    )
    assert [i["id"] for i in report["resources"][0]["intervals"]] == [3]
