"""redis-py asyncio client with the settings' socket timeouts (100 ms by default)."""

from __future__ import annotations

from redis.asyncio import Redis

from energy.settings import RedisSettings


def make_redis(settings: RedisSettings) -> Redis:
    return Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry_on_timeout=False,
        health_check_interval=0,
    )
