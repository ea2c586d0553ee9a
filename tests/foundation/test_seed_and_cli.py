"""Seed fleet and the `energy` CLI against the real stack."""

from __future__ import annotations

import subprocess
import sys

from energy.fleet import build_fleet
from energy.seed import seed_fleet
from energy.settings import Settings

ENERGY = [sys.executable, "-m", "energy.cli"]


def test_fleet_is_realistic_and_consistent() -> None:
    fleet = build_fleet(20, 10)
    assert len(fleet) == 20
    assert {f.tenant_id for f in fleet} == {"tenant-a", "tenant-b"}
    for f in fleet:
        assert len(f.meters) == 10
        zone_ids = {z.zone_id for z in f.zones}
        assert all(m.zone_id is None or m.zone_id in zone_ids for m in f.meters)
        assert sum(z.rated_kw for z in f.zones if z.kind == "hvac") > 0
        assert all(z.max_setpoint_c >= z.normal_setpoint_c for z in f.zones if z.kind == "hvac")
    assert {f.criticality_tier for f in fleet} >= {1, 2, 3, 4}


async def test_seed_is_idempotent(stack, settings: Settings, pg_pool) -> None:
    await seed_fleet(settings)
    counts = await pg_pool.fetchrow(
        "SELECT (SELECT count(*) FROM facilities WHERE facility_id LIKE 'fac-%') AS f,"
        " (SELECT count(*) FROM meters WHERE meter_id LIKE 'fac-%') AS m,"
        " (SELECT count(*) FROM bms_zones WHERE facility_id LIKE 'fac-%') AS z"
    )
    await seed_fleet(settings)
    again = await pg_pool.fetchrow(
        "SELECT (SELECT count(*) FROM facilities WHERE facility_id LIKE 'fac-%') AS f,"
        " (SELECT count(*) FROM meters WHERE meter_id LIKE 'fac-%') AS m,"
        " (SELECT count(*) FROM bms_zones WHERE facility_id LIKE 'fac-%') AS z"
    )
    assert dict(counts) == dict(again)
    assert counts["f"] >= 20 and counts["m"] >= 200
    url = await pg_pool.fetchval("SELECT url FROM bms_endpoints WHERE facility_id = 'fac-001'")
    assert url.endswith("/bms/fac-001")
    # each city's holiday calendar (DR baselines, decision 0430): fac-001 is in Melbourne, fac-002 San Francisco
    regions = await pg_pool.fetch(
        "SELECT facility_id, country, subdivision FROM facilities WHERE facility_id IN ('fac-001', 'fac-002')"
    )
    assert {r["facility_id"]: (r["country"], r["subdivision"]) for r in regions} == {
        "fac-001": ("AU", "VIC"),
        "fac-002": ("US", "CA"),
    }


def test_cli_stack_status_reports_every_server(stack) -> None:
    out = subprocess.run([*ENERGY, "stack", "status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("postgres", "redis", "mosquitto", "influxdb", "kafka"):
        assert name in out.stdout


def test_cli_stack_up_twice_is_harmless(stack) -> None:
    out = subprocess.run([*ENERGY, "stack", "up"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("already running") == len(stack.servers) == 6


def test_cli_schemas_check_passes_and_db_migrate_is_a_no_op(stack) -> None:
    out = subprocess.run([*ENERGY, "schemas", "check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    out = subprocess.run([*ENERGY, "db", "migrate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "up to date" in out.stdout


def test_cli_rejects_bad_configuration_with_one_clear_message() -> None:
    import os

    env = {**os.environ, "ENERGY_POSTGRES__PORT": "not-a-port"}
    out = subprocess.run([*ENERGY, "stack", "status"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr and "postgres.port" in out.stderr
    assert "Traceback" not in out.stderr
