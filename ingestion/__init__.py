"""Ingestion: smart-meter readings over MQTT and HTTP, validated and published to Kafka."""
