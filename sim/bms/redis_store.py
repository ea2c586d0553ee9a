"""Zone states in Redis, in the format the meter simulator reads (:mod:`sim.building_model`)."""

from __future__ import annotations

import json

import redis

from sim.building_model import REDIS_PREFIX


class RedisZoneStore:
    """``prefix`` defaults to the meter simulator's; tests use their own so they never move the shared buildings."""

    def __init__(self, url: str, timeout_s: float, prefix: str = REDIS_PREFIX) -> None:
        self.prefix = prefix
        # A blocking pool: with more request threads than connections, a thread waits (at most
        # ``timeout_s``) for one instead of failing at once with "Too many connections".
        pool = redis.BlockingConnectionPool.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=64, timeout=timeout_s
        )
        self._redis = redis.Redis(connection_pool=pool)

    def read(self, facility_id: str) -> dict[str, dict[str, float | None]]:
        raw = self._redis.hgetall(self._key(facility_id))
        out: dict[str, dict[str, float | None]] = {}
        for zone_id, value in raw.items():
            state = json.loads(value)
            out[zone_id.decode() if isinstance(zone_id, bytes) else zone_id] = {
                "setpoint_c": state.get("setpoint_c"),
                "lighting_pct": state.get("lighting_pct"),
            }
        return out

    def write(self, facility_id: str, zone_id: str, state: dict[str, float | None]) -> None:
        value = json.dumps({"setpoint_c": state.get("setpoint_c"), "lighting_pct": state.get("lighting_pct")})
        self._redis.hset(self._key(facility_id), zone_id, value)

    def _key(self, facility_id: str) -> str:
        return f"{self.prefix}{facility_id}"

    def close(self) -> None:
        self._redis.close()
