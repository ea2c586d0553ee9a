"""Capacity model: from the latest benchmark results to the sizing of 1,000 / 10,000 / 100,000 facilities.

    python -m bench.capacity          # writes docs/capacity.md and bench/results/capacity.json

Every figure is derived from a measured one (``bench/results/*.json``) or from what the repository
provisions (the rendered production overlay, ``schemas/topics.py``, Terraform's production root); the
assumptions are constants below, each with its reason. Throughput per pod is the measured work per
CPU-second times the pod's CPU request, used at most to ``TARGET_UTILISATION`` so a pod keeps headroom
for bursts and catch-up. ``tests/infra/test_capacity.py`` fails when what is provisioned falls below the
10,000-facility row, and when this file's output differs from the committed document.
"""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "capacity.md"

FLEETS = (1_000, 10_000, 100_000)
CHECKED_FLEET = 10_000  # what production must carry today (the test's row)
METERS_PER_FACILITY = 10
READING_INTERVAL_S = 15.0
DR_PEAK_SHARE = 0.10  # the largest single event: 10 % of the fleet
DR_DISPATCH_BUDGET_S = 60.0  # SLO: every facility of an event dispatched within 60 s (docs/slo.md)
FORECAST_PERIOD_S = 900.0  # a run every quarter hour must finish within it
FORECAST_STEPS = 96  # 24 h of 15-min steps per facility and run
TARGET_UTILISATION = 0.6  # size for 60 % of measured capacity at peak
PARTITION_GROWTH = 2.0  # partitions for twice the workers needed today (re-partitioning is a migration)
KAFKA_REPLICATION = 3
KAFKA_DISK_HEADROOM = 1.3  # 30 % free disk: segment roll-over, rebalancing, a late consumer
RAW_PAYLOAD_SHARE = 0.55  # an IoT Core raw payload is the reading without the envelope: ~55 % of its bytes
ROLLUP_WINDOWS = 3  # 1 min, 15 min, 1 h


@dataclass(frozen=True)
class Measured:
    """Per unit of work, from the latest full benchmark runs."""

    ingest_readings_per_cpu_s: float
    aggregate_readings_per_cpu_s: float
    aggregate_cpu_assumed: bool  # True: the aggregation bench recorded no CPU time; one core per worker assumed
    dr_facilities_per_s: float
    forecast_s_per_facility: float
    event_bytes: int
    sources: dict[str, str]
    # CPU-seconds of the coordinator process per facility dispatched (bench/dr.py): in production every
    # building has its own BMS, so a coordinator pod is bound by its CPU, not by the one simulator
    # process the benchmark shares (the wall-clock rate above); None for results without it.
    dr_cpu_s_per_facility: float | None = None


@dataclass(frozen=True)
class Provisioned:
    """What the production overlay and Terraform give today."""

    cpu_request: dict[str, float]
    replicas: dict[str, int]
    aggregation_max_replicas: int
    readings_partitions: int
    retention_days: dict[str, float]
    msk_brokers: int
    msk_volume_gb: float
    msk_instance: str
    influx_instance: str
    rds_instance: str


def _result(name: str) -> dict[str, Any]:
    return dict(json.loads((RESULTS / f"{name}.json").read_text()))


def event_bytes() -> int:
    """Bytes of one meter.reading event as ingestion produces it (a realistic, full-width reading)."""
    from schemas.readings import MeterReading, MeterReadingEvent

    ts = datetime(2026, 7, 1, 12, 0, 15, 123456, tzinfo=UTC)
    reading = MeterReading(
        reading_id=uuid.UUID(int=2**127),
        meter_id="fac-00123-m07",
        facility_id="fac-00123",
        ts=ts,
        active_power_kw=123.456,
        reactive_power_kvar=12.345,
        voltage_v=230.12,
        current_a=180.25,
        energy_kwh=123456.789,
        seq=123456,
        received_at=ts,
    )
    return len(MeterReadingEvent.wrap(reading, source="mqtt", occurred_at=ts, event_id=reading.reading_id).to_bytes())


