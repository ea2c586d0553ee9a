"""Robustness of the model (issue 14): a step budget independent of data size, calendar features that
never leave their training range, a residual design that is exactly seasonal naive at zero output,
conformal calibration to 80 % on data with a known noise level, and the per-facility backtest gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from forecast.dataset import SeriesData, build_bank
from forecast.engine import GateResult, Method, forecast_batch, gate_expired
from forecast.model.artifact import LoadedModel
from forecast.model.calendar import calendar_features, spans_a_year
from forecast.model.features import ModelSpec, spec_for, trailing_day_stats, valid_origins
from forecast.model.net import QuantileLSTM
from forecast.model.train import ForecastModel, TrainConfig, apply_offsets, conformal_offsets, predict
from forecast.prepare import Rollup, prepare
from forecast.train_platform import platform_spec, synthetic_fleet, train_platform
from forecast.weather.types import HourlyWeather

TZ = "Europe/London"


def _budget_cfg() -> TrainConfig:
    return TrainConfig(max_steps=30, eval_every=10, patience_steps=10**6, ensemble=1, batch_size=16, seed=3)


def test_the_step_budget_does_not_depend_on_how_much_data_there_is() -> None:
    small = train_platform(synthetic_fleet(1, 12, seed=1), _budget_cfg())
    large = train_platform(synthetic_fleet(4, 20, seed=1), _budget_cfg())
    assert large.metrics["train_windows"] > 8 * small.metrics["train_windows"]  # an epoch would differ 8x
    assert small.metrics["steps"] == large.metrics["steps"] == 30


def test_early_stopping_counts_steps_without_improvement() -> None:
    cfg = TrainConfig(max_steps=400, eval_every=10, patience_steps=20, ensemble=1, batch_size=16, lr=0.0, seed=3)
    result = train_platform(synthetic_fleet(1, 12, seed=1), cfg)
    # lr 0: the validation loss never improves on step 0, so training stops after patience (20) steps
    assert result.metrics["steps"] == 20 and result.metrics["best_step_per_member"] == [0]


def test_no_calendar_feature_leaves_its_training_range_on_a_short_history() -> None:
    train_times = pd.date_range("2026-01-05", periods=28 * 96, freq="15min", tz="UTC")  # 28 days
    future = pd.date_range(train_times[-1], periods=300 * 96, freq="15min", tz="UTC")  # the next 300 days
    series = [SeriesData("f", TZ, train_times, np.ones(len(train_times)))]
    spec = platform_spec(series)
    assert not spec.day_of_year and not spans_a_year(train_times)
    seen = calendar_features(train_times, TZ, day_of_year=spec.day_of_year)
    ahead = calendar_features(future, TZ, day_of_year=spec.day_of_year)
    assert seen.shape[1] == ahead.shape[1] == spec.n_calendar == 11
    tolerance = 1e-6
    assert np.all(ahead.min(axis=0) >= seen.min(axis=0) - tolerance)
    assert np.all(ahead.max(axis=0) <= seen.max(axis=0) + tolerance)
    # the day-of-year pair would have: 28 days cover a small arc of the year
    doy_seen = calendar_features(train_times, TZ, day_of_year=True)[:, 11:]
    doy_ahead = calendar_features(future, TZ, day_of_year=True)[:, 11:]
    assert np.any(doy_ahead.min(axis=0) < doy_seen.min(axis=0) - 0.5)


def test_day_of_year_is_used_only_when_the_history_spans_a_year() -> None:
    year = pd.date_range("2025-01-01", periods=366 * 24, freq="1h", tz="UTC")
    assert spans_a_year(year) and not spans_a_year(year[: 300 * 24])
    assert platform_spec([SeriesData("f", TZ, year, np.ones(len(year)))]).day_of_year


@pytest.mark.parametrize("interval", [60, 15])
def test_the_network_at_zero_output_is_exactly_seasonal_naive_last_week(interval: int) -> None:
    days, per_day = 11, 1440 // interval  # 8 days of history (a week before the encoder), 2 of targets
    times = pd.date_range("2026-03-02", periods=days * per_day, freq=f"{interval}min", tz="UTC")
    load = np.random.default_rng(4).uniform(50, 150, len(times))
    series = [SeriesData("f", TZ, times, load, np.linspace(5, 20, len(times)))]
    spec = spec_for(interval, day_ahead=True)
    torch.manual_seed(0)
    net = QuantileLSTM(spec.enc_features, spec.dec_features, spec.hidden, spec.patch)
    with torch.no_grad():
        for p in net.hidden_layer.parameters():  # a non-trivial network, only its last layer outputs zero
            p.normal_()
        net.out.weight.zero_()
        net.out.bias.zero_()
    bank = build_bank(series, spec)
    origins = valid_origins(bank, spec)
    q = predict(ForecastModel.uncalibrated(spec, [net]), bank, origins)
    targets = origins[:, None] + spec.gap + 1 + np.arange(spec.horizon)[None, :]
    assert np.allclose(q[..., 1], load[targets - 7 * per_day], rtol=1e-5)
    assert np.all(q[..., 0] <= q[..., 1]) and np.all(q[..., 1] <= q[..., 2])
    with torch.no_grad():
        net.out.bias.fill_(0.05)  # a non-zero residual moves P50 off the reference: the check above can fail
    moved = predict(ForecastModel.uncalibrated(spec, [net]), bank, origins)
    assert not np.allclose(moved[..., 1], load[targets - 7 * per_day], rtol=1e-3)


@pytest.mark.parametrize(("interval", "patch"), [(5, 12), (15, 4), (30, 2), (60, 1)])
def test_every_interval_runs_its_recurrent_layers_an_hour_per_step(interval: int, patch: int) -> None:
    spec = spec_for(interval, day_ahead=False)
    assert spec.patch == patch
    net = QuantileLSTM(spec.enc_features, spec.dec_features, spec.hidden, spec.patch)
    seen: list[tuple[int, ...]] = []
    net.encoder.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    net.decoder.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    per_day = 1440 // interval
    enc = torch.zeros(2, per_day, spec.enc_features)
    dec = torch.zeros(2, per_day, spec.dec_features)
    out = net(enc, dec, torch.ones(2, per_day))
    # a day is 24 recurrent steps whatever the interval; the output still has one row per meter interval
    assert seen == [(2, 24, spec.enc_features * patch), (2, 24, spec.dec_features * patch)]
    assert tuple(out.shape) == (2, per_day, 3)


def test_a_spec_saved_before_patches_existed_loads_as_one_step_per_recurrent_step() -> None:
    saved = spec_for(15, day_ahead=False).to_json()
    del saved["patch"]
    assert ModelSpec.from_json(saved).patch == 1
    with pytest.raises(ValueError, match="multiples of the patch"):
        ModelSpec(steps_per_day=96, lookback=90, gap=0, horizon=96, patch=4)


def test_conformal_calibration_reaches_80_percent_on_data_with_known_noise() -> None:
    rng = np.random.default_rng(12)
    sigma, horizon = 2.0, 4

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        mean = rng.uniform(50, 100, (n, horizon))
        actual = mean + rng.normal(0, sigma, (n, horizon))
        # a band too narrow below (0.5 sigma) and far too wide above (3 sigma)
        pred = np.stack([mean - 0.5 * sigma, mean, mean + 3 * sigma], axis=-1)
        return pred, actual

    pred, actual = sample(5000)
    low, high = conformal_offsets(pred, actual)
    z90 = 1.2815515655446004  # standard normal 90 % quantile
    assert np.allclose(low, (z90 - 0.5) * sigma, atol=0.12)  # widened below
    assert np.allclose(high, (z90 - 3) * sigma, atol=0.12)  # narrowed above (negative: no floor)
    fresh_pred, fresh_actual = sample(20000)
    band = apply_offsets(fresh_pred, low, high)
    inside = (fresh_actual >= band[..., 0]) & (fresh_actual <= band[..., 2])
    assert 0.77 <= inside.mean() <= 0.83
    assert 0.08 <= (fresh_actual < band[..., 0]).mean() <= 0.12
    raw_inside = (fresh_actual >= fresh_pred[..., 0]) & (fresh_actual <= fresh_pred[..., 2])
    assert raw_inside.mean() < 0.72  # before calibration it was off target


# --- the per-facility backtest gate ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def weather_model() -> LoadedModel:
    """A platform model trained on synthetic facilities whose load follows temperature."""
    series = synthetic_fleet(4, 21, seed=21)
    result = train_platform(series, TrainConfig(max_steps=300, eval_every=50, ensemble=1, seed=5))
    return LoadedModel("platform", "test", result.model, {})


RUN_AT = datetime(2026, 4, 20, tzinfo=UTC)


def _prepared(fid: str, times: pd.DatetimeIndex, load: np.ndarray, temp: np.ndarray, days: int):
    hours = pd.date_range(RUN_AT - timedelta(days=days), RUN_AT + timedelta(days=1), freq="1h", inclusive="left")
    weather = HourlyWeather(tuple(h.to_pydatetime() for h in hours), tuple(np.interp(hours.asi8, times.asi8, temp)))
    rollups = [
        Rollup(t.to_pydatetime(), float(v), 1.0) for t, v in zip(times, load, strict=True) if t < pd.Timestamp(RUN_AT)
    ]
    history, horizon, stale_after = timedelta(days=days), timedelta(days=1), timedelta(hours=1)
    return prepare(fid, TZ, RUN_AT, history, horizon, rollups, weather, None, True, stale_after)


def test_the_gate_serves_naive_for_weekly_repetition_and_the_model_where_weather_drives_load(weather_model) -> None:
    from forecast.synthetic import synthetic_load, synthetic_temperature

    days = 14
    times = pd.date_range(RUN_AT - timedelta(days=days), RUN_AT + timedelta(days=1), freq="15min", inclusive="left")
    rng = np.random.default_rng(8)
    # pure weekly repetition (a rough week-long profile) plus 3 % noise: only last week predicts it
    week_profile = rng.uniform(200, 400, 7 * 96)
    weekly = week_profile[np.arange(len(times)) % (7 * 96)] * (1 + rng.normal(0, 0.03, len(times)))
    flat_temp = np.full(len(times), 16.0)
    # weather-driven: a heat spell in the last week, cooling load follows it
    temp = synthetic_temperature(times, 51.5, 3) + np.where(np.arange(len(times)) > len(times) - 8 * 96, 9.0, 0.0)
    driven = synthetic_load(times, TZ, temp, 400.0, 77)
    batch = [
        _prepared("weekly", times, weekly, flat_temp, days),
        _prepared("weather", times, driven, temp, days),
        _prepared("new", times[-3 * 96 - 96 :], driven[-3 * 96 - 96 :], temp[-3 * 96 - 96 :], days),
    ]
    assert all(p is not None for p in batch)
    gates: dict = {}
    out = {fc.facility_id: fc for fc in forecast_batch([p for p in batch if p], weather_model, RUN_AT, gates)}
    assert out["weekly"].method == Method.NAIVE_BACKTEST and out["weekly"].seasonal_naive
    assert out["weekly"].model_version == "seasonal-naive-v1" and out["weekly"].quality == "full"
    assert gates["weekly"].model_mape_pct >= 0.98 * gates["weekly"].naive_mape_pct
    assert out["weather"].method == Method.MODEL and not out["weather"].seasonal_naive
    assert out["weather"].model_version == "platform-test"
    assert gates["weather"].model_mape_pct < 0.98 * gates["weather"].naive_mape_pct
    # three days of history: never labelled full, served seasonal naive (yesterday) and flagged
    assert out["new"].quality == "insufficient_history" and out["new"].method == Method.INSUFFICIENT_HISTORY
    assert out["new"].seasonal_naive and "new" not in gates


def test_a_retrained_model_replaces_the_current_one_only_if_it_backtests_better(tmp_path) -> None:
    from forecast.model.artifact import current_version, load_model, save_model
    from forecast.train_platform import train_and_save

    series = synthetic_fleet(4, 21, seed=21)
    # lr 0: every candidate stays at step 0, i.e. exactly seasonal naive (the same holdout MAPE each time)
    stuck = TrainConfig(max_steps=20, eval_every=10, ensemble=1, lr=0.0, seed=5)
    first, result = train_and_save(series, stuck, tmp_path, "platform", "synthetic")
    assert first.promoted and first.current_version is None and current_version(tmp_path, "platform") == first.version
    second, _ = train_and_save(series, stuck, tmp_path, "platform", "synthetic")
    assert second.current_mape_pct == pytest.approx(second.candidate_mape_pct)
    assert not second.promoted and current_version(tmp_path, "platform") == first.version  # not better: kept
    kept = load_model(tmp_path, "platform", second.version)  # the candidate is kept beside it, not lost
    assert kept is not None and kept.meta["previous_version"] == first.version
    # a current model whose P50 is 30 % of the window's mean load above seasonal naive: the next naive-like
    # candidate backtests better and replaces it
    with torch.no_grad():
        result.model.nets[0].out.bias[1] = 0.3
    worse = save_model(tmp_path, "platform", result, {"source": "test"})
    third, _ = train_and_save(series, stuck, tmp_path, "platform", "synthetic")
    assert third.current_version == worse and third.current_mape_pct is not None
    assert third.candidate_mape_pct < third.current_mape_pct
    assert third.promoted and current_version(tmp_path, "platform") == third.version


def test_a_backtest_decision_lives_six_to_seven_days_staggered_per_facility() -> None:
    decided = datetime(2026, 3, 1, tzinfo=UTC)
    ages = []
    for i in range(200):
        fid = f"facility-{i}"
        gate = GateResult(True, 1.0, 2.0, 14, decided_at=decided)
        assert not gate_expired(fid, gate, decided + timedelta(days=6) - timedelta(minutes=1))
        assert gate_expired(fid, gate, decided + timedelta(days=7))
        # the first quarter hour at which it expires
        age = next(q for q in range(6 * 96, 7 * 96 + 1) if gate_expired(fid, gate, decided + timedelta(minutes=15 * q)))
        ages.append(age)
    assert len(set(ages)) > 50  # spread over the day, not all at once
    assert not gate_expired("by-hand", GateResult(True, 1.0, 2.0, 14), decided + timedelta(days=365))


def test_trailing_day_max_and_mean_match_a_direct_computation() -> None:
    rng = np.random.default_rng(5)
    for per_day in (24, 48, 96, 288):
        t = rng.normal(size=3 * per_day + 7).astype(np.float32)
        mean, mx = trailing_day_stats(t, per_day)
        for i in (0, 1, per_day - 1, per_day, per_day + 1, len(t) - 1):
            window = t[max(0, i - per_day + 1) : i + 1].astype(np.float64)
            assert mx[i] == np.float32(window.max())
            assert mean[i] == pytest.approx(window.mean(), rel=1e-5)


def test_the_training_loss_weighs_the_middle_quantile_by_one_over_the_actual() -> None:
    from forecast.model.net import training_loss

    pred = torch.tensor([[[1.0, 1.0, 3.0], [0.0, 0.15, 0.2]]])
    target = torch.tensor([[2.0, 0.05]])
    # by hand: first step 0.1*1, 0.5*1/2, 0.1*1; second 0.1*0.05, 0.5*0.1/max(0.05, 0.1), 0.1*0.15
    expected = (0.1 + 0.25 + 0.1 + 0.005 + 0.5 + 0.015) / 6
    assert float(training_loss(pred, target, (0.1, 0.5, 0.9))) == pytest.approx(expected, rel=1e-6)


def test_a_candidate_with_another_patch_is_compared_with_the_current_model_not_promoted_blindly(tmp_path) -> None:
    from dataclasses import replace

    from forecast.model.artifact import current_version
    from forecast.train_platform import train_and_save

    series = synthetic_fleet(2, 12, seed=4)
    one_step_patch = replace(platform_spec(series), patch=1)
    assert platform_spec(series).patch == 4
    # lr 0: both stay at step 0, i.e. exactly seasonal naive, so their holdout MAPEs tie
    stuck = TrainConfig(max_steps=10, eval_every=10, ensemble=1, lr=0.0, seed=5, batch_size=16)
    result = train_platform(series, stuck, spec=one_step_patch)
    from forecast.model.artifact import save_model

    first = save_model(tmp_path, "platform", result, {"source": "test"})
    second, _ = train_and_save(series, stuck, tmp_path, "platform", "synthetic")
    assert second.current_mape_pct is not None and second.candidate_mape_pct == pytest.approx(second.current_mape_pct)
    assert not second.promoted and current_version(tmp_path, "platform") == first  # a tie keeps the current one


def test_adaptive_conformal_offsets_keep_80_percent_when_errors_grow_where_a_fixed_level_window_lags() -> None:
    from forecast.evaluate import ACI_GAMMA, adaptive_conformal_offsets

    n, lag, window = 8000, 24, 672
    rng = np.random.default_rng(11)
    sigma = np.exp(np.linspace(0.0, np.log(10.0), n))  # the spread of the errors grows tenfold
    actual = rng.normal(0.0, 1.0, n) * sigma
    below, above = -actual, actual.copy()  # a raw band of zero width around a P50 of 0
    min_count = 7 * 24
    warm = slice(2000, n)  # judged after the window has filled

    def coverage(gamma: float) -> float:
        lo, hi = adaptive_conformal_offsets(below, above, lag, window, min_count, (0.0, 0.0), gamma=gamma)
        inside = (actual >= -lo) & (actual <= hi)
        return float(np.mean(inside[warm]))

    # a fixed level over the past window: its errors are smaller than today's (the window's centre is 336
    # steps back, where sigma was 10 ** (336 / 8000) = 1.10 times smaller), so it covers clearly under 80 %
    assert coverage(0.0) < 0.77
    assert 0.78 <= coverage(ACI_GAMMA) <= 0.82
    # with stationary errors the adaptive levels stay near 0.9 and the coverage near 80 % as well
    flat = rng.normal(0.0, 1.0, n)
    lo, hi = adaptive_conformal_offsets(-flat, flat.copy(), lag, window, min_count, (0.0, 0.0))
    assert 0.78 <= float(np.mean(((flat >= -lo) & (flat <= hi))[warm])) <= 0.82


def test_a_trained_model_is_re_evaluated_without_training_again() -> None:
    from forecast.evaluate import day_ahead_backtest

    series = synthetic_fleet(1, 28, seed=6, interval_minutes=60)
    test_start = series[0].times[int(len(series[0].times) * 0.8)]
    cfg = TrainConfig(max_steps=20, eval_every=10, ensemble=1, batch_size=16, seed=3)
    first = day_ahead_backtest("syn", series, test_start, cfg)
    again = day_ahead_backtest("syn", series, test_start, trained=first.result)
    assert again.result is first.result  # the same networks, no new training
    assert again.mape_pct == first.mape_pct and again.coverage_pct == first.coverage_pct
    assert again.test_steps == first.test_steps > 0
