"""The meter simulator process: builds each tick's readings and publishes them over MQTT (QoS 1).

Pacing: by default one tick every ``interval_s / speed`` seconds of wall time, timestamps
following the (accelerated) clock; with ``rate`` set, readings go out at that many per
second and timestamps step ``interval_s`` per tick from a start in the past, so a load
test never produces future timestamps. With ``count`` each meter sends exactly ``count``
readings (seq ``seq_start .. seq_start+count-1``), which tests count on the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt

from energy.adapters.mqtt import make_mqtt_client
from energy.fleet import Facility, Meter, build_fleet
from energy.observability.health import Health
from energy.observability.http import serve_ops
from energy.observability.logging import get_logger
from energy.observability.metrics import Counter, Gauge
from energy.resilience import RetryPolicy, guarded_call
from energy.settings import Settings
from sim.building_model import hvac_factor, lighting_factor, zone_state_key
from sim.meters import faults
from sim.meters.faults import Fault
from sim.meters.profile import electrical, initial_register, meter_kw

log = get_logger(__name__)
PUBLISH_RETRY = RetryPolicy(attempts=20, base_delay_s=0.05, max_delay_s=2.0)  # the broker restarting
QUIET_MQTT_LOGGER = logging.getLogger("energy.mqtt")  # paho chatter ("pending publish calls") off
QUIET_MQTT_LOGGER.setLevel(logging.ERROR)

SIM_PUBLISHED = Counter("energy_sim_meter_messages_total", "MQTT messages published by the meter simulator", ["kind"])
SIM_FAULTS = Counter("energy_sim_meter_faults_total", "Faults injected by the meter simulator", ["fault"])
SIM_INFLIGHT = Gauge("energy_sim_meter_inflight", "MQTT publishes awaiting PUBACK")
ZONE_CACHE_S = 2.0
ACCELERATED_OPEN_ENDED_SPAN_S = 7 * 86_400.0  # --speed without --duration/--count starts a week ago


@dataclass
class SimConfig:
    prefix: str
    interval_s: float = 15.0
    speed: float = 1.0
    rate: float | None = None
    batch: bool = False
    count: int | None = None
    duration_s: float | None = None
    fault_rate: float = 0.0
    seed: int = 0
    start: datetime | None = None
    facilities: int | None = None
    seq_start: int = 0
    qos: int = 1
    max_inflight: int = 200  # aiomqtt scans all pending calls per publish: keep it modest
    late_ticks: int = 3


@dataclass
class Summary:
    messages: int = 0
    readings: int = 0  # distinct (meter, seq) generated
    faults: dict[str, int] = field(default_factory=lambda: {f.value: 0 for f in Fault})
    rejected: list[tuple[str, int]] = field(default_factory=list)  # (meter, seq) sent only as invalid payloads
    anomalous: list[tuple[str, int]] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None
    ticks: int = 0

    def as_json(self) -> str:
        return json.dumps({"summary": self.__dict__})


@dataclass
class MeterState:
    seq: int
    energy_kwh: float


class ZoneStates:
    """BMS zone states from Redis, cached for a couple of seconds; Redis down means 'no command' (1.0)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}
        self._loaded_at = -1e9

    async def refresh(self, facility_ids: list[str]) -> None:
        if time.monotonic() - self._loaded_at < ZONE_CACHE_S or self._redis is None:
            return
        self._loaded_at = time.monotonic()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for fid in facility_ids:
                    pipe.hgetall(zone_state_key(fid))
                results = await asyncio.wait_for(pipe.execute(), 0.5)
        except Exception:
            self._cache = {}
            return
        cache: dict[str, dict[str, dict[str, Any]]] = {}
        for fid, raw in zip(facility_ids, results, strict=True):
            zones = {}
            for k, v in (raw or {}).items():
                with contextlib.suppress(ValueError, TypeError):
                    zones[k.decode() if isinstance(k, bytes) else str(k)] = json.loads(v)
            cache[fid] = zones
        self._cache = cache

    def factor(self, facility: Facility, meter: Meter) -> float:
        if meter.zone_id is None:
            return 1.0
        state = self._cache.get(facility.facility_id, {}).get(meter.zone_id)
        if not isinstance(state, dict):
            return 1.0
        zone = next((z for z in facility.zones if z.zone_id == meter.zone_id), None)
        if zone is None:
            return 1.0
        try:
            if zone.kind == "hvac" and zone.normal_setpoint_c is not None:
                return hvac_factor(_num(state.get("setpoint_c")), zone.normal_setpoint_c)
            return lighting_factor(_num(state.get("lighting_pct")))
        except (TypeError, ValueError):
            return 1.0


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


