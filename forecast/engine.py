"""Forecast a batch of prepared facilities with the model, or seasonal naive when it is missing or fails."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import structlog

from forecast.model.artifact import LoadedModel
from forecast.model.features import SeriesBank
from forecast.model.naive import seasonal_naive
from forecast.model.train import predict
from forecast.prepare import STEPS_PER_DAY, Prepared
from forecast.store import FacilityForecast

log = structlog.get_logger("forecast.engine")
SEASONAL_NAIVE_VERSION = "seasonal-naive-v1"
MIN_OBSERVED_FOR_MODEL = 0.5  # below this the model's inputs would be mostly imputed


def _model_quantiles(model: LoadedModel, batch: Sequence[Prepared]) -> np.ndarray:
    import torch

    torch.set_num_threads(2)  # the machine is shared; inference is batched, two threads are plenty
    spec = model.spec
    series = []
    for p in batch:
        if p.history_steps < spec.history_needed:
            raise ValueError(f"history of {p.history_steps} steps, the model needs {spec.history_needed}")
        load = np.concatenate([p.load, np.zeros(len(p.times) - p.history_steps)])
        series.append((load, p.temp_c, p.calendar))
    bank = SeriesBank.build(series, spec.steps_per_day)
    origins = bank.starts + np.array([p.history_steps - 1 for p in batch])
    return predict(model.net, bank, spec, origins, model.band_scale)


def forecast_batch(
    batch: Sequence[Prepared], model: LoadedModel | None, run_at: datetime, horizon: int
) -> list[FacilityForecast]:
    """One FacilityForecast per prepared facility. Model failure degrades to seasonal naive, never raises."""
    use_model = [p for p in batch if model is not None and p.observed_fraction >= MIN_OBSERVED_FOR_MODEL]
    quantiles: dict[str, np.ndarray] = {}
    if model is not None and use_model:
        try:
            if model.spec.horizon != horizon or model.spec.steps_per_day != STEPS_PER_DAY or model.spec.gap != 0:
                raise ValueError(f"model {model.label} does not forecast {horizon} steps of 15 min from now")
            q = _model_quantiles(model, use_model)
            if not np.all(np.isfinite(q)):
                raise ValueError("model produced non-finite values")
            quantiles = {p.facility_id: q[i] for i, p in enumerate(use_model)}
        except Exception as exc:  # any model failure: seasonal naive, flagged, and counted by the caller
            log.warning("model_failed", model=model.label, error=repr(exc))
            quantiles = {}
    out = []
    for p in batch:
        found = quantiles.get(p.facility_id)
        naive = found is None
        raw = seasonal_naive(p.load, horizon, STEPS_PER_DAY) if found is None else found
        q = np.sort(np.maximum(raw, 0.0), axis=-1)  # guards P10 <= P50 <= P90 after clipping
        out.append(
            FacilityForecast(
                facility_id=p.facility_id,
                run_at=run_at,
                model_version=SEASONAL_NAIVE_VERSION if naive or model is None else model.label,
                quality=p.quality.value,
                seasonal_naive=naive,
                weather_available=p.weather_available,
                sensor_coverage=p.sensor_coverage,
                targets=[t.to_pydatetime() for t in p.times[p.history_steps : p.history_steps + horizon]],
                p10=q[:, 0].tolist(),
                p50=q[:, 1].tolist(),
                p90=q[:, 2].tolist(),
                weather_source=p.weather_source,
            )
        )
    return out
