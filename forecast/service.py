"""The forecast service: every quarter hour (and on demand) forecast every active facility 24 h ahead at
its own meter interval (15, 30 or 60 min as seen in its rollups).

Per run: history from InfluxDB (15 min facility rollups), weather per grid cell (with fallbacks), the
current model of the facility's interval gated by a backtest on the facility's own history (or seasonal
naive, flagged), upserts into load_forecasts/forecast_runs (newest run wins), then one
ForecastPublishedEvent per facility straight to Kafka (see docs/decisions/0301-forecast-service.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter as CountOf
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from energy.adapters.influx import InfluxClient
from energy.observability.metrics import Counter, Gauge, Histogram
from energy.settings import Settings
from forecast.engine import GateResult, forecast_batch, gate_expired
from forecast.gates import load_gates, save_gates
from forecast.history import HistoryCache
from forecast.model.artifact import LoadedModel, ModelLoadError, load_model
from forecast.prepare import MIN_HISTORY_DAYS, Prepared, prepare, quarter_floor
from forecast.store import FacilityForecast, save_forecasts
from forecast.weather.client import WeatherClient
from forecast.weather.types import WeatherResult
from schemas.forecasts import ForecastPublished, ForecastPublishedEvent
from schemas.topics import FORECASTS

log = structlog.get_logger("forecast.service")
HORIZON = timedelta(hours=24)
BATCH = 256
SAVE_BATCH = 50  # facilities per write transaction
HISTORY_QUERIES = 4  # history queries in flight in a run (InfluxDB serves one while this process parses another)
MODEL_INTERVALS = (15, 30, 60)  # 5 min meters arrive as complete 15 min rollups


def model_name_for(base: str, interval_minutes: int) -> str:
    """The artefact serving an interval: ``platform`` for 15 min, ``platform-60m`` for hourly meters, ..."""
    return base if interval_minutes == 15 else f"{base}-{interval_minutes}m"


RUNS = Counter("energy_forecast_runs_total", "Forecast runs by outcome", ["outcome"])
RUN_SECONDS = Histogram(
    "energy_forecast_run_seconds", "Wall time of one forecast run", buckets=(1, 5, 10, 30, 60, 120, 300, 900)
)
FACILITY_RESULTS = Counter(
    "energy_forecast_facilities_total", "Facilities forecast, by quality and method", ["quality", "method"]
)
SKIPPED = Counter("energy_forecast_skipped_total", "Facilities not forecast, by reason", ["reason"])
PUBLISH_ERRORS = Counter("energy_forecast_publish_errors_total", "ForecastPublished events that could not be sent")
MODEL_ERRORS = Counter("energy_forecast_model_errors_total", "Model artefacts that could not be loaded")
GATE_SAVE_ERRORS = Counter(
    "energy_forecast_gate_save_errors_total", "Backtest decisions that could not be written to PostgreSQL"
)
LAST_SUCCESS = Gauge("energy_forecast_last_success_timestamp_seconds", "Unix time of the last successful run")

_FACILITIES_SQL = """
SELECT facility_id, timezone, latitude, longitude FROM facilities
WHERE active AND ($1::text[] IS NULL OR facility_id = ANY($1::text[])) ORDER BY facility_id
"""


@dataclass
class RunSummary:
    run_at: datetime
    facilities: int = 0
    written: int = 0
    skipped: int = 0
    seasonal_naive: int = 0
    quality: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)
    weather_sources: dict[str, int] = field(default_factory=dict)
    published: int = 0
    publish_errors: int = 0
    model_version: str | None = None
    seconds: float = 0.0


class ForecastService:
    def __init__(
        self,
        settings: Settings,
        pool: Any,
        influx: InfluxClient,
        weather: WeatherClient,
        producer: Any | None = None,
        topic: str = FORECASTS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.cfg = settings.forecast
        self.pool = pool
        self.influx = influx
        self.weather = weather
        self.producer = producer
        self.topic = topic
        self.clock = clock
        self._models: dict[str, LoadedModel | None] = {}
        self._model_keys: dict[str, str | None] = {}
        self._gates: dict[str, GateResult] = {}
        self._gates_key: tuple[Any, ...] = ()
        self.history = HistoryCache()

    def _load(self, name: str) -> LoadedModel | None:
        current = self.cfg.model_dir / name / "CURRENT"
        key = current.read_text().strip() if current.exists() else None
        if name not in self._model_keys or key != self._model_keys[name]:
            self._model_keys[name] = key
            try:
                self._models[name] = load_model(self.cfg.model_dir, name)
            except ModelLoadError as exc:
                MODEL_ERRORS.inc()
                log.error("model_load_failed", model=name, error=str(exc))
                self._models[name] = None
        return self._models.get(name)

    def current_models(self) -> dict[int, LoadedModel]:
        """The current artefact per meter interval, reloaded when CURRENT changes; intervals without one (absent
        or broken) are served seasonal naive, flagged."""
        out = {}
        for interval in MODEL_INTERVALS:
            model = self._load(model_name_for(self.cfg.model_name, interval))
            if model is not None and model.spec.interval_minutes == interval:
                out[interval] = model
        return out

    def current_model(self) -> LoadedModel | None:
        return self.current_models().get(15)

    def gates_for(self, run_at: datetime) -> dict[str, GateResult]:
        """The backtest decisions (facility id -> gate) that a run at ``run_at`` uses and extends."""
        return self._gate_cache(self.current_models(), run_at)

    def _gate_cache(self, models: dict[int, LoadedModel], run_at: datetime) -> dict[str, GateResult]:
        """Backtest decisions are kept per set of models, each for about a week (:func:`gate_expired`): a
        backtest per facility and run would cost more than the forecast itself."""
        key = tuple(sorted((i, m.label) for i, m in models.items()))
        if key != self._gates_key:
            self._gates_key, self._gates = key, {}
        for fid in [f for f, g in self._gates.items() if gate_expired(f, g, run_at)]:
            del self._gates[fid]
        return self._gates

    async def _weather_by_cell(
        self, facilities: Sequence[Any], run_at: datetime, hist_start: datetime
    ) -> dict[str, tuple[WeatherResult, Any]]:
        """Weather of every facility (by id), fetched once per grid cell (facilities of a cell share it)."""
        cells: dict[str, Any] = {}
        for f in facilities:
            cells.setdefault(self.weather.cell(f["latitude"], f["longitude"]), f)
        sem = asyncio.Semaphore(self.cfg.facility_concurrency * 4)
        fetched = await asyncio.gather(*(self._weather(f, run_at, hist_start, sem) for f in cells.values()))
        by_cell = dict(zip(cells, fetched, strict=True))
        return {f["facility_id"]: by_cell[self.weather.cell(f["latitude"], f["longitude"])] for f in facilities}

    async def _weather(
        self, f: Any, run_at: datetime, hist_start: datetime, sem: asyncio.Semaphore
    ) -> tuple[WeatherResult, Any]:
        async with sem:
            end = run_at + HORIZON
            result = await self.weather.get(f["latitude"], f["longitude"], run_at, end)
            past = await self.weather.history(f["latitude"], f["longitude"], hist_start, run_at)
            return result, past

    async def run_once(self, run_at: datetime | None = None, facility_ids: Sequence[str] | None = None) -> RunSummary:
        t0 = time.monotonic()
        run_at = quarter_floor(run_at or self.clock())
        summary = RunSummary(run_at=run_at)
        try:
            await self._run(run_at, facility_ids, summary)
        except Exception:
            RUNS.labels("error").inc()
            raise
        summary.seconds = round(time.monotonic() - t0, 3)
        RUN_SECONDS.observe(summary.seconds)
        RUNS.labels("ok").inc()
        LAST_SUCCESS.set(time.time())
        log.info(
            "forecast_run", **{k: v for k, v in summary.__dict__.items() if k != "run_at"}, run_at=run_at.isoformat()
        )
        return summary

    async def _run(self, run_at: datetime, facility_ids: Sequence[str] | None, summary: RunSummary) -> None:
        facilities = await self.pool.fetch(_FACILITIES_SQL, list(facility_ids) if facility_ids is not None else None)
        summary.facilities = len(facilities)
        if not facilities:
            return
        models = self.current_models()
        summary.model_version = models[15].label if 15 in models else None
        gates = self._gate_cache(models, run_at)
        await self._load_persisted_gates(gates, facilities, models, run_at)
        # a facility still to be backtested needs the long history (the backtest windows); one with a
        # decision only what a forecast and the quality flags need
        history = timedelta(days=self.cfg.history_days)
        short = min(history, timedelta(days=MIN_HISTORY_DAYS + 1))
        windows = {f["facility_id"]: (short if f["facility_id"] in gates else history) for f in facilities}
        hist_start = run_at - history
        weather_task = asyncio.ensure_future(self._weather_by_cell(facilities, run_at, hist_start))
        stale_after = timedelta(seconds=self.cfg.stale_after_s)
        model_turn = asyncio.Lock()  # one group in the model at a time (one inference thread)
        in_flight = asyncio.Semaphore(2)  # a group's history is read while the group before it is in the model
        queries = asyncio.Semaphore(HISTORY_QUERIES)  # InfluxDB queries in flight, whatever the groups

        async def group_run(group: Sequence[Any]) -> list[FacilityForecast]:
            async with in_flight:
                rollups = await self.history.read(
                    self.influx,
                    self.settings.influx.rollup_retention_policy,
                    {f["facility_id"]: run_at - windows[f["facility_id"]] for f in group},
                    run_at,
                    limit=queries,
                )
                weather = await weather_task
                prepared: list[Prepared] = []
                for f in group:
                    wr, past = weather[f["facility_id"]]
                    p = prepare(
                        f["facility_id"],
                        f["timezone"],
                        run_at,
                        windows[f["facility_id"]],
                        HORIZON,
                        rollups[f["facility_id"]],
                        past,
                        wr.weather,
                        wr.available,
                        stale_after,
                        wr.source.value,
                    )
                    if p is None:
                        SKIPPED.labels("no_history").inc()
                        summary.skipped += 1
                        continue
                    prepared.append(p)
                async with model_turn:
                    part = await asyncio.to_thread(forecast_batch, prepared, models, run_at, gates)
                await self._save_all(part)
                return part

        # groups in a pipeline: InfluxDB serves (and this process parses) the next group's history while the
        # model runs over the current one in its thread (decision 1040)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(group_run(facilities[i : i + BATCH])) for i in range(0, len(facilities), BATCH)]
        except ExceptionGroup as failed:  # the run fails with a group's own error (the others are cancelled)
            raise failed.exceptions[0] from None
        finally:
            if not weather_task.done():
                weather_task.cancel()
        forecasts = [fc for t in tasks for fc in t.result()]
        summary.weather_sources = dict(CountOf(wr.source.value for wr, _ in weather_task.result().values()))
        await self._persist_gates(gates, {fc.facility_id for fc in forecasts}, run_at)
        quality: CountOf[str] = CountOf()
        methods: CountOf[str] = CountOf()
        for fc in forecasts:
            quality[fc.quality] += 1
            methods[fc.method or ""] += 1
            FACILITY_RESULTS.labels(fc.quality, fc.method or "").inc()
        summary.quality = dict(quality)
        summary.methods = dict(methods)
        summary.written = len(forecasts)
        summary.seasonal_naive = sum(fc.seasonal_naive for fc in forecasts)
        if self.producer is not None:
            await self._publish_all(forecasts, summary)

    async def _load_persisted_gates(
        self, gates: dict[str, GateResult], facilities: Sequence[Any], models: dict[int, LoadedModel], run_at: datetime
    ) -> None:
        """Decisions about the current models that an earlier process made and this one has not (a restart)."""
        missing = [f["facility_id"] for f in facilities if f["facility_id"] not in gates]
        stored = await load_gates(self.pool, missing, [m.label for m in models.values()], run_at)
        for fid, gate in stored.items():
            if not gate_expired(fid, gate, run_at):
                gates[fid] = gate

    async def _persist_gates(self, gates: dict[str, GateResult], facility_ids: set[str], run_at: datetime) -> None:
        """Write the decisions this run made; a failure keeps them in memory only (counted, logged)."""
        new = [(fid, g) for fid, g in gates.items() if fid in facility_ids and g.decided_at == run_at]
        try:
            await save_gates(self.pool, new, run_at)
        except Exception as exc:  # the forecasts are stored; the next restart backtests these facilities again
            GATE_SAVE_ERRORS.inc()
            log.warning("forecast_gates_not_saved", decisions=len(new), error=repr(exc))

    async def _save_all(self, forecasts: Sequence[FacilityForecast]) -> None:
        sem = asyncio.Semaphore(self.cfg.facility_concurrency)

        async def some(part: Sequence[FacilityForecast]) -> None:
            async with sem:
                await save_forecasts(self.pool, part)

        # each facility once per run, so concurrent transactions never touch the same rows
        await asyncio.gather(*(some(forecasts[i : i + SAVE_BATCH]) for i in range(0, len(forecasts), SAVE_BATCH)))

    async def _publish_all(self, forecasts: Sequence[FacilityForecast], summary: RunSummary) -> None:
        from energy.adapters.kafka import send_event

        now = self.clock()
        for fc in forecasts:
            event = forecast_event(fc, now)
            try:
                await asyncio.wait_for(send_event(self.producer, self.topic, fc.facility_id, event), 10)
                summary.published += 1
            except Exception as exc:  # the forecast is already stored; the event is a notification
                PUBLISH_ERRORS.inc()
                summary.publish_errors += 1
                log.warning("forecast_publish_failed", facility_id=fc.facility_id, error=repr(exc))

    async def run_forever(self, stop: asyncio.Event) -> None:
        interval = self.cfg.schedule_interval_s
        while not stop.is_set():  # the schedule, not a retry loop: a failed run waits for the next slot
            try:
                await self.run_once()
            except Exception as exc:
                log.error("forecast_run_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds_until_next_run(time.time(), interval))


def seconds_until_next_run(now_epoch_s: float, interval_s: float, delay_s: float = 1.0) -> float:
    """Wait until the next multiple of ``interval_s`` since the epoch (quarter hours for 900 s), plus
    ``delay_s`` so the 15 min rollup window that just closed is in."""
    return interval_s - (now_epoch_s % interval_s) + delay_s


def forecast_event(fc: FacilityForecast, produced_at: datetime) -> ForecastPublishedEvent:
    from schemas.forecasts import ForecastQuality

    payload = ForecastPublished(
        facility_id=fc.facility_id,
        run_at=fc.run_at,
        horizon_start=fc.targets[0],
        horizon_end=fc.targets[-1] + timedelta(minutes=fc.interval_minutes),
        steps=len(fc.targets),
        model_version=fc.model_version,
        quality=ForecastQuality(fc.quality),
        seasonal_naive=fc.seasonal_naive,
        weather_available=fc.weather_available,
        sensor_coverage=fc.sensor_coverage,
    )
    event: ForecastPublishedEvent = ForecastPublishedEvent.wrap(
        payload,
        source="forecast",
        occurred_at=fc.run_at,
        # deterministic: a retried run publishes the same event id, so consumers can deduplicate
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"forecast:{fc.facility_id}:{fc.run_at.isoformat()}"),
        produced_at=produced_at,
    )
    return event
