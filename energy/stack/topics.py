"""Create Kafka topics idempotently with aiokafka's admin client (bounded by timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics_async(
    bootstrap: str, topics: dict[str, int], timeout_s: float = 20.0, security: Mapping[str, Any] | None = None
) -> list[str]:
    """``security``: :func:`energy.adapters.kafka.security_options` for a TLS/SASL broker."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **dict(security or {})
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        missing = [NewTopic(name, partitions, 1) for name, partitions in topics.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await asyncio.wait_for(admin.create_topics(missing), timeout_s)
        return [t.name for t in missing]
    finally:
        await admin.close()


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 20.0) -> list[str]:
    return asyncio.run(ensure_topics_async(bootstrap, topics, timeout_s))
