"""Every Kafka topic, its partition count, its message key and the events it carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    events: tuple[str, ...]
    description: str


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("meter-readings", 6, "facility_id", ("meter.reading",), "Validated readings; source of truth"),
        Topic("meter-readings-dlq", 1, "meter_id or none", ("dead_letter",), "Rejected readings, raw bytes + reason"),
        Topic(
            "meter-late-windows",
            3,
            "facility_id",
            ("meter.late_window",),
            "Rollup windows rewritten by late readings (settlement recomputes them)",
        ),
        Topic("dr-events", 3, "dr_event_id", ("dr.event.received", "dr.event.state_changed"), "DR saga log (outbox)"),
        Topic(
            "bms-commands",
            3,
            "facility_id",
            ("bms.command.issued", "bms.command.acknowledged", "bms.command.failed"),
            "BMS command lifecycle (outbox)",
        ),
        Topic("bms-commands-dlq", 1, "facility_id", ("bms.command.failed",), "Commands that failed for good"),
        Topic("forecasts", 3, "facility_id", ("forecast.published",), "A forecast run was written"),
    )
}

READINGS = TOPICS["meter-readings"].name
READINGS_DLQ = TOPICS["meter-readings-dlq"].name
LATE_WINDOWS = TOPICS["meter-late-windows"].name
DR_EVENTS = TOPICS["dr-events"].name
BMS_COMMANDS = TOPICS["bms-commands"].name
BMS_COMMANDS_DLQ = TOPICS["bms-commands-dlq"].name
FORECASTS = TOPICS["forecasts"].name
