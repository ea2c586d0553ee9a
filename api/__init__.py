"""REST API, dashboards, CSV exports, the utility webhook, health and metrics."""