def measured() -> Measured:
    ingest, aggregate, dr, forecast = (_result(n) for n in ("ingest", "aggregate", "dr", "forecast"))
    per_worker = aggregate["readings_per_s"] / max(1, int(aggregate.get("workers", 1)))
    cpu_100k = aggregate.get("cpu_s_per_100k_readings")
    return Measured(
        ingest_readings_per_cpu_s=float(ingest["single_messages_per_cpu_s"]),
        aggregate_readings_per_cpu_s=100_000 / float(cpu_100k) if cpu_100k else per_worker,
        aggregate_cpu_assumed=not cpu_100k,
        dr_facilities_per_s=dr["dispatch_facilities"]
        / (dr["dispatch_all_healthy_s"] if dr["dispatch_all_healthy_s"] > 0 else dr["dispatch_last_confirmed_s"]),
        dr_cpu_s_per_facility=(
            float(dr["coordinator_cpu_ms_per_facility"]) / 1000 if "coordinator_cpu_ms_per_facility" in dr else None
        ),
        forecast_s_per_facility=forecast["facilities_1000_s"] / 1000,
        event_bytes=event_bytes(),
        sources={n: str(_result(n)["date"]) for n in ("ingest", "aggregate", "dr", "forecast")},
    )


def _cpu(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _hcl_value(text: str) -> Any:
    return text[1:-1] if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == '"' else text


def provisioned() -> Provisioned:
    import hcl2

    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "overlays" / "production")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    cpu, replicas, keda_max = {}, {}, 0
    for d in docs:
        if d["kind"] == "Deployment":
            name = d["metadata"]["name"]
            container = d["spec"]["template"]["spec"]["containers"][0]
            cpu[name] = _cpu(container["resources"]["requests"]["cpu"])
            replicas[name] = int(d["spec"].get("replicas", 1))
        elif d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"] == "aggregation":
            keda_max = int(d["spec"]["maxReplicaCount"])
    from schemas.topics import TOPICS

    with (ROOT / "infra" / "terraform" / "envs" / "production" / "main.tf").open() as fh:
        env = hcl2.load(fh)
    platform = {k: _hcl_value(v) for k, v in env["module"][0]['"platform"'].items()}
    with (ROOT / "infra" / "terraform" / "modules" / "platform" / "main.tf").open() as fh:
        module = hcl2.load(fh)
    msk = {k: _hcl_value(v) for k, v in next(m['"msk"'] for m in module["module"] if '"msk"' in m).items()}
    retention = {"meter-readings": 7.0, "meter-readings-raw": 3.0}
    topics_text = (ROOT / "infra" / "terraform" / "modules" / "platform" / "main.tf").read_text()
    for topic in retention:
        line = next(line for line in topics_text.splitlines() if f'"{topic}"' in line and "retention_ms" in line)
        retention[topic] = float(line.split("retention_ms =")[1].split("*")[0].strip())
    return Provisioned(
        cpu_request=cpu,
        replicas=replicas,
        aggregation_max_replicas=keda_max,
        readings_partitions=TOPICS["meter-readings"].partitions,
        retention_days=retention,
        msk_brokers=int(msk["broker_count"]),
        msk_volume_gb=float(platform["msk_broker_volume_gb"]),
        msk_instance=str(platform["msk_broker_instance_type"]),
        influx_instance=str(platform["influxdb_instance_type"]),
        rds_instance=str(platform["rds_instance_class"]),
    )


def pods(load_per_s: float, per_cpu_s: float, cpu_request: float) -> int:
    return max(1, math.ceil(load_per_s / (per_cpu_s * cpu_request * TARGET_UTILISATION)))


