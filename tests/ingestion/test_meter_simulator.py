"""The meter simulator: a plausible commercial load, faults by seed, and the BMS link via real Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from energy.adapters.redis import make_redis
from energy.fleet import build_fleet
from schemas.readings import RawReading
from sim.building_model import zone_state_key
from sim.meters.faults import Fault
from sim.meters.profile import hvac_weather_factor, meter_kw, occupancy
from sim.meters.simulator import MeterSimulator, SimConfig

FLEET = build_fleet()
OFFICE = next(f for f in FLEET if f.kind == "office")  # fac-001, Melbourne
RETAIL = next(f for f in FLEET if f.kind == "retail")


def local_noon_utc(facility, year=2026, month=3, day=4):
    from zoneinfo import ZoneInfo

    return datetime(year, month, day, 12, 0, tzinfo=ZoneInfo(facility.timezone)).astimezone(UTC)


def test_office_load_follows_working_hours_and_weekends_in_its_own_timezone():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(OFFICE.timezone)
    wednesday_noon = datetime(2026, 3, 4, 12, tzinfo=tz)
    wednesday_3am = datetime(2026, 3, 4, 3, tzinfo=tz)
    sunday_noon = datetime(2026, 3, 8, 12, tzinfo=tz)
    assert occupancy("office", wednesday_noon) == 1.0
    assert occupancy("office", wednesday_3am) < 0.2
    assert occupancy("office", sunday_noon) < 0.2
    assert occupancy("retail", sunday_noon) == 1.0  # shops open at weekends
    assert occupancy("hospital", wednesday_3am) > 0.8
    total = {
        when: sum(meter_kw(m, OFFICE, when.astimezone(UTC)) for m in OFFICE.meters)
        for when in (wednesday_noon, wednesday_3am, sunday_noon)
    }
    assert total[wednesday_noon] > 2 * total[wednesday_3am]
    assert total[wednesday_noon] > 2 * total[sunday_noon]
    assert total[wednesday_noon] <= sum(m.rated_kw for m in OFFICE.meters)


def test_hvac_share_rises_with_outdoor_temperature():
    assert hvac_weather_factor(30) > hvac_weather_factor(22) > hvac_weather_factor(16)
    assert hvac_weather_factor(2) > hvac_weather_factor(14)  # heating
    hvac = next(m for m in OFFICE.meters if m.meter_type == "hvac")
    summer = local_noon_utc(OFFICE, month=1, day=14)  # Melbourne summer (Wednesday)
    winter = local_noon_utc(OFFICE, month=7, day=15)  # Melbourne winter (Wednesday)
    assert meter_kw(hvac, OFFICE, summer) > meter_kw(hvac, OFFICE, winter)


def test_same_seed_gives_same_readings_and_faults(settings):
    def run(seed):
        sim = MeterSimulator(SimConfig(prefix="p", fault_rate=0.3, seed=seed, facilities=2), settings)
        ts = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
        return [sim.build_tick(t, ts) for t in range(3)], sim.summary

    (a, sa), (b, sb), (c, _) = run(7), run(7), run(8)
    assert a == b and sa.faults == sb.faults
    assert a != c
    assert sa.readings == 3 * 20 and sum(sa.faults.values()) > 0
    clean = MeterSimulator(SimConfig(prefix="p", seed=1, facilities=1), settings)
    for topic, payload, _ in clean.build_tick(0, datetime(2026, 3, 4, 1, 0, tzinfo=UTC)):
        reading = RawReading.model_validate_json(payload)  # without faults every payload is a valid reading
        assert topic == f"p/fac-001/{reading.meter_id}"


def test_every_fault_kind_is_produced_at_a_high_fault_rate(settings):
    sim = MeterSimulator(SimConfig(prefix="p", fault_rate=1.0, seed=1, facilities=3), settings)
    for t in range(5):
        sim.build_tick(t, datetime(2026, 3, 4, 1, t, tzinfo=UTC))
    assert all(sim.summary.faults[f.value] > 0 for f in Fault)
    assert len(sim.summary.rejected) == sim.summary.faults["malformed_json"] + sim.summary.faults["wrong_type"]


async def test_bms_zone_state_in_redis_scales_the_zone_meters_and_redis_down_means_no_change(settings, stack, uid):
    facility = OFFICE
    hvac = next(m for m in facility.meters if m.meter_type == "hvac")
    light = next(m for m in facility.meters if m.meter_type == "lighting")
    redis = make_redis(settings.redis)
    key = zone_state_key(facility.facility_id)
    try:
        before = await redis.hgetall(key)
        await redis.hset(
            key,
            mapping={
                hvac.zone_id: json.dumps({"setpoint_c": 26.0, "lighting_pct": None}),
                light.zone_id: json.dumps({"setpoint_c": None, "lighting_pct": 50.0}),
            },
        )
        sim = MeterSimulator(SimConfig(prefix="p", facilities=1), settings, redis)
        await sim.zones.refresh([facility.facility_id])
        assert abs(sim.zones.factor(facility, hvac) - (1 - 0.12 * 4)) < 1e-9
        assert sim.zones.factor(facility, light) == 0.5
        plug = next(m for m in facility.meters if m.meter_type == "plug")
        assert sim.zones.factor(facility, plug) == 1.0
    finally:
        await redis.delete(key)
        if before:
            await redis.hset(key, mapping=before)
        await redis.aclose()
    dead = MeterSimulator(
        SimConfig(prefix="p", facilities=1), settings, make_redis(settings.redis.model_copy(update={"port": 1}))
    )
    await dead.zones.refresh([facility.facility_id])
    assert dead.zones.factor(facility, hvac) == 1.0


def test_accelerated_and_rate_runs_never_produce_future_timestamps(settings):
    now = datetime(2026, 3, 4, 12, 0, 7, tzinfo=UTC)
    for config in (
        SimConfig(prefix="p", speed=60, duration_s=6),
        SimConfig(prefix="p", speed=3600),
        SimConfig(prefix="p", rate=1000, count=50),
    ):
        sim = MeterSimulator(config, settings)
        start = sim.start_ts(now)
        ticks = sim.total_ticks() or int((config.duration_s or 7 * 86_400 / config.speed) * config.speed / 15)
        assert start + timedelta(seconds=15 * (ticks - 1)) <= now, config
