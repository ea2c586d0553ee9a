"""The model: reproducible training on small data, versioned artefacts, no look-ahead in the features,
seasonal-naive fallback, and the vic_elec baselines reproduced exactly as referenced. The robustness
properties (step budget, residual design, calendar ranges, calibration) are in test_robustness.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from forecast.model.artifact import ModelLoadError, load_model, save_model
from forecast.model.calendar import calendar_features
from forecast.model.features import ModelSpec, SeriesBank, make_batch, valid_origins
from forecast.model.naive import seasonal_naive
from forecast.model.train import TrainConfig, predict
from forecast.train_platform import PLATFORM_SPEC, synthetic_fleet, train_platform

SMALL = ModelSpec(steps_per_day=96, lookback=96, gap=0, horizon=96, hidden=16)


def _quick_train(seed: int):
    series = synthetic_fleet(2, 10, seed=11)
    cfg = TrainConfig(max_steps=20, eval_every=10, ensemble=2, batch_size=32, seed=seed)
    return train_platform(series, cfg, spec=SMALL)


def test_quick_training_is_reproducible_with_a_seed_and_reports_metrics() -> None:
    a, b = _quick_train(5), _quick_train(5)
    assert a.metrics["val_pinball"] == b.metrics["val_pinball"]
    assert len(a.model.nets) == len(b.model.nets) == 2
    for net_a, net_b in zip(a.model.nets, b.model.nets, strict=True):
        for (ka, va), (kb, vb) in zip(net_a.state_dict().items(), net_b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
    assert np.array_equal(a.model.low_offset, b.model.low_offset)
    assert a.metrics["steps"] >= 10 and a.metrics["train_windows"] > 0 and a.metrics["val_windows"] > 0
    assert np.isfinite(a.metrics["val_pinball"])


def test_artefact_round_trip_predicts_the_same(tmp_path) -> None:
    result = _quick_train(1)
    version = save_model(tmp_path, "platform", result, {"source": "test"})
    loaded = load_model(tmp_path, "platform")
    assert loaded is not None and loaded.version == version and loaded.spec == SMALL
    meta = json.loads((tmp_path / "platform" / version / "meta.json").read_text())
    assert meta["spec"]["horizon"] == 96 and "val_pinball" in meta["metrics"] and meta["source"] == "test"
    series = synthetic_fleet(1, 9, seed=2)
    from forecast.dataset import build_bank

    bank = build_bank(series, SMALL)
    origins = valid_origins(bank, SMALL)[-3:]
    p1 = predict(result.model, bank, origins)
    p2 = predict(loaded.model, bank, origins)
    assert np.allclose(p1, p2) and p1.shape == (3, 96, 3)
    assert np.all(p1[..., 0] <= p1[..., 1]) and np.all(p1[..., 1] <= p1[..., 2])


def test_missing_model_is_none_and_corrupt_model_is_a_load_error(tmp_path) -> None:
    assert load_model(tmp_path, "platform") is None
    (tmp_path / "platform" / "v1").mkdir(parents=True)
    (tmp_path / "platform" / "v1" / "meta.json").write_text("{not json")
    (tmp_path / "platform" / "CURRENT").write_text("v1")
    with pytest.raises(ModelLoadError):
        load_model(tmp_path, "platform")


def test_features_use_no_load_after_the_origin() -> None:
    n = 96 * 10
    times = pd.date_range("2026-03-01", periods=n, freq="15min", tz="UTC")
    load = np.random.default_rng(0).uniform(50, 150, n)
    temp = np.linspace(5, 25, n)
    cal = calendar_features(times, "Europe/London")
    spec = PLATFORM_SPEC
    origin = np.array([n - spec.horizon - 1])
    bank = SeriesBank.build([(load, temp, cal)], 96)
    future_changed = load.copy()
    future_changed[origin[0] + 1 :] *= 10
    bank2 = SeriesBank.build([(future_changed, temp, cal)], 96)
    b1, b2 = make_batch(bank, spec, origin), make_batch(bank2, spec, origin)
    assert np.array_equal(b1.enc, b2.enc) and np.array_equal(b1.dec, b2.dec) and np.array_equal(b1.scale, b2.scale)
    assert np.array_equal(b1.reference, b2.reference)
    assert not np.array_equal(b1.targets, b2.targets)  # the targets are the future


def test_seasonal_naive_repeats_last_week_with_an_ordered_band() -> None:
    history = np.arange(96 * 8, dtype=float) + 100
    q = seasonal_naive(history, 96, 96)
    assert np.array_equal(q[:, 1], history[-7 * 96 : -6 * 96])
    assert np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
    short = seasonal_naive(np.array([5.0] * 96 * 2), 96, 96)  # under a week: yesterday
    assert np.allclose(short[:, 1], 5.0)


def test_vic_elec_seasonal_naive_baselines_match_the_reference() -> None:
    from forecast.vic_elec import load_vic_elec, seasonal_naive_mape

    data = load_vic_elec()
    assert str(data.times[data.test_start].date()) == "2014-05-26"
    assert len(data.load) == 26304 and len(data.load) - data.test_start == 5261
    assert round(seasonal_naive_mape(data, 24), 2) == 6.90
    assert round(seasonal_naive_mape(data, 168), 2) == 5.21


def test_holidays_follow_the_facility_timezone() -> None:
    times = pd.DatetimeIndex(["2026-11-03T02:00Z", "2026-11-03T20:00Z"])  # Melbourne Cup day is 3 Nov (local)
    cal = calendar_features(times, "Australia/Melbourne")
    # a holiday is encoded as a Sunday (column 4 + 6); 3 Nov 2026 is a Tuesday, 4 Nov a Wednesday
    assert cal[0, 10] == 1.0 and cal[0, 4 + 1] == 0.0  # 13:00 local on 3 Nov
    assert cal[1, 10] == 0.0 and cal[1, 4 + 2] == 1.0  # 07:00 local on 4 Nov


async def test_training_runs_on_the_platforms_own_rollups_and_recorded_weather(
    settings, pg_pool, influx, make_facility, uid, tmp_path
) -> None:
    from datetime import UTC, datetime, timedelta

    from energy.adapters.influx import point
    from forecast.prepare import quarter_floor
    from forecast.synthetic import synthetic_load, synthetic_temperature
    from forecast.train_platform import train_and_save
    from forecast.training_data import influx_series
    from forecast.weather.cache import WeatherCache
    from forecast.weather.types import HourlyWeather, cell_id

    end = quarter_floor(datetime.now(UTC))
    times = pd.date_range(end - timedelta(days=12), end, freq="15min", inclusive="left")
    lat, lon = -30.1 - (int(uid, 16) % 200) * 0.25, 120.1
    ids = [await make_facility(lat, lon, timezone="Australia/Melbourne") for _ in range(2)]
    for i, fid in enumerate(ids):
        temp = synthetic_temperature(times, lat, i)
        load = synthetic_load(times, "Australia/Melbourne", temp, 300.0, i)
        lines = [
            point(
                "facility_rollups",
                {"facility_id": fid, "window": "15m"},
                {"avg_kw": float(v), "coverage": 1.0},
                t.to_pydatetime(),
            )
            for t, v in zip(times, load, strict=True)
        ]
        await influx.write_lines(lines, retention_policy=settings.influx.rollup_retention_policy)
    hours = pd.date_range(times[0], end, freq="1h", inclusive="left")
    recorded = HourlyWeather(
        tuple(h.to_pydatetime() for h in hours), tuple(float(v) for v in synthetic_temperature(hours, lat, 9))
    )
    await WeatherCache(pg_pool).store(cell_id(lat, lon, 0.25), "weatherapi", datetime.now(UTC), recorded)

    series = await influx_series(settings, 12, ids)
    assert [s.name for s in series] == ids and {s.interval_minutes for s in series} == {15}
    assert np.isfinite(series[0].load).mean() > 0.99
    assert np.allclose(series[0].temp_c[::4][:24], recorded.temp_c[:24])
    cfg = TrainConfig(max_steps=10, eval_every=10, ensemble=1, batch_size=32)
    promotion, result = train_and_save(series, cfg, tmp_path, "platform", "influx")
    loaded = load_model(tmp_path, "platform")
    assert promotion.promoted and promotion.current_version is None  # nothing to beat: the first one serves
    assert loaded is not None and loaded.version == promotion.version and loaded.meta["source"] == "influx"
    assert result.metrics["train_windows"] > 0


def test_hourly_weather_is_interpolated_onto_the_quarter_hour_grid() -> None:
    from datetime import UTC, datetime, timedelta

    from forecast.prepare import temperatures
    from forecast.weather.types import HourlyWeather

    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    w = HourlyWeather(tuple(t0 + timedelta(hours=i) for i in range(3)), (10.0, 14.0, 12.0))
    grid = pd.date_range(t0, periods=9, freq="15min")  # pandas 3 gives microsecond resolution here
    assert np.allclose(temperatures(grid, [w]), [10, 11, 12, 13, 14, 13.5, 13, 12.5, 12])


def test_schedule_is_aligned_to_the_quarter_hour() -> None:
    from datetime import UTC, datetime

    from forecast.service import seconds_until_next_run

    now = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC).timestamp()
    assert seconds_until_next_run(now, 900) == 7 * 60 + 30 + 1  # 10:15:01
    on_boundary = datetime(2026, 1, 1, 10, 15, tzinfo=UTC).timestamp()
    assert seconds_until_next_run(on_boundary, 900) == 901
