"""The meter registry and ingestion keys, cached from PostgreSQL and refreshed periodically.

Validation reads the cache synchronously (:meth:`MeterRegistry.get`); a miss may trigger an
early refresh, at most once per ``MISS_REFRESH_S``, so a newly registered meter is accepted
within seconds. If PostgreSQL is down the last loaded registry keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from energy.observability.logging import get_logger
from energy.resilience import RetryPolicy, guarded_call, make_breaker
from ingestion import metrics
from ingestion.domain import MeterInfo

log = get_logger(__name__)
MISS_REFRESH_S = 5.0


@dataclass(frozen=True)
class KeyGrant:
    """What an API key may post: one meter (a meter key), one facility, or any facility (dev key)."""

    key_id: str
    meter_id: str | None = None
    facility_id: str | None = None

    def allows(self, meter: MeterInfo) -> bool:
        if self.meter_id is not None:
            return meter.meter_id == self.meter_id
        return self.facility_id is None or meter.facility_id == self.facility_id


class MeterRegistry:
    def __init__(self, pool: asyncpg.Pool, refresh_s: float, timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._meters: dict[str, MeterInfo] = {}
        self._keys: dict[str, KeyGrant] = {}
        self._loaded_at = 0.0
        self._breaker = make_breaker("postgres-ingestion", fail_max=3, reset_s=10.0)
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded_at > 0

    def get(self, meter_id: str) -> MeterInfo | None:
        return self._meters.get(meter_id)

    def grant(self, key_hash: str) -> KeyGrant | None:
        return self._keys.get(key_hash)

    def stale_for_miss(self) -> bool:
        return time.monotonic() - self._loaded_at > MISS_REFRESH_S

    async def refresh(self) -> None:
        async with self._lock:
            meters, keys = await guarded_call(
                "postgres",
                self._load,
                timeout_s=self._timeout_s,
                breaker=self._breaker,
                retry=RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=1.0),
            )
            self._meters, self._keys = meters, keys
            self._loaded_at = time.monotonic()
            metrics.REGISTRY_METERS.set(len(meters))
            metrics.REGISTRY_AGE.set(time.time())

    async def _load(self) -> tuple[dict[str, MeterInfo], dict[str, KeyGrant]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT meter_id, facility_id, meter_type, rated_kw, nominal_voltage_v, api_key_hash
                   FROM meters WHERE deleted_at IS NULL"""
            )
            key_rows = await conn.fetch(
                "SELECT key_id, key_hash, facility_id FROM ingestion_gateway_keys WHERE revoked_at IS NULL"
            )
        meters = {
            r["meter_id"]: MeterInfo(
                r["meter_id"], r["facility_id"], r["meter_type"], float(r["rated_kw"]), float(r["nominal_voltage_v"])
            )
            for r in rows
        }
        keys = {r["key_hash"]: KeyGrant(r["key_id"], facility_id=r["facility_id"]) for r in key_rows}
        for r in rows:
            if r["api_key_hash"]:
                keys[r["api_key_hash"]] = KeyGrant(f"meter:{r['meter_id']}", meter_id=r["meter_id"])
        return meters, keys

    async def refresh_forever(self) -> None:
        while True:  # a cache refresh every interval, not a retry loop (refresh() retries through the policy)
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the cached registry
                log.warning("registry_refresh_failed", error=f"{type(exc).__name__}: {exc}"[:300])


async def upsert_gateway_key(pool: asyncpg.Pool, key_id: str, key_hash: str, facility_id: str | None) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO ingestion_gateway_keys (key_id, key_hash, facility_id, description)
               VALUES ($1, $2, $3, 'created by energy ingestion')
               ON CONFLICT (key_id) DO UPDATE SET key_hash = EXCLUDED.key_hash,
                 facility_id = EXCLUDED.facility_id, revoked_at = NULL""",
            key_id,
            key_hash,
            facility_id,
        )
