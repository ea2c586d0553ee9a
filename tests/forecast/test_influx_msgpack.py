"""InfluxDB answers in MessagePack (the forecast's history reads, decision 1040) carry the same series as
JSON answers on a real InfluxDB: tags, columns, a missing field as None, an integral float as a float; and
errors (a bad query, a statement's error) raise InfluxError as with JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from energy.adapters.influx import InfluxError, point

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


async def test_msgpack_answer_has_the_json_answers_series(influx, settings, uid) -> None:
    rp = settings.influx.rollup_retention_policy
    a, b = f"mp-a-{uid}", f"mp-b-{uid}"
    lines = [
        point("facility_rollups", {"facility_id": a, "window": "15m"}, {"avg_kw": 12.5, "coverage": 1.0}, T0),
        point(
            "facility_rollups",
            {"facility_id": a, "window": "15m"},
            {"avg_kw": 3.0},  # no coverage field in this window
            T0 + timedelta(minutes=15),
        ),
        point("facility_rollups", {"facility_id": b, "window": "15m"}, {"avg_kw": 7.25, "coverage": 0.5}, T0),
    ]
    await influx.write_lines(lines, retention_policy=rp)
    q = (
        f'SELECT "avg_kw", "coverage" FROM "{rp}"."facility_rollups" WHERE time >= $start '
        'AND ("facility_id" = $a OR "facility_id" = $b) GROUP BY "facility_id"'
    )
    params = {"start": "2026-03-01T00:00:00Z", "a": a, "b": b}
    t0 = int(T0.timestamp())
    packed = await influx.query(q, params=params, epoch="s", msgpack=True)
    plain = await influx.query(q, params=params, epoch="s")
    expected = {
        a: [(t0, 12.5, 1.0), (t0 + 900, 3.0, None)],
        b: [(t0, 7.25, 0.5)],
    }
    for answer in (packed, plain):
        assert {s.tags["facility_id"]: [tuple(r) for r in s.values] for s in answer} == expected
        assert all(s.columns == ["time", "avg_kw", "coverage"] and s.name == "facility_rollups" for s in answer)
    # the difference that matters to callers: MessagePack keeps 1.0 a float, JSON writes it as the integer 1
    coverage = {type(s.values[0][2]) for s in packed}
    assert coverage == {float}
    assert {type(s.values[0][2]) for s in plain if s.tags["facility_id"] == a} == {int}


async def test_msgpack_errors_raise_influx_error(influx, settings) -> None:
    with pytest.raises(InfluxError, match="error parsing query"):
        await influx.query("SELECT FROM", msgpack=True)
    with pytest.raises(InfluxError, match="retention policy not found"):
        await influx.query('SELECT "avg_kw" FROM "no_such_rp"."facility_rollups"', msgpack=True)
    empty = await influx.query(
        f'SELECT "avg_kw" FROM "{settings.influx.rollup_retention_policy}"."facility_rollups" WHERE "facility_id" = $f',
        params={"f": "no-such-facility"},
        msgpack=True,
    )
    assert empty == []
