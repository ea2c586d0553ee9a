"""Aggregation: Faust agents that build 1 min / 15 min / 1 h rollups into InfluxDB."""
