"""Backup and restore of PostgreSQL and InfluxDB, and the restore drill (OPS-3)."""