def size(facilities: int, m: Measured, p: Provisioned) -> dict[str, Any]:
    meters = facilities * METERS_PER_FACILITY
    readings_per_s = meters / READING_INTERVAL_S
    kafka_in_mb_s = readings_per_s * m.event_bytes / 1e6
    raw_mb_s = kafka_in_mb_s * RAW_PAYLOAD_SHARE
    stored_gb = (
        kafka_in_mb_s * 86_400 * p.retention_days["meter-readings"]
        + raw_mb_s * 86_400 * p.retention_days["meter-readings-raw"]
    ) / 1e3
    per_broker_gb = stored_gb * KAFKA_REPLICATION / p.msk_brokers * KAFKA_DISK_HEADROOM
    aggregation = pods(readings_per_s, m.aggregate_readings_per_cpu_s, p.cpu_request["aggregation"])
    ingestion = pods(readings_per_s, m.ingest_readings_per_cpu_s, p.cpu_request["ingestion"])
    peak_event = max(1, round(facilities * DR_PEAK_SHARE))
    dr_per_pod_s = (
        p.cpu_request["dr-coordinator"] / m.dr_cpu_s_per_facility if m.dr_cpu_s_per_facility else m.dr_facilities_per_s
    )
    dr_dispatch_s = peak_event / dr_per_pod_s / max(1, p.replicas["dr-coordinator"])
    forecast_cpu_s = facilities * m.forecast_s_per_facility
    forecast = max(1, math.ceil(forecast_cpu_s / (FORECAST_PERIOD_S * TARGET_UTILISATION * p.cpu_request["forecast"])))
    return {
        "facilities": facilities,
        "meters": meters,
        "readings_per_s": round(readings_per_s, 1),
        "ingestion_pods": ingestion,
        "aggregation_pods": aggregation,
        "readings_partitions": max(aggregation, math.ceil(aggregation * PARTITION_GROWTH)),
        "kafka_in_mb_s": round(kafka_in_mb_s, 2),
        "kafka_stored_gb": round(stored_gb, 0),
        "msk_gb_per_broker": round(per_broker_gb, 0),
        "influx_points_per_s": round(readings_per_s * (1 + 2 * ROLLUP_WINDOWS), 0),
        "influx_series": meters * (1 + ROLLUP_WINDOWS) + facilities * ROLLUP_WINDOWS,
        "forecast_pods": forecast,
        "forecast_rows_per_day": facilities * FORECAST_STEPS * round(86_400 / FORECAST_PERIOD_S),
        "dr_peak_facilities": peak_event,
        "dr_dispatch_s": round(dr_dispatch_s, 1),
    }


def checks(row: dict[str, Any], p: Provisioned) -> list[tuple[str, float, float, bool]]:
    """(what, needed, provisioned, enough) for one fleet size."""
    items = [
        ("ingestion replicas", row["ingestion_pods"], p.replicas["ingestion"]),
        ("aggregation max replicas (KEDA)", row["aggregation_pods"], p.aggregation_max_replicas),
        ("meter-readings partitions", row["aggregation_pods"], p.readings_partitions),
        ("forecast replicas", row["forecast_pods"], p.replicas["forecast"]),
        ("MSK disk per broker, GB", row["msk_gb_per_broker"], p.msk_volume_gb),
        ("DR dispatch of the peak event, s (budget)", row["dr_dispatch_s"], DR_DISPATCH_BUDGET_S),
    ]
    return [(what, float(need), float(have), need <= have) for what, need, have in items]


