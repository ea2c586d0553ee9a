"""``energy seed``: register the simulated fleet in PostgreSQL (idempotent upserts)."""

from __future__ import annotations

from energy.adapters.postgres import create_pool
from energy.fleet import HOLIDAY_REGION_BY_CITY, TENANTS, build_fleet, token_hash
from energy.settings import PRODUCTION_ENVIRONMENTS, Settings


class SeedRefusedError(Exception):
    """``energy seed`` run where development users, keys and a simulated fleet must never exist."""


def refuse_outside_development(settings: Settings) -> None:
    """The seed writes published passwords and API keys (decision 0501) and a simulated utility:
    in staging and production it stops before connecting to anything."""
    if settings.environment in PRODUCTION_ENVIRONMENTS:
        raise SeedRefusedError(
            f"energy seed creates development users, API keys and a simulated fleet; refused in "
            f"ENERGY_ENVIRONMENT={settings.environment} (nothing was written)"
        )


async def seed_fleet(settings: Settings, facilities: int | None = None, meters_per_facility: int | None = None) -> str:
    refuse_outside_development(settings)
    n = facilities or settings.seed.facilities
    m = meters_per_facility or settings.seed.meters_per_facility
    fleet = build_fleet(n, m)
    ep = settings.endpoints
    bms_base = f"http://127.0.0.1:{ep.bms_sim_port}/bms"
    vtn = f"http://127.0.0.1:{ep.utility_sim_port}/openadr3/3.1.0"
    utility_id = settings.seed.utility_id
    pool = await create_pool(settings.postgres, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO tenants (tenant_id, name) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING",
                list(TENANTS),
            )
            await conn.executemany(
                """INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude,
                                           criticality_tier, peak_kw)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (facility_id) DO UPDATE SET
                     name = EXCLUDED.name, kind = EXCLUDED.kind, timezone = EXCLUDED.timezone,
                     latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
                     criticality_tier = EXCLUDED.criticality_tier, peak_kw = EXCLUDED.peak_kw, updated_at = now()""",
                [
                    (
                        f.facility_id,
                        f.tenant_id,
                        f.name,
                        f.kind,
                        f.timezone,
                        f.latitude,
                        f.longitude,
                        f.criticality_tier,
                        f.peak_kw,
                    )
                    for f in fleet
                ],
            )
            await conn.executemany(
                "UPDATE facilities SET country = $2, subdivision = $3 WHERE facility_id = $1",
                [(f.facility_id, *HOLIDAY_REGION_BY_CITY[f.city]) for f in fleet if f.city in HOLIDAY_REGION_BY_CITY],
            )
            await conn.executemany(
                """INSERT INTO meters (meter_id, facility_id, meter_type, rated_kw)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (meter_id) DO UPDATE SET facility_id = EXCLUDED.facility_id,
                     meter_type = EXCLUDED.meter_type, rated_kw = EXCLUDED.rated_kw, updated_at = now()""",
                [(mt.meter_id, mt.facility_id, mt.meter_type, mt.rated_kw) for f in fleet for mt in f.meters],
            )
            await conn.executemany(
                """INSERT INTO bms_endpoints (facility_id, url) VALUES ($1, $2)
                   ON CONFLICT (facility_id) DO UPDATE SET url = EXCLUDED.url""",
                [(f.facility_id, f"{bms_base}/{f.facility_id}") for f in fleet],
            )
            await conn.executemany(
                """INSERT INTO bms_zones (facility_id, zone_id, kind, name, rated_kw, normal_setpoint_c,
                                          max_setpoint_c, min_lighting_pct, shed_priority)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (facility_id, zone_id) DO UPDATE SET rated_kw = EXCLUDED.rated_kw,
                     normal_setpoint_c = EXCLUDED.normal_setpoint_c, max_setpoint_c = EXCLUDED.max_setpoint_c,
                     min_lighting_pct = EXCLUDED.min_lighting_pct, shed_priority = EXCLUDED.shed_priority""",
                [
                    (
                        f.facility_id,
                        z.zone_id,
                        z.kind,
                        z.name,
                        z.rated_kw,
                        z.normal_setpoint_c,
                        z.max_setpoint_c,
                        z.min_lighting_pct,
                        z.shed_priority,
                    )
                    for f in fleet
                    for z in f.zones
                ],
            )
        # The seeded utility goes through the onboarding path, as an integrator's would (decision 0411).
        from dr_coordinator.adapters import onboarding
        from dr_coordinator.adapters.ven_credentials import credentials_box
        from schemas.utilities import EnrollmentIn, UtilityIn

        async with pool.acquire() as conn:
            await onboarding.add_utility(
                conn,
                UtilityIn(
                    utility_id=utility_id,
                    name="Simulated Utility (OpenADR 3 VTN)",
                    vtn_base_url=vtn,
                    openadr_version="3.1",
                    ven_auth="bearer",
                    ven_token=settings.dr.vtn_token,
                    webhook_token=settings.seed.utility_bearer_token,
                    hmac_secret=settings.seed.utility_hmac_secret,
                ),
                "seed",
                replace=True,
                box=credentials_box(settings.dr),
            )
            await onboarding.enroll(
                conn,
                utility_id,
                EnrollmentIn(program_id="default", facility_ids=[f.facility_id for f in fleet]),
                "seed",
            )
    finally:
        await pool.close()
    meters = sum(len(f.meters) for f in fleet)
    zones = sum(len(f.zones) for f in fleet)
    await seed_api_principals(settings)  # dev users and API keys of the dashboard/API (see below)
    return f"seeded {len(fleet)} facilities, {meters} meters, {zones} BMS zones, utility {utility_id}"


