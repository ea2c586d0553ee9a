"""Prometheus metrics of the ingestion service (documented where defined; see deploy alerts)."""

from __future__ import annotations

from energy.observability.metrics import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "energy_ingestion_messages_received_total", "MQTT messages or HTTP requests received", ["path"]
)
READINGS_VALID = Counter("energy_ingestion_readings_valid_total", "Readings that passed validation", ["path"])
READINGS_INVALID = Counter(
    "energy_ingestion_readings_invalid_total", "Payloads or readings rejected, by reason code", ["path", "reason"]
)
ANOMALIES = Counter("energy_ingestion_anomalies_total", "Readings kept but flagged, by anomaly", ["anomaly"])
DUPLICATES_DROPPED = Counter(
    "energy_ingestion_duplicates_dropped_total", "Exact repeats of delivered readings dropped early"
)
PUBLISHED = Counter("energy_ingestion_published_total", "Records acknowledged by Kafka", ["kind"])
PUBLISH_FAILURES = Counter("energy_ingestion_publish_failures_total", "Failed delivery attempts (retried)", ["error"])
PUBLISH_LATENCY = Histogram(
    "energy_ingestion_publish_latency_seconds",
    "From receipt of a message to Kafka's acknowledgement of all its records",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BACKPRESSURE = Gauge("energy_ingestion_backpressure", "1 while ingestion pushes back, by cause", ["cause"])
HTTP_RESPONSES = Counter("energy_ingestion_http_responses_total", "POST /v1/readings answers by status", ["status"])
REGISTRY_METERS = Gauge("energy_ingestion_registry_meters", "Meters in the cached registry")
REGISTRY_AGE = Gauge("energy_ingestion_registry_refreshed_timestamp_seconds", "When the registry was last loaded")
