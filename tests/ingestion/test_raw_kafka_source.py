"""Production path: raw MQTT payloads forwarded to Kafka by AWS IoT Core (docs/decisions/0601) are
validated like MQTT messages, and their offsets are committed only after delivery."""

from __future__ import annotations

import json
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from energy.adapters.kafka import make_consumer
from energy.stack.topics import ensure_topics_async
from tests.ingestion.conftest import RECENT_DAY, ingest_settings, read_topic
from tests.waiting import wait_until


async def test_raw_payloads_from_kafka_are_validated_published_and_committed_after_delivery(
    settings, uid, start_service
):
    raw_topic = f"t-raw-{uid}"
    s = ingest_settings(settings, uid, raw_topic=raw_topic, raw_group_id=f"t-raw-{uid}", mqtt_enabled=False)
    await ensure_topics_async(s.kafka.bootstrap_servers, {raw_topic: 2})
    prefix = s.mqtt.topic_prefix
    good = [
        {
            "meter_id": "fac-002-m01",
            "ts": (RECENT_DAY + timedelta(hours=10, minutes=i)).isoformat(),
            "active_power_kw": 40.0,
            "reactive_power_kvar": 17.0,
            "voltage_v": 230.0,
            "current_a": 190.0,
            "energy_kwh": 900.0 + i,
            "seq": i,
        }
        for i in range(5)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers)
    await producer.start()
    try:
        for doc in good:
            topic = f"{prefix}/fac-002/fac-002-m01"
            await producer.send_and_wait(
                raw_topic, json.dumps(doc).encode(), key=topic.encode(), headers=[("mqtt_topic", topic.encode())]
            )
        await producer.send_and_wait(raw_topic, b"{not json", key=f"{prefix}/fac-002/fac-002-m01".encode())
    finally:
        await producer.stop()

    service = await start_service(s, wait_mqtt=False)
    readings = await read_topic(s, s.ingestion.readings_topic, expect=5, idle_s=0.5)
    dlq = await read_topic(s, s.ingestion.dlq_topic, expect=1, idle_s=0.5)

    assert sorted(r.value["payload"]["seq"] for r in readings) == [0, 1, 2, 3, 4]
    assert {r.key for r in readings} == {b"fac-002"}
    assert [d.value["payload"]["reason"] for d in dlq] == ["invalid_json"]
    assert dlq[0].value["payload"]["source"].startswith(f"kafka:{raw_topic}/")
    await wait_until(lambda: service.raw.committed == 6, timeout_s=30, what="6 raw records committed")
    consumer = make_consumer(s.kafka, group_id=s.ingestion.raw_group_id)
    await consumer.start()
    try:
        committed = [await consumer.committed(TopicPartition(raw_topic, p)) or 0 for p in range(2)]
    finally:
        await consumer.stop()
    assert sum(committed) == 6
