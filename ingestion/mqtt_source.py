"""MQTT side: a persistent QoS 1 session whose messages are acknowledged only after Kafka has them.

Replicas scale out through an MQTT shared subscription (``$share/<group>/<prefix>/#``), each
with its own client id and session (decision 0210): the broker gives each message to one replica.

paho-mqtt's manual acknowledgement is switched on (aiomqtt 2.x does not expose it, so the
underlying paho client is used for exactly two calls: ``manual_ack_set`` and ``ack``). While
the buffer is full the reader stops taking messages; Mosquitto then stops sending once
``max_inflight_messages`` are unacknowledged and queues the rest in the persistent session,
so memory here stays bounded and nothing is lost. After a reconnect Mosquitto redelivers
whatever was not acknowledged; exact repeats are dropped by the dedup window or carry the
same event id.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt
import paho.mqtt.client as mqtt

from energy.adapters.mqtt import make_mqtt_client
from energy.observability import tracing
from energy.observability.health import Health
from energy.observability.logging import get_logger
from energy.observability.metrics import Gauge
from energy.resilience import RetryPolicy, keep_trying
from energy.settings import Settings
from ingestion import metrics
from ingestion.domain import DedupWindow, Reason, Validator
from ingestion.pipeline import Buffer, WorkItem, build_records
from ingestion.registry import MeterRegistry

log = get_logger(__name__)
MQTT_PENDING = Gauge("energy_ingestion_mqtt_pending", "Messages received by the MQTT client, not yet taken")
MQTT_UNACKED = Gauge("energy_ingestion_mqtt_unacked", "MQTT messages taken but not yet acknowledged to the broker")
QUIET_MQTT_LOGGER = logging.getLogger("energy.mqtt")  # paho chatter ("pending publish calls") off
QUIET_MQTT_LOGGER.setLevel(logging.ERROR)
PUBACK_HEADER = (mqtt.PUBACK << 8) | 2  # fixed header: packet type 4, flags 0; remaining length 2
RECONNECT = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=10.0)


def send_pubacks(client: mqtt.Client, mids: list[int]) -> None:
    """Acknowledge QoS 1 messages ``mids`` with one write of their PUBACK packets, back to back.

    paho's ``ack`` queues one packet per message, and each costs a socket send (plus a wake-up byte on
    paho's socket pair): under load the single largest cost of a message (decision 1050). A PUBACK is
    four bytes, type 4 with flags 0, remaining length 2, then the packet identifier (MQTT 3.1.1 section
    3.4; MQTT 5 section 3.4.2.1 allows omitting the reason code when it is success), so several are
    one buffer that paho's writer sends like any packet. Without paho's queue (another version) each
    message is acked on its own."""
    if not mids:
        return
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    packet = struct.pack(f"!{len(mids)}I", *((PUBACK_HEADER << 16) | mid for mid in mids))
    queue_packet(mqtt.PUBACK, packet, 0, 0)


class MqttSource:
    def __init__(
        self,
        settings: Settings,
        validator: Validator,
        registry: MeterRegistry,
        buffer: Buffer,
        health: Health,
        dedup: DedupWindow | None,
    ) -> None:
        self._settings = settings
        self._validator = validator
        self._registry = registry
        self._buffer = buffer
        self._health = health
        self._dedup = dedup
        self._generation = 0
        self.connected = asyncio.Event()
        self.messages = 0
        self.unacked = 0  # taken from MQTT, not yet acknowledged (held in the buffer or in flight to Kafka)
        self.max_pending = 0  # most messages seen waiting in the MQTT client's own queue
        self._client: aiomqtt.Client | None = None
        self._queues: list[asyncio.Queue[aiomqtt.Message]] = []
        self._acks: list[int] = []  # message ids of one connection whose PUBACK is due this loop turn
        self._acks_generation = 0
        self._acks_client: aiomqtt.Client | None = None
        self._received = metrics.MESSAGES_RECEIVED.labels("mqtt")
        # Read when Prometheus scrapes, not written per message: three gauge writes (each taking a lock)
        # were a measurable share of a message's cost (decision 0960).
        MQTT_PENDING.set_function(lambda: float(self.pending))
        MQTT_UNACKED.set_function(lambda: float(self.unacked))

    @property
    def pending(self) -> int:
        """Messages the MQTT client received that the reader has not taken yet."""
        return len(self._client.messages) if self._client is not None else 0

    async def run(self) -> None:
        """Stay subscribed until cancelled: a lost connection is reconnected with the retry policy
        (a session that ran longer than its maximum delay reconnects at once)."""
        await keep_trying(
            "mqtt",
            self._session,
            policy=RECONNECT,
            is_transient=lambda exc: isinstance(exc, aiomqtt.MqttError),
            on_error=self._disconnected,
            fresh_after_s=RECONNECT.max_delay_s,
        )

    async def _session(self) -> None:
        mqtt = self._settings.mqtt
        ing = self._settings.ingestion
        queues = self._queues
        queues.clear()

        class Queue(asyncio.Queue[aiomqtt.Message]):
            """The client's own incoming queue (aiomqtt's ``queue_type``), kept to drain it in bursts."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                queues.append(self)

        client = make_mqtt_client(
            mqtt, identifier=ing.mqtt_session_id, clean_session=False, logger=QUIET_MQTT_LOGGER, queue_type=Queue
        )
        client._client.manual_ack_set(True)
        self._client = client
        async with client:
            self._generation += 1
            subscription = ing.mqtt_subscription(mqtt.topic_prefix)
            await client.subscribe(subscription, qos=ing.mqtt_qos)
            self._health.clear("mqtt")
            self.connected.set()
            log.info("mqtt_subscribed", topic=subscription, client_id=ing.mqtt_session_id)
            queue = self._queues[-1]
            async for message in client.messages:
                await self._handle(client, message)
                # What is already queued is taken directly: aiomqtt's iterator creates a task and an
                # asyncio.wait per message to watch for a disconnection, a tenth of a message's CPU
                # (decision 1050). A disconnection still ends the session at the next wait.
                while queue.qsize():
                    await self._handle(client, queue.get_nowait())

    def _disconnected(self, exc: BaseException) -> None:
        if not isinstance(exc, aiomqtt.MqttError):
            return
        self.connected.clear()
        self._health.set_not_ready("mqtt", f"MQTT disconnected: {exc}"[:300])
        log.warning("mqtt_disconnected", error=str(exc)[:300])

    def _acker(self, client: aiomqtt.Client, message: aiomqtt.Message) -> Callable[[], None]:
        generation = self._generation
        mid = message.mid
        needs_ack = message.qos > 0

        def ack() -> None:
            self.unacked -= 1
            # An ack on a newer connection would confirm another message id: the broker redelivers instead.
            if needs_ack and generation == self._generation:
                self._queue_ack(client, generation, mid)

        return ack

    def _queue_ack(self, client: aiomqtt.Client, generation: int, mid: int) -> None:
        """PUBACKs wait for the end of this event-loop turn and leave together (:func:`send_pubacks`):
        a chunk Kafka acknowledged is acked to the broker in one socket write, not one per message."""
        if generation != self._acks_generation:
            self._acks = []
            self._acks_generation = generation
            self._acks_client = client
        self._acks.append(mid)
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        mids, self._acks = self._acks, []
        if mids and self._acks_generation == self._generation and self._acks_client is not None:
            send_pubacks(self._acks_client._client, mids)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        received = time.monotonic()
        self.messages += 1
        self.unacked += 1
        pending = len(client.messages)
        if pending > self.max_pending:
            self.max_pending = pending
        self._received.inc()
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        topic = message.topic.value
        prefix = self._settings.mqtt.topic_prefix
        ing = self._settings.ingestion
        # A new trace per message, carried in the Kafka headers (not bound into log lines: too costly per message).
        trace = tracing.new_trace()
        now = datetime.now(UTC)
        outcome = self._validator.mqtt_message(topic, bytes(payload), prefix, now)
        if any(r.reason is Reason.UNKNOWN_METER for r in outcome.rejected) and self._registry.stale_for_miss():
            try:
                await self._registry.refresh()
                outcome = self._validator.mqtt_message(topic, bytes(payload), prefix, now)
            except Exception as exc:
                log.warning("registry_refresh_on_miss_failed", error=str(exc)[:300])
        records, _ = build_records(
            outcome,
            readings_topic=ing.readings_topic,
            dlq_topic=ing.dlq_topic,
            source=f"mqtt:{topic}",
            path="mqtt",
            now=now,
            dedup=self._dedup,
            trace=trace,
        )
        ack = self._acker(client, message)
        if not records:  # only exact repeats of delivered readings
            ack()
            return
        item = WorkItem(records, received, on_done=ack)
        if self._buffer.used + self._buffer.weight_of(item) > self._buffer.capacity:
            metrics.BACKPRESSURE.labels("buffer_full").set(1)
            self._health.set_not_ready("buffer_full", f"ingestion buffer full ({self._buffer.capacity} records)")
            await self._buffer.put(item)
            metrics.BACKPRESSURE.labels("buffer_full").set(0)
            self._health.clear("buffer_full")
        else:
            await self._buffer.put(item)
