"""The simulated fleet, as pure data: facilities, meters, BMS zones and the utility.

``energy seed`` writes it to PostgreSQL; the simulators (meters, BMS) build the same
fleet from the same function, so ids and ratings agree without a shared database read.
A facility's load is the sum of its meters (the seeded fleet has sub-meters only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

KINDS = ("office", "retail", "hospital", "data_centre", "school", "warehouse")
# (city, timezone, latitude, longitude); facilities of one city share a weather grid cell.
CITIES = (
    ("Melbourne", "Australia/Melbourne", -37.81, 144.96),
    ("San Francisco", "America/Los_Angeles", 37.77, -122.42),
    ("New York", "America/New_York", 40.71, -74.01),
    ("London", "Europe/London", 51.51, -0.13),
)
# Public-holiday calendar of each city (ISO country, subdivision; the `holidays` package codes),
# used by DR baselines (decision 0430).
HOLIDAY_REGION_BY_CITY = {
    "Melbourne": ("AU", "VIC"),
    "San Francisco": ("US", "CA"),
    "New York": ("US", "NY"),
    "London": ("GB", "ENG"),
}
TIER_BY_KIND = {"hospital": 1, "data_centre": 2, "office": 3, "school": 3, "retail": 4, "warehouse": 4}
PEAK_KW_BY_KIND = {
    "office": 400.0,
    "retail": 250.0,
    "hospital": 900.0,
    "data_centre": 1500.0,
    "school": 300.0,
    "warehouse": 200.0,
}
# Share of the peak per end use, per kind: (hvac, lighting, plug).
SHARES = {
    "office": (0.45, 0.25, 0.30),
    "retail": (0.40, 0.35, 0.25),
    "hospital": (0.45, 0.20, 0.35),
    "data_centre": (0.35, 0.05, 0.60),
    "school": (0.45, 0.30, 0.25),
    "warehouse": (0.35, 0.40, 0.25),
}
TENANTS = (("tenant-a", "Acme Properties"), ("tenant-b", "Northwind Health & Retail"))


@dataclass(frozen=True)
class Meter:
    meter_id: str
    facility_id: str
    meter_type: str  # hvac | lighting | plug
    rated_kw: float
    zone_id: str | None  # the BMS zone whose load this meter measures


@dataclass(frozen=True)
class Zone:
    zone_id: str
    kind: str  # hvac | lighting
    name: str
    rated_kw: float
    normal_setpoint_c: float | None
    max_setpoint_c: float | None
    min_lighting_pct: float | None
    shed_priority: int


@dataclass(frozen=True)
class Facility:
    facility_id: str
    tenant_id: str
    name: str
    kind: str
    city: str
    timezone: str
    latitude: float
    longitude: float
    criticality_tier: int
    peak_kw: float
    meters: tuple[Meter, ...] = field(default_factory=tuple)
    zones: tuple[Zone, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Utility:
    utility_id: str
    name: str
    vtn_base_url: str


def facility_id(i: int) -> str:
    return f"fac-{i:03d}"


def _split(total: float, parts: int) -> list[float]:
    return [round(total / parts, 1)] * parts


def build_fleet(facilities: int = 20, meters_per_facility: int = 10) -> list[Facility]:
    out = []
    for i in range(1, facilities + 1):
        fid = facility_id(i)
        kind = KINDS[(i - 1) % len(KINDS)]
        city, tz, lat, lon = CITIES[(i - 1) % len(CITIES)]
        # Spread facilities a little around the city centre (same 0.25 degree grid cell).
        jitter = ((i * 37) % 10) / 100.0
        size = 0.6 + ((i * 53) % 9) / 10.0
        peak = round(PEAK_KW_BY_KIND[kind] * size, 1)
        hvac_share, light_share, plug_share = SHARES[kind]
        n = meters_per_facility
        n_hvac = max(1, round(n * 0.4))
        n_light = max(1, round(n * 0.3)) if n > 1 else 0
        n_plug = max(0, n - n_hvac - n_light)
        if n_plug == 0 and n > 2:
            n_light -= 1
            n_plug = 1
        zones: list[Zone] = []
        meters: list[Meter] = []
        m = 0
        for j, kw in enumerate(_split(peak * hvac_share, n_hvac), start=1):
            zid = f"hvac-{j}"
            zones.append(Zone(zid, "hvac", f"HVAC zone {j}", kw, 22.0, 26.0 if kind != "hospital" else 24.0, None, j))
            m += 1
            meters.append(Meter(f"{fid}-m{m:02d}", fid, "hvac", round(kw * 1.3, 1), zid))
        for j, kw in enumerate(_split(peak * light_share, n_light), start=1):
            zid = f"light-{j}"
            zones.append(
                Zone(
                    zid, "lighting", f"Lighting zone {j}", kw, None, None, 50.0 if kind != "hospital" else 80.0, 10 + j
                )
            )
            m += 1
            meters.append(Meter(f"{fid}-m{m:02d}", fid, "lighting", round(kw * 1.3, 1), zid))
        for kw in _split(peak * plug_share, n_plug) if n_plug else []:
            m += 1
            meters.append(Meter(f"{fid}-m{m:02d}", fid, "plug", round(kw * 1.3, 1), None))
        out.append(
            Facility(
                facility_id=fid,
                tenant_id=TENANTS[(i - 1) % 2][0],
                name=f"{city} {kind.replace('_', ' ')} {i}",
                kind=kind,
                city=city,
                timezone=tz,
                latitude=round(lat + jitter / 10, 4),
                longitude=round(lon + jitter / 10, 4),
                criticality_tier=TIER_BY_KIND[kind],
                peak_kw=peak,
                meters=tuple(meters),
                zones=tuple(zones),
            )
        )
    return out


def token_hash(token: str) -> str:
    """Tokens and keys are stored as SHA-256 hex digests, never in clear."""
    return hashlib.sha256(token.encode()).hexdigest()
