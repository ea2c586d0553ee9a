"""Prometheus metrics of the aggregation worker and archiver."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram


def _existing(name: str) -> object | None:
    return REGISTRY._names_to_collectors.get(name)  # type: ignore[attr-defined]


def _gauge(name: str, doc: str, labels: list[str]) -> Gauge:
    found = _existing(name)
    return found if isinstance(found, Gauge) else Gauge(name, doc, labels)


# Shared name: another consumer may register the same gauge in the same process.
CONSUMER_LAG = _gauge(
    "energy_kafka_consumer_lag",
    "Messages behind the partition's end (end offset - committed)",
    ["topic", "partition", "group"],
)
READINGS = Counter("energy_aggregation_readings", "Readings handled by outcome", ["outcome"])
POINTS_WRITTEN = Counter("energy_aggregation_points_written", "Points written to InfluxDB", ["kind"])
BATCH_SECONDS = Histogram(
    "energy_aggregation_batch_seconds",
    "Time to load, roll up and write one batch",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKPRESSURE = Gauge("energy_aggregation_backpressure", "1 while consumption is paused because a sink is failing")
STATE_SAMPLES = Gauge("energy_aggregation_state_samples", "Samples held in the rollup state cache")
ARCHIVED = Counter("energy_aggregation_archived", "Readings archived to Parquet")
POINTS_REJECTED = Counter(
    "energy_aggregation_points_rejected", "Points InfluxDB refused for good (4xx, e.g. field type conflict)", ["kind"]
)
LATE_WINDOWS = Counter(
    "energy_aggregation_late_windows", "Facility 15-minute windows changed by late readings (meter.late_window sent)"
)
BATCHES_FENCED = Counter(
    "energy_aggregation_batches_fenced", "Batches not written or not committed because their partitions were revoked"
)
WRITES_CANCELLED = Counter(
    "energy_aggregation_writes_cancelled",
    "InfluxDB writes still in flight after revoke_write_wait_s, cancelled during a revocation",
)
