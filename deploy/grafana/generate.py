"""Writes the Grafana dashboards of this folder (run: python deploy/grafana/generate.py).

Edit the panels here, not the JSON: every panel queries Prometheus through the
${datasource} variable, and tests/infra checks each metric exists in the code.
"""
import json, pathlib, re
out = pathlib.Path(__file__).resolve().parent
out.mkdir(parents=True, exist_ok=True)

# Every selector is scoped to the chosen environment (the Kubernetes namespace: energy-staging or
# energy), and metrics labelled by facility to the chosen facilities.
SELECTOR = re.compile(r"\b(energy_[a-z0-9_]+)(\{([^}]*)\})?")
FACILITY_METRICS = ("energy_dr_achieved_kw", "energy_dr_underperforming")

def scoped(expr):
    def add(m):
        name, inner = m.group(1), m.group(3)
        matchers = ['namespace=~"$environment"']
        if name.startswith(FACILITY_METRICS):
            matchers.append('facility_id=~"$facility"')
        if inner:
            matchers.append(inner)
        return name + "{" + ", ".join(matchers) + "}"
    return SELECTOR.sub(add, expr)

VARIABLES = [
    {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
    {"name": "environment", "type": "query", "label": "Environment", "datasource": {"type": "prometheus", "uid": "${datasource}"},
     "query": "label_values(energy_ready, namespace)", "refresh": 2, "includeAll": False},
    {"name": "facility", "type": "query", "label": "Facility", "datasource": {"type": "prometheus", "uid": "${datasource}"},
     "query": 'label_values(energy_dr_achieved_kw{namespace=~"$environment"}, facility_id)', "refresh": 2,
     "includeAll": True, "multi": True, "allValue": ".*"},
]

def panel(pid, title, exprs, unit="short", kind="timeseries", x=0, y=0, w=12, h=8, legend=None):
    return {
        "id": pid, "type": kind, "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + i), "expr": scoped(e), "legendFormat": (legend or [""] * len(exprs))[i]}
                    for i, e in enumerate(exprs)],
    }