class MeterSimulator:
    def __init__(self, config: SimConfig, settings: Settings, redis: Any = None) -> None:
        self.config = config
        self.settings = settings
        fleet = build_fleet(settings.seed.facilities, settings.seed.meters_per_facility)
        self.fleet = fleet[: config.facilities] if config.facilities else fleet
        self.meters = [(f, m) for f in self.fleet for m in f.meters]
        self.rng = random.Random(config.seed)
        self.state = {m.meter_id: MeterState(config.seq_start, initial_register(m.meter_id)) for _, m in self.meters}
        self.zones = ZoneStates(redis)
        self.summary = Summary()
        self._late: list[tuple[int, str, bytes]] = []  # (release tick, topic, payload)
        self._inflight: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(config.max_inflight)
        self._sent_readings = 0
        self._t0 = 0.0

    def total_ticks(self) -> int | None:
        c = self.config
        if c.count is not None:
            return c.count
        if c.duration_s is not None and c.rate:
            return max(1, int(c.duration_s * c.rate / max(1, len(self.meters))))
        return None

    def start_ts(self, now: datetime) -> datetime:
        c = self.config
        if c.start is not None:
            return c.start
        epoch = now.timestamp()
        floored = datetime.fromtimestamp(epoch - epoch % c.interval_s, UTC)
        ticks = self.total_ticks()
        if c.rate and ticks is not None:
            return floored - timedelta(seconds=c.interval_s * (ticks + c.late_ticks + 1))
        if c.speed > 1:
            # An accelerated clock replays the recent past and ends at about now, never in the future.
            if c.duration_s is not None:
                span = c.duration_s * c.speed
            elif c.count is not None:
                span = c.count * c.interval_s
            else:
                span = ACCELERATED_OPEN_ENDED_SPAN_S
            return floored - timedelta(seconds=span + c.interval_s)
        return floored

    def reading(self, facility: Facility, meter: Meter, ts: datetime) -> dict[str, Any]:
        st = self.state[meter.meter_id]
        kw = meter_kw(meter, facility, ts, self.zones.factor(facility, meter), self.rng.uniform(-0.03, 0.03))
        e = electrical(kw, self.rng.uniform(-0.02, 0.02))
        st.energy_kwh += kw * self.config.interval_s / 3600.0
        doc = {
            "meter_id": meter.meter_id,
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "active_power_kw": e.active_power_kw,
            "reactive_power_kvar": e.reactive_power_kvar,
            "voltage_v": e.voltage_v,
            "current_a": e.current_a,
            "energy_kwh": round(st.energy_kwh, 4),
            "seq": st.seq,
        }
        st.seq += 1
        return doc

    def topic(self, facility_id: str, meter_id: str | None) -> str:
        return f"{self.config.prefix}/{facility_id}/{meter_id or 'gateway'}"

    def build_tick(self, tick: int, ts: datetime) -> list[tuple[str, bytes, int]]:
        """The messages of one tick: (topic, payload, readings in it)."""
        out: list[tuple[str, bytes, int]] = []
        for facility in self.fleet:
            batch: list[dict[str, Any]] = []
            for meter in facility.meters:
                doc = self.reading(facility, meter, ts)
                self.summary.readings += 1
                fault = faults.pick(self.rng, self.config.fault_rate)
                if fault is not None:
                    self.summary.faults[fault.value] += 1
                    SIM_FAULTS.labels(fault.value).inc()
                key = (meter.meter_id, int(doc["seq"]))
                single = self.topic(facility.facility_id, meter.meter_id)
                if fault is Fault.MALFORMED_JSON:
                    self.summary.rejected.append(key)
                    out.append((single, faults.malformed(faults.encode(doc), self.rng), 1))
                    continue
                if fault is Fault.WRONG_TYPE:
                    self.summary.rejected.append(key)
                    doc = faults.wrong_type(doc, self.rng)
                elif fault is Fault.OUT_OF_RANGE:
                    self.summary.anomalous.append(key)
                    doc = faults.out_of_range(doc, self.rng, meter.rated_kw)
                if fault is Fault.LATE:
                    self._late.append((tick + self.config.late_ticks, single, faults.encode(doc)))
                    continue
                if self.config.batch:
                    batch.append(doc)
                    if fault is Fault.DUPLICATE:
                        batch.append(doc)
                    continue
                payload = faults.encode(doc)
                out.append((single, payload, 1))
                if fault is Fault.DUPLICATE:
                    out.append((single, payload, 1))
            if batch:
                gateway = {"gateway_id": f"gw-{facility.facility_id}", "readings": batch}
                out.append((self.topic(facility.facility_id, None), faults.encode(gateway), len(batch)))
        due = [(t, p) for release, t, p in self._late if release <= tick]
        self._late = [x for x in self._late if x[0] > tick]
        out.extend((t, p, 1) for t, p in due)
        return out

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await self._sem.acquire()
        SIM_INFLIGHT.inc()

        async def publish() -> None:
            await client.publish(topic, payload, qos=self.config.qos)

        async def send() -> None:
            try:
                try:  # the first try outside the retry machinery: the simulator is a load generator
                    await publish()
                except aiomqtt.MqttError:
                    await guarded_call(
                        "sim-mqtt-publish",
                        publish,
                        timeout_s=None,
                        retry=PUBLISH_RETRY,
                        is_transient=lambda exc: isinstance(exc, aiomqtt.MqttError),
                    )
            except aiomqtt.MqttError:
                log.error("sim_publish_failed", topic=topic)
            finally:
                SIM_INFLIGHT.dec()
                self._sem.release()

        task = asyncio.create_task(send())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _pace(self, tick: int, readings_in_message: int) -> None:
        c = self.config
        if c.rate:
            self._sent_readings += readings_in_message
            ahead = self._sent_readings / c.rate - (time.monotonic() - self._t0)
            if ahead > 0.005:
                await asyncio.sleep(ahead)

    async def run(self, client: aiomqtt.Client, stop: asyncio.Event | None = None) -> Summary:
        c = self.config
        start = self.start_ts(datetime.now(UTC))
        total = self.total_ticks()
        self._t0 = time.monotonic()
        deadline = self._t0 + c.duration_s if c.duration_s is not None else None
        tick = 0
        facility_ids = [f.facility_id for f in self.fleet]
        while (total is None or tick < total) and not (stop is not None and stop.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not c.rate:
                wake = self._t0 + tick * c.interval_s / c.speed
                await _sleep_until(wake, stop)
            await self.zones.refresh(facility_ids)
            ts = start + timedelta(seconds=tick * c.interval_s)
            if self.summary.first_ts is None:
                self.summary.first_ts = ts.isoformat()
            self.summary.last_ts = ts.isoformat()
            for topic, payload, n in self.build_tick(tick, ts):
                await self._publish(client, topic, payload)
                self.summary.messages += 1
                SIM_PUBLISHED.labels("batch" if n > 1 or topic.endswith("/gateway") else "single").inc()
                await self._pace(tick, n)
            tick += 1
            self.summary.ticks = tick
        for _, topic, payload in self._late:  # flush what is still held back
            await self._publish(client, topic, payload)
            self.summary.messages += 1
        self._late = []
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        return self.summary


async def _sleep_until(wake: float, stop: asyncio.Event | None) -> None:
    delay = wake - time.monotonic()
    if delay <= 0:
        return
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


async def run_simulator(
    config: SimConfig,
    settings: Settings,
    port: int | None,
    client_id: str | None = None,
    stop: asyncio.Event | None = None,
) -> Summary:
    from energy.adapters.redis import make_redis

    health = Health("meter-sim")
    stop_ops = asyncio.Event()
    ops_task: asyncio.Task[None] | None = None
    if port:
        ops_task = asyncio.create_task(serve_ops(health, settings.stack.bind_host, port, stop_ops))
    redis = make_redis(settings.redis)
    sim = MeterSimulator(config, settings, redis)
    try:
        async with make_mqtt_client(
            settings.mqtt, identifier=client_id, max_inflight_messages=config.max_inflight, logger=QUIET_MQTT_LOGGER
        ) as client:
            summary = await sim.run(client, stop)
    finally:
        stop_ops.set()
        if ops_task is not None:
            await asyncio.gather(ops_task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await redis.aclose()
    return summary
