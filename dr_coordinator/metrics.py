"""Prometheus metrics of the DR coordinator (alert rules refer to these names)."""

from __future__ import annotations

from energy.observability.metrics import Counter, Gauge, Histogram

SAGA_TRANSITIONS = Counter("energy_dr_transitions_total", "DR saga state changes", ["scope", "to_state"])
BMS_COMMANDS = Counter(
    "energy_dr_bms_commands_total", "BMS command attempts by outcome (ok, duplicate, transient, rejected)", ["outcome"]
)
BMS_COMMANDS_FAILED = Counter(
    "energy_dr_bms_commands_failed_total", "BMS commands failed for good (sent to the DLQ): alert on any increase"
)
BMS_COMMAND_LATENCY = Histogram(
    "energy_dr_bms_command_seconds", "Time to execute one BMS command", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
)
DISPATCH_SECONDS = Histogram(
    "energy_dr_dispatch_seconds",
    "Per DR event: seconds from its start (or receipt, if later) until every facility was dispatched; 0 = in time",
    buckets=(0.5, 5, 15, 30, 60, 120, 300, 600, 1800),
)
BMS_COMMANDS_DUE = Gauge("energy_dr_bms_commands_due", "BMS commands pending or in flight")
OUTBOX_BACKLOG = Gauge("energy_dr_outbox_backlog", "DR outbox rows not yet published to Kafka")
OUTBOX_PUBLISHED = Counter("energy_dr_outbox_published_total", "DR outbox rows published to Kafka")
OUTBOX_ERRORS = Counter("energy_dr_outbox_errors_total", "Failed outbox relay batches")
UNDERPERFORMING = Gauge(
    "energy_dr_underperforming",
    "1 while a facility's achieved reduction is below the alert ratio of its target (after the grace period)",
    ["dr_event_id", "facility_id"],
)
ACHIEVED_KW = Gauge("energy_dr_achieved_kw", "Measured reduction of a facility in an active event", ["facility_id"])
REPORTS = Counter("energy_dr_reports_total", "Reports posted to the utility VTN by outcome", ["outcome"])
DRIFT_CORRECTIONS = Counter("energy_dr_drift_corrections_total", "Zones found off their DR state and re-commanded")
LOOP_ERRORS = Counter(
    "energy_dr_loop_errors_total", "Unexpected errors in a coordinator loop (it keeps running)", ["loop"]
)
WEBHOOK_REQUESTS = Counter("energy_dr_webhook_requests_total", "Utility webhook requests by status", ["status"])
SETTLEMENT_RUNS = Counter(
    "energy_dr_settlement_runs_total",
    "Settlement versions written by kind (preliminary, settlement, true_up)",
    ["kind"],
)
BASELINE_FLAGS = Counter(
    "energy_dr_baseline_flags_total",
    "Baselines computed with a flag (insufficient_history) by method",
    ["method", "flag"],
)
LATE_WINDOWS = Counter(
    "energy_dr_late_windows_total",
    "meter.late_window records seen by the DR coordinator, by outcome "
    "(matched, no_event, invalid, settle_failed, consumer_error)",
    ["outcome"],
)