def render(m: Measured, p: Provisioned, rows: list[dict[str, Any]]) -> str:
    headers = [
        ("facilities", "facilities"),
        ("readings_per_s", "readings/s"),
        ("ingestion_pods", "ingestion pods"),
        ("aggregation_pods", "aggregation pods"),
        ("readings_partitions", "partitions (x2 growth)"),
        ("kafka_in_mb_s", "Kafka in, MB/s"),
        ("msk_gb_per_broker", "MSK GB/broker"),
        ("influx_points_per_s", "InfluxDB points/s"),
        ("influx_series", "InfluxDB series"),
        ("forecast_pods", "forecast pods"),
        ("forecast_rows_per_day", "PostgreSQL forecast upserts/day"),
        ("dr_peak_facilities", "DR peak facilities"),
        ("dr_dispatch_s", "DR dispatch s"),
    ]
    out = [
        "# Capacity model",
        "",
        "Generated by `python -m bench.capacity` from the latest `bench/results/*.json` and what the",
        "repository provisions (rendered production overlay, `schemas/topics.py`, Terraform's production",
        "root). Do not edit by hand; `tests/infra/test_capacity.py` regenerates it and fails when it",
        f"differs, and when production falls below the {CHECKED_FLEET:,}-facility row.",
        "",
        "## Assumptions",
        "",
        f"- {METERS_PER_FACILITY} meters per facility, one reading each every {READING_INTERVAL_S:g} s;"
        f" the peak DR event covers {DR_PEAK_SHARE:.0%} of the fleet and must be dispatched within"
        f" {DR_DISPATCH_BUDGET_S:g} s.",
        f"- Pods are sized to run at {TARGET_UTILISATION:.0%} of their measured capacity at their CPU request;"
        f" partitions for {PARTITION_GROWTH:g}x the aggregation workers needed (re-partitioning is a"
        " migration: docs/runbooks/aggregation.md).",
        f"- One meter.reading event is {m.event_bytes} bytes (measured from the schema); the IoT Core raw"
        f" payload ~{RAW_PAYLOAD_SHARE:.0%} of that. Kafka: replication {KAFKA_REPLICATION}, no compression,"
        f" {KAFKA_DISK_HEADROOM - 1:.0%} free disk kept, retention as provisioned"
        f" (meter-readings {p.retention_days['meter-readings']:g} d,"
        f" raw {p.retention_days['meter-readings-raw']:g} d).",
        f"- InfluxDB: each reading writes its raw point and rewrites its meter's and facility's {ROLLUP_WINDOWS}"
        " rollup windows (an upper bound: a batch rewrites a window once).",
        "",
        "## Measured inputs",
        "",
        "| input | value | from |",
        "|---|---|---|",
        _input_row("ingestion, readings per CPU-second", f"{m.ingest_readings_per_cpu_s:,.0f}", "ingest", m),
        _input_row(
            "aggregation, readings per CPU-second",
            f"{m.aggregate_readings_per_cpu_s:,.0f}"
            + (
                " (no CPU time recorded: one core per worker assumed, an upper bound)"
                if m.aggregate_cpu_assumed
                else ""
            ),
            "aggregate",
            m,
        ),
        _input_row(
            "DR, coordinator CPU-seconds per facility dispatched (a pod dispatches its CPU request / this per s)"
            if m.dr_cpu_s_per_facility
            else "DR, facilities dispatched per second per coordinator",
            f"{m.dr_cpu_s_per_facility:.4f}" if m.dr_cpu_s_per_facility else f"{m.dr_facilities_per_s:,.1f}",
            "dr",
            m,
        ),
        _input_row("forecast, seconds per facility and run", f"{m.forecast_s_per_facility:.4f}", "forecast", m),
        "",
        "## Sizing",
        "",
        "| " + " | ".join(h for _, h in headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for row in rows:
        out.append("| " + " | ".join(f"{row[k]:,}" for k, _ in headers) + " |")
    out += [
        "",
        "## Provisioned today (production)",
        "",
        f"- Replicas: {', '.join(f'{k} {v}' for k, v in sorted(p.replicas.items()))};"
        f" aggregation scales to {p.aggregation_max_replicas} on Kafka lag (KEDA).",
        f"- CPU requests: {', '.join(f'{k} {v:g}' for k, v in sorted(p.cpu_request.items()))} cores.",
        f"- meter-readings: {p.readings_partitions} partitions. MSK: {p.msk_brokers} x {p.msk_instance},"
        f" {p.msk_volume_gb:,.0f} GB each. InfluxDB: {p.influx_instance}. PostgreSQL: {p.rds_instance}.",
        "",
    ]
    for fleet, row in zip(FLEETS, rows, strict=True):
        failing = [c for c in checks(row, p) if not c[3]]
        title = f"## {fleet:,} facilities: " + ("fits" if not failing else f"{len(failing)} gap(s)")
        out += [title, "", "| check | needed | provisioned | |", "|---|---|---|---|"]
        for what, need, have, ok in checks(row, p):
            out.append(f"| {what} | {need:,.1f} | {have:,.1f} | {'ok' if ok else 'GAP'} |")
        out.append("")
    out += [
        "## First bottleneck",
        "",
        first_bottleneck(rows[-1], p),
        "",
    ]
    return "\n".join(out)


def _input_row(what: str, value: str, result: str, m: Measured) -> str:
    return f"| {what} | {value} | {result}.json ({m.sources[result][:10]}) |"


def first_bottleneck(row: dict[str, Any], p: Provisioned) -> str:
    ratios = sorted(((need / have if have else math.inf), what) for what, need, have, _ in checks(row, p))
    ratio, what = ratios[-1]
    return (
        f"At {row['facilities']:,} facilities the tightest limit is **{what}** ({ratio:.1f}x what is provisioned):"
        " it has to grow first."
    )


def build() -> tuple[str, dict[str, Any]]:
    m, p = measured(), provisioned()
    rows = [size(f, m, p) for f in FLEETS]
    data = {"measured": asdict(m), "provisioned": asdict(p), "rows": rows}
    return render(m, p, rows), data


def main() -> int:
    text, data = build()
    DOC.write_text(text)
    (RESULTS / "capacity.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
