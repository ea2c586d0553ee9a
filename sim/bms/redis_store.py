"""Zone states in Redis, in the format the meter simulator reads (:mod:`sim.building_model`)."""

from __future__ import annotations

import json

import redis

from sim.building_model import zone_state_key


class RedisZoneStore:
    def __init__(self, url: str, timeout_s: float) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=64
        )

    def read(self, facility_id: str) -> dict[str, dict[str, float | None]]:
        raw = self._redis.hgetall(zone_state_key(facility_id))
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
        self._redis.hset(zone_state_key(facility_id), zone_id, value)

    def close(self) -> None:
        self._redis.close()
