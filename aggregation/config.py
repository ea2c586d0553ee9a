"""Settings of the aggregation worker (``ENERGY_AGGREGATION__*``)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from energy.config_types import Count, Name, SafePath, Seconds, SettingsGroup, StorageUri
from energy.settings_paths import PROJECT_ROOT


class AggregationSettings(SettingsGroup):
    # Lateness (docs/decisions/0202): every reading within the raw retention updates its windows;
    # one older than this is still rolled up and its 15-minute window announced on late_windows_topic.
    allowed_lateness_s: Seconds = 3600.0
    # Readings closer than this to the end of the raw retention are too_late (InfluxDB drops them soon).
    retention_margin_s: Seconds = 3600.0
    # A reading stamped further into the future than this is refused (timestamp_in_future).
    future_tolerance_s: Seconds = 300.0
    batch_max_readings: Count = 5_000
    batch_max_wait_s: Seconds = 0.25
    influx_breaker_fail_max: Count = 5
    influx_breaker_reset_s: Seconds = 10.0
    # Topics and consumer groups (tests point these at their own topics).
    readings_topic: Name = "meter-readings"
    dlq_topic: Name = "meter-readings-dlq"
    late_windows_topic: Name = "meter-late-windows"
    consumer_group: Name = "aggregation"
    archive_group: Name = "aggregation-archive"
    # Rollup maths (see aggregation/domain/rollup.py).
    expected_interval_s: Seconds = 15.0
    max_register_gap_s: Seconds = 3600.0
    # Memory bounds: loaded facility-hours kept per facility, concurrent InfluxDB loads.
    state_hours_per_facility: Annotated[int, Field(ge=3, le=1000)] = 6
    influx_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    influx_lines_per_write: Count = 10_000
    backpressure_max_delay_s: Seconds = 5.0
    # Kafka group tuning: quick joins and rebalances (see docs/decisions/0201).
    # Tansu completes a first join after about half the session timeout (measured: 10 s -> 5 s,
    # 6 s -> 3 s); 6 s still tolerates a busy event loop (heartbeats run in the background).
    session_timeout_ms: Annotated[int, Field(ge=1000, le=300_000)] = 6_000
    heartbeat_interval_ms: Annotated[int, Field(ge=100, le=60_000)] = 1_000
    max_poll_interval_ms: Annotated[int, Field(ge=10_000, le=3_600_000)] = 600_000
    rebalance_timeout_ms: Annotated[int, Field(ge=1000, le=300_000)] = 10_000
    # One writer per window (decision 0210): on revocation, how long the old owner waits for its
    # InfluxDB write in flight before cancelling it; below the rebalance timeout, so the group
    # does not complete the rebalance (and the new owner write) while we still wait.
    revoke_write_wait_s: Annotated[float, Field(ge=0.1, le=120.0)] = 6.0
    # Static membership (KIP-345): a stable id per replica (the pod name) keeps its partitions
    # across a restart within the session timeout instead of rebalancing twice. None: dynamic.
    group_instance_id: Name | None = None
    # Fault point for the kill -9 chaos test, off (0) in every real deployment: the worker
    # SIGKILLs itself after this many successful InfluxDB writes, before acking/committing.
    fault_kill_after_writes: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    lag_update_s: Seconds = 5.0
    faust_commit_interval_s: Seconds = 1.0
    # Faust's application directory (table stores; created at start). Faust's default is
    # "<app id>-data" in the working directory, which a read-only root filesystem refuses:
    # deploy/ points it into the pod's writable /tmp (energy deploy rehearse, decision 0610).
    faust_datadir: SafePath = PROJECT_ROOT / ".stack" / "faust"
    faust_topic_partitions: Annotated[int, Field(ge=1, le=1000)] = 6  # like the readings topic
    # Readings fetched but not yet taken by the agent (its channel of batches): the memory bound
    # while a batch is written, and the read-ahead that keeps the agent busy (0200, 0810).
    faust_stream_buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    # Raw archive: a local folder or an fsspec/pyarrow URI such as s3://bucket/prefix.
    archive_uri: StorageUri = ".stack/archive/readings"
    archive_enabled: bool = True
    archive_batch_max_readings: Count = 50_000
    archive_batch_max_wait_s: Seconds = 10.0

    @model_validator(mode="after")
    def _revoke_wait_within_rebalance(self) -> Self:
        if self.revoke_write_wait_s * 1000 >= self.rebalance_timeout_ms:
            raise ValueError("revoke_write_wait_s must be below rebalance_timeout_ms (decision 0210)")
        return self
