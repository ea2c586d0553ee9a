"""Logging, tracing context, metrics and health checks shared by every service."""
