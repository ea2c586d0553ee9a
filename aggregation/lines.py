"""InfluxDB line protocol for raw readings and rollups (measurements fixed by docs/decisions/0003).

Hand-formatted for speed (the worker writes tens of thousands of points per second); the
output is checked against :func:`energy.adapters.influx.point` in the tests. Tags are
validated ids, but are escaped anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from aggregation.decode import Reading
from aggregation.domain.state import RollupRow

RAW_MEASUREMENT = "readings"
METER_ROLLUPS = "meter_rollups"
FACILITY_ROLLUPS = "facility_rollups"

_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\\": "\\\\"})


def _str_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def ts_ns(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICROSECOND * 1000


# Floats are written as their shortest repr without a trailing ".0" (the shared encoder's text),
# inlined in the f-strings: a function call per field was a tenth of the engine's line formatting.


_encode = msgspec.json.encode
_decode_texts = msgspec.json.Decoder(list[str]).decode


def reading_ids(readings: Sequence[Reading]) -> list[str]:
    """``str(r.reading_id)`` of each reading, in two C calls for the whole batch (msgspec writes a
    UUID in the same canonical form): ``UUID.__str__`` in Python was ~1.5 us per reading."""
    return _decode_texts(_encode([r.reading_id for r in readings]))


def raw_line(r: Reading, time_ns: int | None = None, reading_id: str | None = None) -> str:
    """``time_ns`` and ``reading_id``: the reading's, when the caller has them already."""
    # Ids match schemas.readings.ID_PATTERN, anomalies are enum values and reading_id is a UUID:
    # none can hold a character line protocol escapes, so the hot path skips escaping (tested).
    anomalies = ",".join([a.value for a in r.anomalies]) if r.anomalies else ""
    return (
        f"{RAW_MEASUREMENT},facility_id={r.facility_id},meter_id={r.meter_id} "
        f'active_power_kw={repr(r.active_power_kw).removesuffix(".0")},anomalies="{anomalies}",'
        f"current_a={repr(r.current_a).removesuffix('.0')},energy_kwh={repr(r.energy_kwh).removesuffix('.0')},"
        f"reactive_power_kvar={repr(r.reactive_power_kvar).removesuffix('.0')},"
        f'reading_id="{reading_id or r.reading_id}",'
        f"seq={r.seq}i,voltage_v={repr(r.voltage_v).removesuffix('.0')} {ts_ns(r.ts) if time_ns is None else time_ns}"
    )


def rollup_line(row: RollupRow) -> str:
    facility_id, meter_id, (window, start_ns), ru = row
    energy, register, avg, low, high, samples, coverage, anomalies = ru
    if meter_id is None:
        head = f"{FACILITY_ROLLUPS},facility_id={facility_id.translate(_TAG_ESCAPES)},window={window}"
    else:
        head = (
            f"{METER_ROLLUPS},facility_id={facility_id.translate(_TAG_ESCAPES)},"
            f"meter_id={meter_id.translate(_TAG_ESCAPES)},window={window}"
        )
    return (
        f"{head} anomaly_count={anomalies}i,avg_kw={repr(avg).removesuffix('.0')},"
        f"coverage={repr(coverage).removesuffix('.0')},energy_kwh={repr(energy).removesuffix('.0')},"
        f"energy_register_kwh={repr(register).removesuffix('.0')},"
        f"max_kw={repr(high).removesuffix('.0')},min_kw={repr(low).removesuffix('.0')},"
        f"sample_count={samples}i {start_ns}"
    )
