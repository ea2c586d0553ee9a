"""redis-py asyncio client with the settings' socket timeouts (100 ms by default)."""

from __future__ import annotations

from redis.asyncio import Redis

from energy.settings import RedisSettings


def make_redis(settings: RedisSettings) -> Redis:
    """With ``tls`` the server certificate and host name are verified (ElastiCache in transit)."""
    return Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        ssl=settings.tls,
        ssl_cert_reqs="required",
        ssl_check_hostname=settings.tls,
        ssl_ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file else None,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry_on_timeout=False,
        health_check_interval=0,
    )
