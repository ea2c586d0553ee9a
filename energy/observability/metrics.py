"""Prometheus metrics: one process-wide registry, exposed on each service's ``/metrics``.

Metric names are prefixed ``energy_`` and documented where they are defined; the alert
rules in ``deploy/prometheus/alerts.yml`` refer to them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "BREAKER_STATE",
    "CONTENT_TYPE_LATEST",
    "DEPENDENCY_CALLS",
    "QUEUE_DEPTH",
    "REGISTRY",
    "RETRIES",
    "Counter",
    "Gauge",
    "Histogram",
    "render",
]

BREAKER_STATE = Gauge(
    "energy_breaker_open",
    "1 while the circuit breaker of a dependency is open (or half-open), else 0",
    ["breaker"],
)
BREAKER_TRANSITIONS = Counter("energy_breaker_transitions_total", "Circuit breaker state changes", ["breaker", "state"])
DEPENDENCY_CALLS = Counter(
    "energy_dependency_calls_total",
    "Calls to a dependency by outcome (ok, timeout, transient_error, error, rejected_open)",
    ["dependency", "outcome"],
)
RETRIES = Counter(
    "energy_retries_total",
    "Retries scheduled by the retry policy (energy.resilience), by dependency and error type; "
    "session_ended: a long healthy session failed and was restarted at once",
    ["dependency", "error"],
)
DEPENDENCY_LATENCY = Histogram(
    "energy_dependency_latency_seconds",
    "Latency of calls to a dependency",
    ["dependency"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEPENDENCY_UP = Gauge(
    "energy_dependency_up",
    "1 when a dependency answered its readiness check at the last scrape, else 0",
    ["service", "dependency"],
)
READY = Gauge("energy_ready", "1 when the process was ready at the last scrape, else 0", ["service"])
QUEUE_DEPTH = Gauge("energy_queue_depth", "Items waiting in an in-process bounded queue", ["queue"])
QUEUE_CAPACITY = Gauge("energy_queue_capacity", "Capacity of an in-process bounded queue", ["queue"])


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
