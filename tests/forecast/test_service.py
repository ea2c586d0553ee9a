"""The forecast service end to end on real PostgreSQL, InfluxDB and the weather simulator (a subprocess).

FC-2: every forecast row records model version, quality, weather availability and sensor coverage.
FC-4: no trained model, or a broken one, gives a seasonal-naive forecast flagged seasonal_naive.
The backtest gate's choice itself is tested in test_robustness.py; tests here that need the model path
record a won backtest for their facility first (``_model_wins``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from energy.adapters.influx import point
from forecast.engine import GateResult, Method
from forecast.model.artifact import save_model
from forecast.model.train import TrainConfig
from forecast.prepare import quarter_floor
from forecast.read import latest_forecast
from forecast.service import ForecastService, forecast_event
from forecast.synthetic import synthetic_load, synthetic_temperature
from forecast.train_platform import synthetic_fleet, train_platform
from forecast.weather.client import build_weather_client

TZ = "Australia/Melbourne"


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory) -> Path:
    """A real (tiny) platform model trained on synthetic facilities, saved as an artefact."""
    model_dir = tmp_path_factory.mktemp("models")
    series = synthetic_fleet(2, 12, seed=3)
    result = train_platform(series, TrainConfig(max_steps=20, eval_every=10, ensemble=2, batch_size=32, seed=3))
    save_model(model_dir, "platform", result, {"source": "synthetic-test"})
    return model_dir


def _model_wins(service: ForecastService, fid: str, run_at: datetime) -> None:
    service.gates_for(run_at)[fid] = GateResult(True, 1.0, 2.0, 28)


def _location(uid: str) -> tuple[float, float]:
    n = int(uid, 16)
    return -55 + (n % 440) * 0.25 + 0.1, -175 + ((n // 440) % 1400) * 0.25 + 0.1


async def _write_rollups(influx, settings, fid, run_at, days=10, end_gap=timedelta(0), coverage=1.0, seed=1):
    times = pd.date_range(run_at - timedelta(days=days), run_at - end_gap, freq="15min", inclusive="left")
    temp = synthetic_temperature(times, -37.8, seed)
    load = synthetic_load(times, TZ, temp, 400.0, seed)
    lines = [
        point(
            "facility_rollups",
            {"facility_id": fid, "window": "15m"},
            {"avg_kw": float(v), "coverage": float(coverage), "sample_count": 600},
            t.to_pydatetime(),
        )
        for t, v in zip(times, load, strict=True)
    ]
    for i in range(0, len(lines), 5000):
        await influx.write_lines(lines[i : i + 5000], retention_policy=settings.influx.rollup_retention_policy)
    return times, load


def _service(settings, pg_pool, influx, http, sim, model_dir: Path, **forecast_overrides):
    fs = sim.forecast_settings(settings, model_dir=model_dir, **forecast_overrides)
    s = settings.model_copy(update={"forecast": fs})
    return ForecastService(s, pg_pool, influx, build_weather_client(fs, http, pg_pool))


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def _run_at() -> datetime:
    return quarter_floor(datetime.now(UTC))


async def test_run_writes_96_quarter_hours_with_model_version_quality_weather_and_coverage(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at, coverage=0.9)
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    _model_wins(service, fid, run_at)
    summary = await service.run_once(run_at, [fid])
    assert summary.written == 1 and summary.seasonal_naive == 0 and summary.methods == {Method.MODEL: 1}
    assert summary.weather_sources == {"primary": 1}
    rows = await latest_forecast(pg_pool, fid, run_at, run_at + timedelta(days=2))
    assert len(rows) == 96
    assert rows[0].target_ts == run_at and rows[-1].target_ts == run_at + timedelta(minutes=15 * 95)
    assert {r.quality for r in rows} == {"full"}
    assert {r.model_version for r in rows} == {summary.model_version} and summary.model_version.startswith("platform-")
    assert all(r.weather_available and not r.seasonal_naive for r in rows)
    assert all(abs(r.sensor_coverage - 0.9) < 1e-9 for r in rows)
    assert all(0 <= r.p10_kw <= r.p50_kw <= r.p90_kw for r in rows)
    run = await pg_pool.fetchrow("SELECT * FROM forecast_runs WHERE facility_id = $1 AND run_at = $2", fid, run_at)
    assert run is not None and run["quality"] == "full" and run["model_version"] == summary.model_version
    assert run["weather_source"] == "primary" and run["method"] == Method.MODEL


async def test_retried_run_is_idempotent(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at)
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    first = await service.run_once(run_at, [fid])
    second = await service.run_once(run_at, [fid])
    assert first.written == second.written == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM load_forecasts WHERE facility_id = $1", fid) == 96
    assert await pg_pool.fetchval("SELECT count(*) FROM forecast_runs WHERE facility_id = $1", fid) == 1


async def test_no_trained_model_gives_flagged_seasonal_naive(
    settings, pg_pool, influx, http, weather_sim, make_facility, tmp_path, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    _, load = await _write_rollups(influx, settings, fid, run_at)
    service = _service(settings, pg_pool, influx, http, weather_sim, tmp_path / "empty")
    summary = await service.run_once(run_at, [fid])
    assert summary.seasonal_naive == 1 and summary.model_version is None
    rows = await latest_forecast(pg_pool, fid, run_at, run_at + timedelta(days=1))
    assert len(rows) == 96 and all(r.seasonal_naive for r in rows)
    assert {r.model_version for r in rows} == {"seasonal-naive-v1"}
    # P50 is the same quarter hour one week earlier
    week_ago = load[-7 * 96 : -6 * 96]
    assert np.allclose([r.p50_kw for r in rows], week_ago, rtol=1e-6)


async def test_broken_model_artefact_falls_back_to_flagged_seasonal_naive(
    settings, pg_pool, influx, http, weather_sim, make_facility, tmp_path, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at)
    broken = tmp_path / "models" / "platform"
    (broken / "v-broken").mkdir(parents=True)
    (broken / "v-broken" / "meta.json").write_text('{"feature_spec_version": 1, "spec": {}}')
    (broken / "v-broken" / "weights.pt").write_bytes(b"not a model")
    (broken / "CURRENT").write_text("v-broken\n")
    service = _service(settings, pg_pool, influx, http, weather_sim, tmp_path / "models")
    summary = await service.run_once(run_at, [fid])
    assert summary.written == 1 and summary.seasonal_naive == 1
    rows = await latest_forecast(pg_pool, fid, run_at, run_at + timedelta(days=1))
    assert all(r.seasonal_naive and r.model_version == "seasonal-naive-v1" for r in rows)


async def test_weather_unavailable_marks_degraded_no_weather(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at)
    weather_sim.fault("all", "down")
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir, weather_retry_attempts=1)
    summary = await service.run_once(run_at, [fid])
    assert summary.weather_sources == {"none": 1}
    rows = await latest_forecast(pg_pool, fid, run_at, run_at + timedelta(days=1))
    assert len(rows) == 96
    assert {r.quality for r in rows} == {"degraded_no_weather"} and not any(r.weather_available for r in rows)
    source = await pg_pool.fetchval("SELECT weather_source FROM forecast_runs WHERE facility_id = $1", fid)
    assert source == "none"


async def test_stale_rollups_mark_degraded_stale_data_and_low_coverage_is_recorded(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at, end_gap=timedelta(hours=6), coverage=1.0)
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    await service.run_once(run_at, [fid])
    rows = await latest_forecast(pg_pool, fid, run_at, run_at + timedelta(days=1))
    assert {r.quality for r in rows} == {"degraded_stale_data"}
    # the last 6 of 24 hours have no rollup: coverage of the last day is 0.75
    assert all(abs(r.sensor_coverage - 0.75) < 1e-9 for r in rows)


async def test_facility_without_history_is_skipped_not_failed(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    summary = await service.run_once(_run_at(), [fid])
    assert summary.facilities == 1 and summary.skipped == 1 and summary.written == 0


def test_published_event_is_valid_and_deterministic_per_run() -> None:
    from forecast.store import FacilityForecast
    from schemas.registry import decode_event

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    fc = FacilityForecast(
        "fac-001",
        t0,
        "platform-x",
        "full",
        False,
        True,
        0.5,
        [t0 + timedelta(minutes=15 * i) for i in range(96)],
        [1.0] * 96,
        [2.0] * 96,
        [3.0] * 96,
    )
    a, b = forecast_event(fc, t0), forecast_event(fc, t0 + timedelta(seconds=5))
    assert a.event_id == b.event_id
    decoded = decode_event(a.to_bytes())
    assert decoded.payload.steps == 96 and decoded.payload.horizon_end == t0 + timedelta(days=1)


async def test_run_publishes_one_forecast_published_event_per_facility_with_stable_id(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    from aiokafka import AIOKafkaConsumer

    from energy.adapters.kafka import make_producer
    from energy.stack.topics import ensure_topics_async
    from schemas.registry import decode_event

    topic = f"t-forecasts-{uid}"
    await ensure_topics_async(settings.kafka.bootstrap_servers, {topic: 1})
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        fs = weather_sim.forecast_settings(settings, model_dir=trained_model_dir)
        s = settings.model_copy(update={"forecast": fs})
        service = ForecastService(s, pg_pool, influx, build_weather_client(fs, http, pg_pool), producer, topic)
        first = await service.run_once(run_at, [fid])
        second = await service.run_once(run_at, [fid])  # a retried run
    finally:
        await producer.stop()
    assert first.published == second.published == 1 and first.publish_errors == 0
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records = []
        for _ in range(30):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += batch
            if len(records) >= 2:
                break
    finally:
        await consumer.stop()
    assert len(records) == 2 and all(r.key == fid.encode() for r in records)
    events = [decode_event(r.value) for r in records]
    assert events[0].event_id == events[1].event_id  # consumers can deduplicate the retry
    assert events[0].payload.facility_id == fid and events[0].payload.quality == "full"
    assert events[0].payload.steps == 96 and events[0].payload.run_at == run_at


async def test_the_service_backtests_each_facility_once_a_week_and_flags_a_short_history(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    lat, lon = _location(uid)
    old = await make_facility(lat, lon, timezone=TZ)
    new = await make_facility(lat, lon, timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, old, run_at, days=10)
    await _write_rollups(influx, settings, new, run_at, days=3)
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    summary = await service.run_once(run_at, [old, new])
    assert summary.written == 2
    gate = service.gates_for(run_at)[old]
    # 14 days read, the last 10 observed: origins every 12 h from (4 days + 1 week - 1 step) to
    # (14 days - 1 day - 1 step), i.e. from step 1055 to 1247: (1247 - 1055) / 48 + 1 = 5 windows
    assert gate.windows == 5 and np.isfinite(gate.model_mape_pct) and np.isfinite(gate.naive_mape_pct)
    assert new not in service.gates_for(run_at)  # never backtested: too little history
    runs = {
        r["facility_id"]: r
        for r in await pg_pool.fetch("SELECT * FROM forecast_runs WHERE facility_id = ANY($1::text[])", [old, new])
    }
    expected = Method.MODEL if gate.use_model else Method.NAIVE_BACKTEST
    assert runs[old]["method"] == expected and runs[old]["seasonal_naive"] == (not gate.use_model)
    assert runs[new]["quality"] == "insufficient_history" and runs[new]["method"] == Method.INSUFFICIENT_HISTORY
    assert runs[new]["seasonal_naive"] and runs[new]["model_version"] == "seasonal-naive-v1"
    assert gate.decided_at == run_at
    # the next quarter hour: the decision is reused, not recomputed, and only the newest hours are read
    points = service.history.points_read
    nxt = run_at + timedelta(minutes=15)
    again = await service.run_once(nxt, [old, new])
    assert again.written == 2 and service.gates_for(nxt)[old] is gate
    assert service.history.points_read - points <= 2 * (2 * 4 + 1)  # 2 h re-read per facility, at most
    assert old not in service.gates_for(run_at + timedelta(days=7))  # a week later: backtested again


async def test_a_restarted_service_reuses_the_persisted_backtest_decision_and_reads_the_short_window(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid
):
    fid = await make_facility(*_location(uid), timezone=TZ)
    run_at = _run_at()
    await _write_rollups(influx, settings, fid, run_at, days=10)
    first = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    summary = await first.run_once(run_at, [fid])
    decided = first.gates_for(run_at)[fid]
    row = await pg_pool.fetchrow("SELECT * FROM forecast_gates WHERE facility_id = $1", fid)
    assert row is not None and row["model_version"] == summary.model_version and row["decided_at"] == run_at
    assert row["windows"] == decided.windows == 5 and row["use_model"] == decided.use_model
    restarted = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    nxt = run_at + timedelta(minutes=15)
    again = await restarted.run_once(nxt, [fid])
    reused = restarted.gates_for(nxt)[fid]
    assert again.written == 1 and reused.decided_at == run_at and reused.windows == 5
    assert reused.model_mape_pct == decided.model_mape_pct and reused.use_model == decided.use_model
    # not backtested again, so only the forecast's window is read: 9 days before nxt, of which the rollups
    # from run_at - 9 days + 15 min to run_at - 15 min exist: 9 * 96 - 1 points
    assert restarted.history.points_read == 9 * 96 - 1


async def test_a_run_in_groups_writes_what_a_run_in_one_group_writes_and_fails_with_a_groups_own_error(
    settings, pg_pool, influx, http, weather_sim, make_facility, trained_model_dir, uid, monkeypatch
):
    import forecast.service as service_module

    lat, lon = _location(uid)
    fids = [await make_facility(lat, lon, timezone=TZ) for _ in range(3)]
    run_at = _run_at()
    for seed, fid in enumerate(fids[:2], start=1):  # the third facility has no history: skipped
        await _write_rollups(influx, settings, fid, run_at, seed=seed)

    async def run(batch: int, at: datetime) -> tuple[object, dict[str, list[float]]]:
        monkeypatch.setattr(service_module, "BATCH", batch)
        service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
        for fid in fids[:2]:
            _model_wins(service, fid, at)
        summary = await service.run_once(at, fids)
        rows = {fid: await latest_forecast(pg_pool, fid, at, at + timedelta(days=2)) for fid in fids}
        assert [r.target_ts for r in rows[fids[0]]] == [at + timedelta(minutes=15 * k) for k in range(96)]
        assert {r.run_at for fid in fids[:2] for r in rows[fid]} == {at} and rows[fids[2]] == []
        return summary, {fid: [r.p50_kw for r in rows[fid]] for fid in fids[:2]}

    one_group, p50_one = await run(256, run_at)
    in_groups, p50_groups = await run(1, run_at)  # three groups, pipelined; the same run written again
    for summary in (one_group, in_groups):
        assert summary.written == 2 and summary.skipped == 1 and summary.methods == {Method.MODEL: 2}
        assert summary.weather_sources == {"primary": 3}
    # the same model over the same history: each facility gets the same forecast whatever the grouping (to
    # float rounding of a different batch), and the two facilities' forecasts differ, so a swap would show
    assert not np.allclose(p50_one[fids[0]], p50_one[fids[1]], rtol=1e-3)
    for fid in fids[:2]:
        assert np.allclose(p50_groups[fid], p50_one[fid], rtol=1e-5, atol=1e-6)

    calls = {"n": 0}
    real = service_module.forecast_batch

    def second_group_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("group failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "forecast_batch", second_group_fails)
    monkeypatch.setattr(service_module, "BATCH", 1)
    service = _service(settings, pg_pool, influx, http, weather_sim, trained_model_dir)
    with pytest.raises(RuntimeError, match="group failed"):  # the group's own error, not an ExceptionGroup
        await service.run_once(run_at + timedelta(minutes=30), fids)