def dashboard(uid, title, panels, tags):
    laid = []
    for i, p in enumerate(panels):
        p["gridPos"]["x"] = (i % 2) * 12
        p["gridPos"]["y"] = (i // 2) * 8
        laid.append(p)
    return {
        "uid": uid, "title": title, "tags": ["energy", *tags], "timezone": "utc", "schemaVersion": 39,
        "version": 1, "editable": False, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": VARIABLES},
        "annotations": {"list": []},
        "panels": laid,
    }

D = {
 "ingestion": dashboard("energy-ingestion", "Energy / Ingestion", [
    panel(1, "Messages received by path", ['sum by (path) (rate(energy_ingestion_messages_received_total[5m]))'], "reqps", legend=["{{path}}"]),
    panel(2, "Readings valid vs invalid", ['sum(rate(energy_ingestion_readings_valid_total[5m]))',
                                          'sum by (reason) (rate(energy_ingestion_readings_invalid_total[5m]))'], "ops", legend=["valid", "invalid {{reason}}"]),
    panel(3, "Published to Kafka by kind (reading, dlq)", ['sum by (kind) (rate(energy_ingestion_published_total[5m]))'], "ops", legend=["{{kind}}"]),
    panel(4, "Publish latency p50 / p95 / p99", [
        'histogram_quantile(%s, sum by (le) (rate(energy_ingestion_publish_latency_seconds_bucket[5m])))' % q for q in ("0.5", "0.95", "0.99")], "s", legend=["p50", "p95", "p99"]),
    panel(5, "Backpressure by cause", ['max by (cause) (energy_ingestion_backpressure)'], "bool", legend=["{{cause}}"]),
    panel(6, "Buffer depth vs capacity", ['energy_queue_depth', 'energy_queue_capacity'], "short", legend=["depth {{queue}}", "capacity {{queue}}"]),
    panel(7, "Duplicates dropped and anomalies flagged", ['sum(rate(energy_ingestion_duplicates_dropped_total[5m]))',
                                                         'sum by (anomaly) (rate(energy_ingestion_anomalies_total[5m]))'], "ops", legend=["duplicates", "{{anomaly}}"]),
    panel(8, "Publish failures by error", ['sum by (error) (rate(energy_ingestion_publish_failures_total[5m]))'], "ops", legend=["{{error}}"]),
    panel(9, "MQTT messages pending and unacknowledged", ['sum(energy_ingestion_mqtt_pending)', 'sum(energy_ingestion_mqtt_unacked)'], "short", legend=["pending", "unacked"]),
    panel(10, "HTTP ingestion answers by status", ['sum by (status) (rate(energy_ingestion_http_responses_total[5m]))'], "reqps", legend=["{{status}}"]),
 ], ["ingestion"]),
 "aggregation": dashboard("energy-aggregation-lag", "Energy / Aggregation lag", [
    panel(1, "Consumer lag by group and topic (warn 1k, critical 5k, page 10k)", ['sum by (group, topic) (energy_kafka_consumer_lag)'], "short", legend=["{{group}} {{topic}}"]),
    panel(2, "Consumer lag by partition", ['energy_kafka_consumer_lag{group="aggregation"}'], "short", legend=["p{{partition}}"]),
    panel(3, "Readings handled by outcome", ['sum by (outcome) (rate(energy_aggregation_readings_total[5m]))'], "ops", legend=["{{outcome}}"]),
    panel(4, "Points written to InfluxDB by kind", ['sum by (kind) (rate(energy_aggregation_points_written_total[5m]))'], "ops", legend=["{{kind}}"]),
    panel(5, "Batch duration p95", ['histogram_quantile(0.95, sum by (le) (rate(energy_aggregation_batch_seconds_bucket[5m])))'], "s", legend=["p95"]),
    panel(6, "Backpressure and open breakers", ['max(energy_aggregation_backpressure)', 'max by (breaker) (energy_breaker_open)'], "bool", legend=["backpressure", "breaker {{breaker}}"]),
    panel(7, "InfluxDB writes by outcome", ['sum by (outcome) (rate(energy_dependency_calls_total{dependency="influxdb_write"}[5m]))'], "ops", legend=["{{outcome}}"]),
    panel(9, "Points InfluxDB refused for good, by kind", ['sum by (kind) (increase(energy_aggregation_points_rejected_total[15m]))'], "short", legend=["{{kind}}"]),
    panel(8, "InfluxDB write latency p95", ['histogram_quantile(0.95, sum by (le) (rate(energy_dependency_latency_seconds_bucket{dependency="influxdb_write"}[5m])))'], "s", legend=["p95"]),
 ], ["aggregation", "kafka"]),
 "dr": dashboard("energy-dr-events", "Energy / Demand response", [
    panel(1, "Saga transitions by state", ['sum by (to_state) (increase(energy_dr_transitions_total[15m]))'], "short", legend=["{{to_state}}"]),
    panel(2, "BMS commands due (pending or in flight)", ['max(energy_dr_bms_commands_due)'], "short", legend=["due"]),
    panel(3, "BMS commands by outcome", ['sum by (outcome) (rate(energy_dr_bms_commands_total[5m]))', 'sum(increase(energy_dr_bms_commands_failed_total[15m]))'], "ops", legend=["{{outcome}}", "failed for good"]),
    panel(4, "BMS command latency p95", ['histogram_quantile(0.95, sum by (le) (rate(energy_dr_bms_command_seconds_bucket[5m])))'], "s", legend=["p95"]),
    panel(5, "Achieved reduction by facility", ['energy_dr_achieved_kw'], "kwatt", legend=["{{facility_id}}"]),
    panel(6, "Facilities below 80 % of target", ['sum(energy_dr_underperforming)'], "short", legend=["underperforming"]),
    panel(7, "Outbox backlog and errors", ['max(energy_dr_outbox_backlog)', 'sum(rate(energy_dr_outbox_errors_total[5m]))'], "short", legend=["backlog", "errors/s"]),
    panel(8, "Webhook requests by status and utility reports by outcome", ['sum by (status) (rate(energy_dr_webhook_requests_total[5m]))', 'sum by (outcome) (rate(energy_dr_reports_total[5m]))'], "reqps", legend=["webhook {{status}}", "report {{outcome}}"]),
    panel(9, "Dispatch SLO (90 % within 60 s): share of events in time, 7 d", ['sum(increase(energy_dr_dispatch_seconds_bucket{le="60.0"}[7d])) / clamp_min(sum(increase(energy_dr_dispatch_seconds_count[7d])), 1e-9)'], "percentunit", legend=["in time"]),
    panel(10, "Dispatch delay after the start, p50 / max bucket", ['histogram_quantile(0.5, sum by (le) (increase(energy_dr_dispatch_seconds_bucket[1d])))', 'histogram_quantile(1, sum by (le) (increase(energy_dr_dispatch_seconds_bucket[1d])))'], "s", legend=["p50", "max"]),
 ], ["dr"]),
 "api": dashboard("energy-api-slo", "Energy / API SLOs", [
    panel(1, "Availability (30 d SLO 99.9 %): share of requests without 5xx, 1 h", ['1 - sum(rate(energy_api_request_seconds_count{status=~"5.."}[1h])) / clamp_min(sum(rate(energy_api_request_seconds_count[1h])), 1e-9)'], "percentunit", legend=["availability"]),
    panel(2, "Latency (30 d SLO 99 % < 500 ms): share under 500 ms, 1 h", ['sum(rate(energy_api_request_seconds_bucket{le="0.5"}[1h])) / clamp_min(sum(rate(energy_api_request_seconds_count[1h])), 1e-9)'], "percentunit", legend=["fast"]),
    panel(3, "Error budget burn rate (1 = on budget)", ['(sum(rate(energy_api_request_seconds_count{status=~"5.."}[1h])) / clamp_min(sum(rate(energy_api_request_seconds_count[1h])), 1e-9)) / 0.001'], "short", legend=["availability burn"]),
    panel(4, "Latency p95 by route", ['histogram_quantile(0.95, sum by (le, route) (rate(energy_api_request_seconds_bucket[5m])))'], "s", legend=["{{route}}"]),
    panel(5, "Requests by status", ['sum by (status) (rate(energy_api_request_seconds_count[5m]))'], "reqps", legend=["{{status}}"]),
    panel(6, "Errors by code", ['sum by (status, code) (rate(energy_api_errors_total[5m]))'], "reqps", legend=["{{status}} {{code}}"]),
    panel(7, "Current-load cache by outcome", ['sum by (outcome) (rate(energy_api_current_cache_total[5m]))'], "ops", legend=["{{outcome}}"]),
    panel(8, "Rate limited requests", ['sum by (limiter) (rate(energy_api_rate_limited_total[5m]))'], "reqps", legend=["{{limiter}}"]),
    panel(9, "Range-query response cache by outcome", ['sum by (cache, outcome) (rate(energy_api_response_cache_total[5m]))'], "ops", legend=["{{cache}} {{outcome}}"]),
    panel(10, "InfluxDB and PostgreSQL call latency p95 from the API", ['histogram_quantile(0.95, sum by (le, dependency) (rate(energy_dependency_latency_seconds_bucket[5m])))'], "s", legend=["{{dependency}}"]),
 ], ["api", "slo"]),
 "forecast": dashboard("energy-forecast", "Energy / Forecast", [
    panel(5, "Facilities forecast by quality and method", ['sum by (quality, method) (increase(energy_forecast_facilities_total[1h]))'], "short", legend=["{{quality}} {{method}}"]),
    panel(6, "Minutes since the last successful run", ['(time() - max(energy_forecast_last_success_timestamp_seconds)) / 60'], "m", legend=["age"]),
    panel(7, "Runs by outcome and run duration p95", ['sum by (outcome) (increase(energy_forecast_runs_total[1h]))', 'histogram_quantile(0.95, sum by (le) (rate(energy_forecast_run_seconds_bucket[1h])))'], "short", legend=["{{outcome}}", "p95 s"]),
    panel(8, "Skipped facilities and model load errors", ['sum by (reason) (increase(energy_forecast_skipped_total[1h]))', 'sum(increase(energy_forecast_model_errors_total[1h]))'], "short", legend=["skipped {{reason}}", "model errors"]),
    panel(1, "Weather lookups by source (primary, secondary, cache, persistence, none)", ['sum by (source) (rate(energy_forecast_weather_source_total[15m]))'], "ops", legend=["{{source}}"]),
    panel(2, "Weather provider failures", ['sum by (provider, kind) (rate(energy_forecast_weather_provider_failures_total[15m]))'], "ops", legend=["{{provider}} {{kind}}"]),
    panel(3, "Weather breakers", ['max by (breaker) (energy_breaker_open{breaker=~"weather-.*"})'], "bool", legend=["{{breaker}}"]),
    panel(4, "Weather call latency p95", ['histogram_quantile(0.95, sum by (le, dependency) (rate(energy_dependency_latency_seconds_bucket{dependency=~"weather.*"}[15m])))'], "s", legend=["{{dependency}}"]),
 ], ["forecast"]),
}
names = {"ingestion": "ingestion.json", "aggregation": "aggregation-lag.json", "dr": "dr-events.json", "api": "api-slo.json",
         "forecast": "forecast.json"}
for k, d in D.items():
    (out / names[k]).write_text(json.dumps(d, indent=2) + "\n")
print("ok")
