"""PUBACKs of several QoS 1 messages written as one packet buffer (ingestion.mqtt_source.send_pubacks)
against a real Mosquitto: the acknowledged messages are settled and only the others come back.

MQTT 3.1.1 section 4.4: on reconnecting with a persistent session the broker resends every QoS 1 message
it has not received a PUBACK for, before anything newer (section 4.6: in order). So after a sentinel
published on reconnection arrives, every redelivery has arrived: what came before it is exactly the
set the broker still held as unacknowledged."""

from __future__ import annotations

import asyncio

import aiomqtt

from ingestion.mqtt_source import send_pubacks


def _client(settings, identifier: str) -> aiomqtt.Client:  # type: ignore[no-untyped-def]
    return aiomqtt.Client(settings.mqtt.host, settings.mqtt.port, identifier=identifier, clean_session=False)


async def _take(client: aiomqtt.Client, n: int) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(30):
        async for message in client.messages:
            got.append(message)
            if len(got) == n:
                return got
    raise AssertionError("unreachable")


async def test_acked_in_one_buffer_are_settled_and_the_rest_redelivered(settings, uid) -> None:  # type: ignore[no-untyped-def]
    topic = f"t-pubacks-{uid}/m"
    session = f"t-pubacks-{uid}"
    n = 12
    acked_payloads = {f"m{i}".encode() for i in range(0, n, 2)}  # every other message, chosen by hand
    unacked_payloads = {f"m{i}".encode() for i in range(1, n, 2)}

    subscriber = _client(settings, session)
    subscriber._client.manual_ack_set(True)
    async with subscriber:
        await subscriber.subscribe(topic, qos=1)
        async with aiomqtt.Client(settings.mqtt.host, settings.mqtt.port) as publisher:
            for i in range(n):
                await publisher.publish(topic, f"m{i}".encode(), qos=1)
        first = await _take(subscriber, n)
        assert {bytes(m.payload) for m in first} == acked_payloads | unacked_payloads  # type: ignore[arg-type]
        send_pubacks(subscriber._client, [m.mid for m in first if bytes(m.payload) in acked_payloads])  # type: ignore[arg-type]
        # The packet leaves at the client's next write; a round trip (a subscription's SUBACK) comes after it.
        await subscriber.subscribe(f"{topic}-flush", qos=1)

    again = _client(settings, session)
    again._client.manual_ack_set(True)
    async with again:
        async with aiomqtt.Client(settings.mqtt.host, settings.mqtt.port) as publisher:
            await publisher.publish(topic, b"sentinel", qos=1)
        redelivered: list[bytes] = []
        async with asyncio.timeout(30):
            async for message in again.messages:
                if message.payload == b"sentinel":
                    break
                redelivered.append(bytes(message.payload))  # type: ignore[arg-type]
        send_pubacks(again._client, [])  # nothing to send: no packet, no error
    assert sorted(redelivered) == sorted(unacked_payloads)

    async with aiomqtt.Client(settings.mqtt.host, settings.mqtt.port, identifier=session, clean_session=True):
        pass  # the persistent session is removed
