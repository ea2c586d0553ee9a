"""The MQTT session reconnects through the one retry policy (energy.resilience.keep_trying):
a real Mosquitto is stopped and started again on the same port; ingestion reports itself not
ready meanwhile, counts its reconnect retries, subscribes again and a reading sent after the
restart reaches Kafka."""

from __future__ import annotations

import asyncio

import pytest

from energy.fleet import build_fleet
from energy.observability.metrics import REGISTRY
from energy.stack.servers import MosquittoServer
from tests.ingestion.conftest import ingest_settings, read_topic, run_sim
from tests.waiting import wait_until

pytestmark = pytest.mark.chaos


def _retries(error: str) -> float:
    return REGISTRY.get_sample_value("energy_retries_total", {"dependency": "mqtt", "error": error}) or 0.0


async def test_ingestion_reconnects_after_the_broker_restarts_and_takes_new_readings(
    settings, uid, private_server, start_service
):
    broker = private_server(MosquittoServer)
    s = ingest_settings(settings, uid, dedup_enabled=False)
    s = s.model_copy(update={"mqtt": s.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker.port})})
    service = await start_service(s)
    assert service.mqtt is not None
    retries_before = _retries("MqttError") + _retries("MqttCodeError")

    broker.stop()
    await wait_until(lambda: not service.mqtt.connected.is_set(), timeout_s=15, what="the disconnect", interval_s=0.05)
    await wait_until(
        lambda: _retries("MqttError") + _retries("MqttCodeError") > retries_before,
        timeout_s=15,
        what="a reconnect retry",
        interval_s=0.05,
    )
    assert "mqtt" in service.health.conditions

    broker.start()
    await asyncio.wait_for(service.mqtt.connected.wait(), 30)  # subscribed again, no restart of ingestion
    assert "mqtt" not in service.health.conditions

    summary = await run_sim(s, "--count", "1", "--facilities", "1", "--seed", "4")  # after the restart
    expected = {(m.meter_id, 0) for m in build_fleet()[0].meters}
    records = await read_topic(s, s.ingestion.readings_topic, expect=len(expected), timeout_s=30, idle_s=0.5)
    assert summary["messages"] == len(expected)
    assert {(r.value["payload"]["meter_id"], r.value["payload"]["seq"]) for r in records} == expected