# --- API users and keys (development credentials; see docs/decisions/0501-api-auth.md) ---------

DEV_PASSWORD_SUFFIX = "-dev-password"


def dev_principals() -> list[tuple[str, str, str, str, str]]:
    """(kind, tenant_id, role, login, secret): per tenant an operator, an analyst and a facility
    manager (users, password ``<role>-<tenant>-dev-password``), and an analyst API key
    ``dev-key-<tenant>-analyst``."""
    out = []
    for tenant_id, _ in TENANTS:
        for role in ("operator", "analyst", "facility_manager"):
            login = f"{role.replace('_', '-')}@{tenant_id}.example"
            out.append(("user", tenant_id, role, login, f"{role}-{tenant_id}{DEV_PASSWORD_SUFFIX}"))
        out.append(("api_key", tenant_id, "analyst", f"dev-key-{tenant_id}-analyst", f"dev-key-{tenant_id}-analyst"))
    return out


async def seed_api_principals(settings: Settings) -> str:
    """Idempotently create the development users and API keys of tenant-a and tenant-b, scoped to
    their tenant's seeded facilities (a facility manager: only the tenant's first two)."""
    import uuid

    from api.passwords import hash_password

    refuse_outside_development(settings)

    namespace = uuid.UUID("0b0f5d1c-52a4-4b7e-9d8e-5e0c1a2b3c4d")
    fleet = build_fleet(settings.seed.facilities, settings.seed.meters_per_facility)
    pool = await create_pool(settings.postgres, min_size=1, max_size=2)
    count = 0
    try:
        async with pool.acquire() as conn, conn.transaction():
            for kind, tenant_id, role, login, secret in dev_principals():
                principal_id = uuid.uuid5(namespace, login)
                if kind == "user" and not await conn.fetchval("SELECT 1 FROM users WHERE email = $1", login):
                    await conn.execute(
                        """INSERT INTO users (user_id, tenant_id, email, role, password_hash)
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING""",
                        principal_id,
                        tenant_id,
                        login,
                        role,
                        hash_password(secret),
                    )
                elif kind == "api_key":
                    await conn.execute(
                        """INSERT INTO api_keys (key_id, tenant_id, name, key_hash, role)
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING""",
                        principal_id,
                        tenant_id,
                        login,
                        token_hash(secret),
                        role,
                    )
                own = [f.facility_id for f in fleet if f.tenant_id == tenant_id]
                scope = own[:2] if role == "facility_manager" else own
                await conn.executemany(
                    """INSERT INTO principal_facilities (principal_id, facility_id) VALUES ($1, $2)
                       ON CONFLICT DO NOTHING""",
                    [(principal_id, fid) for fid in scope],
                )
                count += 1
    finally:
        await pool.close()
    return f"seeded {count} API principals (users and keys) for tenants {', '.join(t for t, _ in TENANTS)}"
