"""Decoder inputs added for issue 14's vic_elec goal: the year-end break in the calendar (only with a year of
history), the day type of the seasonal-naive reference day (a holiday a week before a working day), and
heating/cooling degrees at the target and a week before it. Expected values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.dataset import SeriesData, build_bank
from forecast.model.calendar import calendar_features
from forecast.model.features import ModelSpec, make_batch, spec_for

MELBOURNE = "Australia/Melbourne"  # UTC+11 in December and January (daylight saving)


def test_the_year_end_break_is_christmas_eve_to_new_years_day_in_local_time() -> None:
    times = pd.DatetimeIndex(
        [
            "2025-12-23T12:30Z",  # 23 Dec 23:30 local: not yet
            "2025-12-23T13:30Z",  # 24 Dec 00:30 local: first day
            "2025-12-30T02:00Z",  # 30 Dec 13:00 local
            "2026-01-01T12:30Z",  # 1 Jan 23:30 local: last day
            "2026-01-01T13:30Z",  # 2 Jan 00:30 local: over
            "2026-06-15T02:00Z",  # June
        ]
    )
    with_year = calendar_features(times, MELBOURNE, holidays=set(), day_of_year=True, year_end=True)
    assert with_year.shape[1] == 14
    assert with_year[:, 13].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    without = calendar_features(times, MELBOURNE, holidays=set(), day_of_year=False, year_end=False)
    assert without.shape[1] == 11  # no flag, and the other columns are the same
    assert np.array_equal(without, with_year[:, :11])


def test_the_year_end_flag_comes_only_with_a_year_of_history() -> None:
    # with weeks of history a flag of a break training never saw would be an extrapolation
    short, year = spec_for(15, day_ahead=False), spec_for(60, day_ahead=True, day_of_year=True)
    assert not short.year_end and short.n_calendar == 11
    assert year.year_end and year.n_calendar == 14


def _hourly(days: int, holiday_day: int | None, temp_c: np.ndarray | None = None) -> SeriesData:
    times = pd.date_range("2026-03-01T13:00Z", periods=days * 24, freq="1h")  # local midnight, Monday 2 March
    holiday = np.zeros(len(times), dtype=bool)
    if holiday_day is not None:
        holiday[holiday_day * 24 : (holiday_day + 1) * 24] = True
    load = np.random.default_rng(3).uniform(50, 150, len(times))
    return SeriesData("f", MELBOURNE, times, load, temp_c, holiday)


def test_the_reference_day_type_says_a_holiday_made_last_weeks_load_low() -> None:
    spec = ModelSpec(steps_per_day=24, lookback=24, gap=23, horizon=24, reference_day_type=True)
    series = _hourly(16, holiday_day=8)  # a holiday on Tuesday 10 March; the week after: Tuesday 17 March
    bank = build_bank([series], spec)
    # the first target is a day after the origin: targets day 15 (Tuesday 17 March) and day 14 (Monday 16)
    b = make_batch(bank, spec, np.array([15 * 24 - 24, 14 * 24 - 24]), with_targets=False)
    reference_type = b.dec[..., spec.n_calendar + 7]  # after the calendar, 4 temperatures, 2 loads and the lead
    assert spec.day_type_columns == [10] and spec.dec_features == spec.n_calendar + 8
    assert reference_type[0].tolist() == [1.0] * 24  # the reference day (10 March) was a holiday
    assert reference_type[1].tolist() == [0.0] * 24  # Monday 9 March was a working day
    assert b.dec[0, :, 10].tolist() == [0.0] * 24  # the target itself is a working day


def test_heating_and_cooling_degrees_at_the_target_and_a_week_before() -> None:
    spec = ModelSpec(steps_per_day=24, lookback=24, gap=23, horizon=24, degrees=True)
    days = 16
    temp = np.repeat(np.array([10.0, 30.0, 20.0, 14.0, 25.0, 18.0, 22.0] * 3)[:days], 24)
    bank = build_bank([_hourly(days, None, temp)], spec)
    b = make_batch(bank, spec, np.array([14 * 24 - 24]), with_targets=False)  # targets: day 14 (10 C)
    first = spec.n_calendar + 7
    heating, cooling = b.dec[0, :, first], b.dec[0, :, first + 1]
    heating_week, cooling_week = b.dec[0, :, first + 2], b.dec[0, :, first + 3]
    # 10 C at the target: 8 heating degrees below 18 C, in units of 10 C; none of cooling
    assert np.allclose(heating, 0.8) and np.allclose(cooling, 0.0)
    # day 7 (a week before) was also 10 C; day 15 (30 C): 0.8 cooling degrees above 22 C
    assert np.allclose(heating_week, 0.8) and np.allclose(cooling_week, 0.0)
    b2 = make_batch(bank, spec, np.array([15 * 24 - 24]), with_targets=False)
    assert np.allclose(b2.dec[0, :, first], 0.0) and np.allclose(b2.dec[0, :, first + 1], 0.8)
    assert spec.dec_features == spec.n_calendar + 11


def test_a_spec_saved_before_these_inputs_loads_with_them_off() -> None:
    saved = spec_for(15, day_ahead=False).to_json()
    for key in ("year_end", "reference_day_type", "degrees", "encoder_reference"):
        del saved[key]
    old = ModelSpec.from_json(saved)
    assert not (old.year_end or old.reference_day_type or old.degrees or old.encoder_reference)
    # the shipped artefacts' widths and history
    assert old.dec_features == old.n_calendar + 7 and old.enc_features == old.n_calendar + 2
    assert old.history_needed == 7 * 96


def test_the_encoder_sees_the_load_a_week_before_each_of_its_steps() -> None:
    spec = ModelSpec(steps_per_day=24, lookback=24, gap=23, horizon=24, encoder_reference=True)
    # the encoder's week-earlier steps must lie in the series: a day of encoder plus a week before it
    assert spec.history_needed == 24 + 7 * 24 and spec.enc_features == 2 + spec.n_calendar + 2
    days = 10
    load = np.concatenate([np.full(7 * 24, 50.0), np.full(3 * 24, 100.0)])  # last week half of this one
    temp = np.concatenate([np.full(7 * 24, 5.0), np.full(3 * 24, 25.0)])
    series = SeriesData("f", MELBOURNE, pd.date_range("2026-03-01T13:00Z", periods=days * 24, freq="1h"), load, temp)
    b = make_batch(build_bank([series], spec), spec, np.array([8 * 24 - 1]), with_targets=False)
    # encoder: day 7 (100 each, scale 100); a week before: day 0 (50, i.e. 0.5 of the scale; 5 C = -1.0)
    assert b.scale.tolist() == [100.0]
    assert np.allclose(b.enc[0, :, 0], 1.0) and np.allclose(b.enc[0, :, -2], 0.5)
    assert np.allclose(b.enc[0, :, 1], 1.0) and np.allclose(b.enc[0, :, -1], -1.0)
