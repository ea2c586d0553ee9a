"""InfluxDB line protocol for raw readings and rollups (measurements fixed by docs/decisions/0003).

Hand-formatted for speed (the worker writes tens of thousands of points per second); the
output is checked against :func:`energy.adapters.influx.point` in the tests. Tags are
validated ids, but are escaped anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregation.decode import Reading
from aggregation.domain.state import RollupRow

RAW_MEASUREMENT = "readings"
METER_ROLLUPS = "meter_rollups"
FACILITY_ROLLUPS = "facility_rollups"

_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\\": "\\\\"})


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _str_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _float(value: float) -> str:
    text = repr(value)
    return text[:-2] if text[-2:] == ".0" else text  # same as the shared encoder


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def ts_ns(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICROSECOND * 1000


def raw_line(r: Reading, time_ns: int | None = None) -> str:
    # Ids match schemas.readings.ID_PATTERN, anomalies are enum values and reading_id is a UUID:
    # none can hold a character line protocol escapes, so the hot path skips escaping (tested).
    anomalies = ",".join([a.value for a in r.anomalies]) if r.anomalies else ""
    return (
        f"{RAW_MEASUREMENT},facility_id={r.facility_id},meter_id={r.meter_id} "
        f'active_power_kw={_float(r.active_power_kw)},anomalies="{anomalies}",'
        f"current_a={_float(r.current_a)},energy_kwh={_float(r.energy_kwh)},"
        f'reactive_power_kvar={_float(r.reactive_power_kvar)},reading_id="{r.reading_id}",'
        f"seq={r.seq}i,voltage_v={_float(r.voltage_v)} {ts_ns(r.ts) if time_ns is None else time_ns}"
    )


def rollup_line(row: RollupRow) -> str:
    ru = row.rollup
    if row.meter_id is None:
        head = f"{FACILITY_ROLLUPS},facility_id={_tag(row.facility_id)},window={row.key.window}"
    else:
        head = (
            f"{METER_ROLLUPS},facility_id={_tag(row.facility_id)},meter_id={_tag(row.meter_id)},window={row.key.window}"
        )
    return (
        f"{head} anomaly_count={ru.anomaly_count}i,avg_kw={_float(ru.avg_kw)},coverage={_float(ru.coverage)},"
        f"energy_kwh={_float(ru.energy_kwh)},"
        f"energy_register_kwh={_float(ru.energy_register_kwh)},max_kw={_float(ru.max_kw)},"
        f"min_kw={_float(ru.min_kw)},sample_count={ru.sample_count}i {row.key.start_ns}"
    )
