"""A commercial building's load, as pure functions of time, weather and BMS state (no I/O).

Occupancy follows each facility kind's opening hours in its own timezone (weekends quiet
for offices and schools, busy for retail; a public holiday of the facility's region keeps
Sunday hours); HVAC load rises with the outdoor temperature of the weather simulator at the
facility (cooling above 16 C, heating below 12 C), so the load the meters report and the
weather the forecast reads are the same weather; a BMS factor (setpoint raised, lights dimmed)
scales the meters of the zone it commands. The live meter simulator and the seeded history
(:mod:`sim.meters.history`) both compute load here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import numpy as np
import numpy.typing as npt

from energy.fleet import HOLIDAY_REGION_BY_CITY, Facility, Meter
from sim.weather.model import temperature_c

RATING_HEADROOM = 1.3  # energy.fleet rates each meter at 1.3 x its zone's nominal load
POWER_FACTOR = 0.92
NOMINAL_VOLTAGE_V = 230.0

# (weekday open, weekday close, saturday (open, close) or None, sunday (open, close) or None, base when closed)
HOURS: dict[str, tuple[float, float, tuple[float, float] | None, tuple[float, float] | None, float]] = {
    "office": (8, 18, None, None, 0.12),
    "retail": (9, 21, (9, 21), (10, 17), 0.15),
    "hospital": (0, 24, (0, 24), (0, 24), 0.85),
    "data_centre": (0, 24, (0, 24), (0, 24), 0.95),
    "school": (8, 16, None, None, 0.08),
    "warehouse": (6, 22, (8, 14), None, 0.15),
}


def occupancy(kind: str, local: datetime, holiday: bool = False) -> float:
    """Share of the building in use, 0..1, ramping over an hour at opening and closing; on a public
    holiday the building keeps its Sunday hours."""
    wd_open, wd_close, sat, sun, closed = HOURS.get(kind, HOURS["office"])
    weekday = 6 if holiday else local.weekday()
    hours = (wd_open, wd_close) if weekday < 5 else (sat if weekday == 5 else sun)
    if hours is None:
        return closed
    open_h, close_h = hours
    h = local.hour + local.minute / 60 + local.second / 3600
    ramp = min(1.0, max(0.0, h - open_h + 0.5), max(0.0, close_h + 0.5 - h))
    return closed + (1.0 - closed) * ramp


@lru_cache(maxsize=256)
def _holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays_lib.country_holidays(country, subdiv=subdivision or None, years=[year]).keys())


def is_holiday(facility: Facility, day: date) -> bool:
    """A public holiday of the facility's region (the calendar DR baselines exclude, decision 0430)."""
    region = HOLIDAY_REGION_BY_CITY.get(facility.city)
    return region is not None and day in _holidays(region[0], region[1], day.year)


def outdoor_temp_c(facility: Facility, at_utc: datetime) -> float:
    """The weather simulator's temperature at the facility (sim/weather/model.py)."""
    return temperature_c(facility.latitude, facility.longitude, at_utc)


Kw = TypeVar("Kw", float, npt.NDArray[np.float64])  # one instant, or many (the history generator)


def hvac_weather_factor(temp_c: Kw) -> Kw:
    factor = np.minimum(1.3, 0.3 + 0.07 * np.maximum(0.0, temp_c - 16.0) + 0.05 * np.maximum(0.0, 12.0 - temp_c))
    return factor if isinstance(factor, np.ndarray) else float(factor)  # type: ignore[return-value]


@dataclass(frozen=True)
class Electrical(Generic[Kw]):
    active_power_kw: Kw
    reactive_power_kvar: Kw
    voltage_v: Kw
    current_a: Kw


def meter_kw(meter: Meter, facility: Facility, at_utc: datetime, bms_factor: float = 1.0, noise: float = 0.0) -> float:
    """Active power of one meter at a UTC instant; ``noise`` is a relative deviation (e.g. +-0.03)."""
    local = at_utc.astimezone(ZoneInfo(facility.timezone))
    occ = occupancy(facility.kind, local, is_holiday(facility, local.date()))
    return meter_kw_from(meter, occ, outdoor_temp_c(facility, at_utc), bms_factor, noise)


def meter_kw_from(meter: Meter, occ: Kw, temp_c: Kw, bms_factor: float = 1.0, noise: Kw | float = 0.0) -> Kw:
    """Active power of one meter given its building's occupancy and the outdoor temperature, at one
    instant (floats) or many (arrays of the same length: the history generator)."""
    nominal = meter.rated_kw / RATING_HEADROOM
    if meter.meter_type == "hvac":
        kw = nominal * (0.25 + 0.75 * occ) * hvac_weather_factor(temp_c)
    elif meter.meter_type == "lighting":
        kw = nominal * (0.1 + 0.9 * occ)
    else:
        kw = nominal * (0.3 + 0.7 * occ)
    out = np.maximum(0.0, kw * bms_factor * (1.0 + noise))
    return out if isinstance(out, np.ndarray) else float(out)  # type: ignore[return-value]


def initial_register(meter_id: str) -> float:
    """The cumulative energy register (kWh) a simulated meter starts from."""
    return float(10_000 + sum(meter_id.encode()) * 37 % 50_000)


def electrical(kw: Kw, voltage_noise: Kw | float = 0.0) -> Electrical[Kw]:
    """Reactive power, voltage and current beside the active power (rounded as a meter reports them)."""
    kvar = kw * math.tan(math.acos(POWER_FACTOR))
    volts = NOMINAL_VOLTAGE_V * (1.0 + voltage_noise)
    amps = np.hypot(kw, kvar) * 1000.0 / volts
    if isinstance(kw, np.ndarray):
        return Electrical(np.round(kw, 3), np.round(kvar, 3), np.round(volts, 2), np.round(amps, 3))
    return Electrical(round(kw, 3), round(float(kvar), 3), round(float(volts), 2), round(float(amps), 3))
