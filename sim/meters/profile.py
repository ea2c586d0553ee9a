"""A commercial building's load, as pure functions of time, weather and BMS state (no I/O).

Occupancy follows each facility kind's opening hours in its own timezone (weekends quiet
for offices and schools, busy for retail); HVAC load rises with the outdoor temperature
(cooling above 16 C, heating below 12 C); a BMS factor (setpoint raised, lights dimmed)
scales the meters of the zone it commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from energy.fleet import Facility, Meter

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


def occupancy(kind: str, local: datetime) -> float:
    """Share of the building in use, 0..1, ramping over an hour at opening and closing."""
    wd_open, wd_close, sat, sun, closed = HOURS.get(kind, HOURS["office"])
    weekday = local.weekday()
    hours = (wd_open, wd_close) if weekday < 5 else (sat if weekday == 5 else sun)
    if hours is None:
        return closed
    open_h, close_h = hours
    h = local.hour + local.minute / 60 + local.second / 3600
    ramp = min(1.0, max(0.0, h - open_h + 0.5), max(0.0, close_h + 0.5 - h))
    return closed + (1.0 - closed) * ramp


def outdoor_temp_c(latitude: float, local: datetime) -> float:
    """Seasonal (hemisphere-aware) and diurnal (peak mid-afternoon) temperature."""
    day = local.timetuple().tm_yday
    summer_peak_day = 200 if latitude >= 0 else 17
    seasonal = 8.0 * math.cos(2 * math.pi * (day - summer_peak_day) / 365.25)
    diurnal = 5.0 * math.cos(2 * math.pi * (local.hour + local.minute / 60 - 15) / 24)
    return 15.0 + seasonal + diurnal


def hvac_weather_factor(temp_c: float) -> float:
    return min(1.3, 0.3 + 0.07 * max(0.0, temp_c - 16.0) + 0.05 * max(0.0, 12.0 - temp_c))


@dataclass(frozen=True)
class Electrical:
    active_power_kw: float
    reactive_power_kvar: float
    voltage_v: float
    current_a: float


def meter_kw(meter: Meter, facility: Facility, at_utc: datetime, bms_factor: float = 1.0, noise: float = 0.0) -> float:
    """Active power of one meter at a UTC instant; ``noise`` is a relative deviation (e.g. +-0.03)."""
    local = at_utc.astimezone(ZoneInfo(facility.timezone))
    occ = occupancy(facility.kind, local)
    nominal = meter.rated_kw / RATING_HEADROOM
    if meter.meter_type == "hvac":
        kw = nominal * (0.25 + 0.75 * occ) * hvac_weather_factor(outdoor_temp_c(facility.latitude, local))
    elif meter.meter_type == "lighting":
        kw = nominal * (0.1 + 0.9 * occ)
    else:
        kw = nominal * (0.3 + 0.7 * occ)
    return max(0.0, kw * bms_factor * (1.0 + noise))


def electrical(kw: float, voltage_noise: float = 0.0) -> Electrical:
    kvar = kw * math.tan(math.acos(POWER_FACTOR))
    volts = NOMINAL_VOLTAGE_V * (1.0 + voltage_noise)
    amps = math.hypot(kw, kvar) * 1000.0 / volts
    return Electrical(round(kw, 3), round(kvar, 3), round(volts, 2), round(amps, 3))
