"""Forecast a batch of prepared facilities (any meter interval). Per facility a backtest on its own recent
history decides what is served: the model where it beats seasonal naive, seasonal naive (flagged) where it
does not, and seasonal naive flagged ``insufficient_history`` below the minimum history. The backtest
windows also give the facility's own conformal band offsets. Model failure degrades to seasonal naive."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import structlog

from forecast.model.artifact import LoadedModel
from forecast.model.calendar import calendar_features
from forecast.model.features import SeriesBank
from forecast.model.naive import seasonal_naive
from forecast.model.train import apply_offsets, conformal_offsets, raw_predict
from forecast.prepare import Prepared
from forecast.store import FacilityForecast
from schemas.forecasts import ForecastQuality

log = structlog.get_logger("forecast.engine")
SEASONAL_NAIVE_VERSION = "seasonal-naive-v1"
MIN_OBSERVED_FOR_MODEL = 0.5  # below this the model's inputs would be mostly imputed
BACKTEST_PER_DAY = 2  # backtest origins per day of history (every 12 h)
BACKTEST_DAYS = 7  # at most this many days of backtest origins
MIN_BACKTEST_WINDOWS = 4
MODEL_MUST_BEAT = 0.98  # the model is served when its backtest MAPE < 0.98 x seasonal naive's (ties: naive)
MIN_CONFORMAL_WINDOWS = 12  # fewer backtest windows: the model's own (training) band offsets
GATE_MAX_AGE = timedelta(days=7)  # a backtest decision is kept per model for up to a week
# windows per forward pass: the LSTM's per-step activations of 512 windows stay in a core's cache; 2,048 at once
# cost ~1.5x the CPU for the same windows (measured, decision 1040)
INFERENCE_BATCH = 512


class Method:
    MODEL = "model"
    NAIVE_BACKTEST = "seasonal_naive_backtest"  # the model lost the facility's backtest
    NAIVE_NO_MODEL = "seasonal_naive_no_model"  # no model for this interval, or it failed
    NAIVE_SPARSE = "seasonal_naive_sparse_data"  # too few observed steps for the model's inputs
    INSUFFICIENT_HISTORY = "insufficient_history"


@dataclass
class GateResult:
    use_model: bool
    model_mape_pct: float
    naive_mape_pct: float
    windows: int
    low_offset: np.ndarray | None = None  # facility's own conformal offsets (scaled units), per lead
    high_offset: np.ndarray | None = None
    decided_at: datetime | None = None  # run that backtested; None: set by hand, never expires
    model_version: str | None = None  # label of the model backtested; None: set by hand, valid for any model


def gate_expired(facility_id: str, gate: GateResult, now: datetime) -> bool:
    """A decision is redone after 6 to 7 days (staggered per facility, so a fleet backtested in one run is
    not backtested again all in one run), or when the model changes (the caller's cache is per model)."""
    if gate.decided_at is None:
        return False
    stagger = timedelta(minutes=15 * (zlib.crc32(facility_id.encode()) % 96))
    return now - gate.decided_at >= GATE_MAX_AGE - timedelta(days=1) + stagger


def backtest_origins(p: Prepared, history_needed: int, horizon: int) -> np.ndarray:
    """Origins (indices into the history) whose targets and their week-earlier references lie in the observed
    part of the history (never judged on imputed values), newest first."""
    stride = max(1, p.steps_per_day // BACKTEST_PER_DAY)
    last = p.history_steps - 1 - horizon
    week = 7 * p.steps_per_day
    first = max(history_needed - 1, p.first_observed + week - 1, last - BACKTEST_DAYS * p.steps_per_day)
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(last, first - 1, -stride, dtype=np.int64)


def _bank(batch: Sequence[Prepared], model: LoadedModel) -> SeriesBank:
    spec = model.spec
    series = []
    for p in batch:
        load = np.concatenate([p.load, np.zeros(len(p.times) - p.history_steps)])
        cal = (
            calendar_features(p.times, p.timezone, day_of_year=spec.day_of_year, year_end=spec.year_end)
            if spec.day_of_year or spec.year_end
            else p.calendar
        )
        series.append((load, p.temp_c, cal))
    return SeriesBank.build(series, spec.steps_per_day)


def _gate_and_forecast(
    model: LoadedModel, batch: Sequence[Prepared], gates: dict[str, GateResult], run_at: datetime
) -> dict[str, tuple[np.ndarray, GateResult]]:
    """Model quantiles for every facility of ``batch`` (same interval) and its gate; backtests are run only
    for facilities missing from ``gates`` (a cache the caller keeps per model; see :func:`gate_expired`)."""
    spec = model.spec
    for p in batch:
        if p.history_steps < spec.history_needed or p.horizon_steps != spec.horizon:
            raise ValueError(f"{p.facility_id}: {p.history_steps}+{p.horizon_steps} steps do not fit {model.label}")
    for p in batch:  # a decision about another model (e.g. read back from the database) is no decision
        gate = gates.get(p.facility_id)
        if gate is not None and gate.model_version not in (None, model.label):
            del gates[p.facility_id]
    bank = _bank(batch, model)
    origins, owners, kinds = [], [], []
    for i, (p, start) in enumerate(zip(batch, bank.starts, strict=True)):
        origins.append(start + p.history_steps - 1)
        owners.append(i)
        kinds.append(0)
        if p.facility_id not in gates:
            bt = backtest_origins(p, spec.history_needed, spec.gap + spec.horizon)
            origins += list(start + bt)
            owners += [i] * len(bt)
            kinds += [1] * len(bt)
    o, own, kind = np.asarray(origins, dtype=np.int64), np.asarray(owners), np.asarray(kinds)
    pred, scale = raw_predict(model.model.nets, bank, spec, o, batch=INFERENCE_BATCH)
    if not np.all(np.isfinite(pred)):
        raise ValueError("model produced non-finite values")
    tgt = o[:, None] + spec.gap + 1 + np.arange(spec.horizon)[None, :]
    actual = bank.load[tgt] / scale[:, None]
    reference = bank.load[tgt - spec.week] / scale[:, None]
    out = {}
    for i, p in enumerate(batch):
        gate = gates.get(p.facility_id)
        if gate is None:
            sel = (own == i) & (kind == 1)
            gate = _decide(pred[sel], actual[sel], reference[sel])
            gate.decided_at, gate.model_version = run_at, model.label
            gates[p.facility_id] = gate
        now = (own == i) & (kind == 0)
        low = gate.low_offset if gate.low_offset is not None else model.model.low_offset
        high = gate.high_offset if gate.high_offset is not None else model.model.high_offset
        q = apply_offsets(pred[now], low, high)[0] * scale[now][0]
        out[p.facility_id] = (q, gate)
    return out


def _decide(pred: np.ndarray, actual: np.ndarray, reference: np.ndarray) -> GateResult:
    n = len(pred)
    if n < MIN_BACKTEST_WINDOWS:
        return GateResult(False, float("nan"), float("nan"), n)
    denom = np.maximum(np.abs(actual), 1e-6)
    model_mape = float(np.mean(np.abs(pred[..., 1] - actual) / denom) * 100)
    naive_mape = float(np.mean(np.abs(reference - actual) / denom) * 100)
    gate = GateResult(model_mape < MODEL_MUST_BEAT * naive_mape, model_mape, naive_mape, n)
    if n >= MIN_CONFORMAL_WINDOWS:
        gate.low_offset, gate.high_offset = conformal_offsets(pred, actual)
    return gate


def forecast_batch(
    batch: Sequence[Prepared],
    models: Mapping[int, LoadedModel] | LoadedModel | None,
    run_at: datetime,
    gates: dict[str, GateResult] | None = None,
) -> list[FacilityForecast]:
    """One FacilityForecast per prepared facility. ``models``: by interval in minutes (or one model for its
    own interval). ``gates``: backtest decisions already made (filled in with the new ones). Never raises
    for a model failure: seasonal naive, flagged."""
    import torch

    # one thread: inference is batched, and two threads spinning against other work on a shared 2-core
    # machine were several times slower (measured in training: 0.94 s vs 0.11 s a step)
    torch.set_num_threads(1)
    if isinstance(models, LoadedModel):
        models = {models.spec.interval_minutes: models}
    models = models or {}
    gates = {} if gates is None else gates
    results: dict[str, tuple[np.ndarray, GateResult]] = {}
    for interval, model in models.items():
        group = [
            p
            for p in batch
            if p.interval_minutes == interval
            and p.quality != ForecastQuality.INSUFFICIENT_HISTORY
            and p.observed_fraction >= MIN_OBSERVED_FOR_MODEL
        ]
        if not group:
            continue
        try:
            results.update(_gate_and_forecast(model, group, gates, run_at))
        except Exception as exc:  # any model failure: seasonal naive, flagged, and counted by the caller
            log.warning("model_failed", model=model.label, error=repr(exc))
    out = []
    targets_of: dict[tuple[int, int], list[datetime]] = {}  # facilities of a run share a few grids
    for p in batch:
        key = (id(p.times), p.history_steps)  # the grids are alive (held by ``batch``) during this call
        if key not in targets_of:
            targets_of[key] = list(p.times[p.history_steps :].to_pydatetime())
        served = models.get(p.interval_minutes)
        found = results.get(p.facility_id)
        if p.quality == ForecastQuality.INSUFFICIENT_HISTORY:
            method = Method.INSUFFICIENT_HISTORY
        elif found is not None:
            method = Method.MODEL if found[1].use_model else Method.NAIVE_BACKTEST
        elif served is not None and p.observed_fraction < MIN_OBSERVED_FOR_MODEL:
            method = Method.NAIVE_SPARSE
        else:
            method = Method.NAIVE_NO_MODEL
        use_model = method == Method.MODEL and found is not None and served is not None
        naive = seasonal_naive(p.load, p.horizon_steps, p.steps_per_day) if not use_model else None
        raw = found[0] if found is not None and naive is None else naive
        assert raw is not None
        q = np.sort(np.maximum(raw, 0.0), axis=-1)  # guards P10 <= P50 <= P90 after clipping
        out.append(
            FacilityForecast(
                facility_id=p.facility_id,
                run_at=run_at,
                model_version=served.label if use_model and served is not None else SEASONAL_NAIVE_VERSION,
                quality=p.quality.value,
                seasonal_naive=not use_model,
                weather_available=p.weather_available,
                sensor_coverage=p.sensor_coverage,
                targets=targets_of[key],
                p10=q[:, 0].tolist(),
                p50=q[:, 1].tolist(),
                p90=q[:, 2].tolist(),
                weather_source=p.weather_source,
                method=method,
                interval_minutes=p.interval_minutes,
            )
        )
    return out
