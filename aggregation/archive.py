"""Raw archive: readings from Kafka to Parquet, partitioned by day and facility (AGG-5).

Layout (Hive style, readable by pyarrow.dataset, Athena, Spark)::

    <archive_uri>/day=2026-11-25/facility_id=fac-001/part-<topic>-<partition>-<first>-<last>.parquet

``archive_uri`` is a local folder or any URI pyarrow resolves (``s3://bucket/prefix`` uses
pyarrow's S3 filesystem with the usual AWS credential chain). The archiver is its own consumer
group and commits after the files are written; a replay may write the same readings into a
file with other offsets, which is harmless: rollups key samples by (meter, time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from aggregation import metrics
from aggregation.decode import Rejected, decode_reading
from energy.adapters.kafka import make_consumer
from energy.observability.health import Health
from energy.resilience import RetryPolicy, keep_trying
from energy.settings import Settings
from energy.settings_paths import PROJECT_ROOT
from schemas.readings import Anomaly, MeterReading

log = structlog.get_logger("aggregation.archive")
ARCHIVE_RETRY = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=30.0)  # disk full, S3 down

SCHEMA = pa.schema(
    [
        ("reading_id", pa.string()),
        ("meter_id", pa.string()),
        ("facility_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("active_power_kw", pa.float64()),
        ("reactive_power_kvar", pa.float64()),
        ("voltage_v", pa.float64()),
        ("current_a", pa.float64()),
        ("energy_kwh", pa.float64()),
        ("seq", pa.int64()),
        ("anomalies", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)
FILE_SCHEMA = pa.schema([f for f in SCHEMA if f.name != "facility_id"])


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and base path of the archive; relative local paths are under the project root."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    path = uri if uri.startswith("/") else str(PROJECT_ROOT / uri)
    return pafs.LocalFileSystem(), path.rstrip("/")


def _rows(readings: Iterable[MeterReading]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {f.name: [] for f in FILE_SCHEMA}
    for r in readings:
        cols["reading_id"].append(str(r.reading_id))
        cols["meter_id"].append(r.meter_id)
        cols["ts"].append(r.ts.astimezone(UTC))
        cols["active_power_kw"].append(r.active_power_kw)
        cols["reactive_power_kvar"].append(r.reactive_power_kvar)
        cols["voltage_v"].append(r.voltage_v)
        cols["current_a"].append(r.current_a)
        cols["energy_kwh"].append(r.energy_kwh)
        cols["seq"].append(r.seq)
        cols["anomalies"].append(",".join(a.value for a in r.anomalies))
        cols["received_at"].append(r.received_at.astimezone(UTC))
    return cols


def write_partitions(uri: str, readings: list[MeterReading], file_stem: str) -> list[str]:
    """Write one file per (day, facility) of ``readings``; returns the paths written."""
    fs, base = resolve(uri)
    groups: dict[tuple[date, str], list[MeterReading]] = {}
    for r in readings:
        groups.setdefault((r.ts.astimezone(UTC).date(), r.facility_id), []).append(r)
    written = []
    for (day, facility_id), rs in sorted(groups.items()):
        folder = f"{base}/day={day.isoformat()}/facility_id={facility_id}"
        fs.create_dir(folder, recursive=True)
        path = f"{folder}/{file_stem}.parquet"
        tmp = f"{path}.tmp"
        pq.write_table(pa.table(_rows(rs), schema=FILE_SCHEMA), tmp, filesystem=fs)
        fs.move(tmp, path)  # readers never see half a file
        written.append(path)
    return written


def read_archive(uri: str, facility_id: str, start: datetime, end: datetime) -> Iterator[MeterReading]:
    """Readings of one facility with ``start <= ts < end`` from the archive (duplicates possible)."""
    fs, base = resolve(uri)
    try:
        info = fs.get_file_info(base)
    except OSError:
        return
    if info.type == pafs.FileType.NotFound:
        return
    dataset = ds.dataset(base, filesystem=fs, format="parquet", partitioning="hive", exclude_invalid_files=True)
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    flt = (
        (ds.field("facility_id") == facility_id)
        & ds.field("day").isin(days)
        & (ds.field("ts") >= pa.scalar(start.astimezone(UTC), pa.timestamp("us", tz="UTC")))
        & (ds.field("ts") < pa.scalar(end.astimezone(UTC), pa.timestamp("us", tz="UTC")))
    )
    table = dataset.to_table(filter=flt)
    for row in table.to_pylist():
        yield MeterReading(
            reading_id=_uuid(row["reading_id"]),
            meter_id=row["meter_id"],
            facility_id=str(row["facility_id"]),
            ts=row["ts"],
            active_power_kw=row["active_power_kw"],
            reactive_power_kvar=row["reactive_power_kvar"],
            voltage_v=row["voltage_v"],
            current_a=row["current_a"],
            energy_kwh=row["energy_kwh"],
            seq=row["seq"],
            anomalies=tuple(Anomaly(a) for a in row["anomalies"].split(",") if a),
            received_at=row["received_at"],
        )


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


class Archiver:
    """Consumer group ``archive_group``: batches readings into Parquet files, then commits."""

    def __init__(self, settings: Settings, stop: asyncio.Event | None = None, health: Health | None = None) -> None:
        self.health = health
        self.settings = settings
        self.cfg = settings.aggregation
        self.stop = stop or asyncio.Event()
        self.consumer = make_consumer(
            settings.kafka,
            group_id=self.cfg.archive_group,
            max_poll_records=self.cfg.archive_batch_max_readings,
            session_timeout_ms=self.cfg.session_timeout_ms,
            heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
            max_partition_fetch_bytes=1_048_576,
        )

    async def run(self) -> None:
        self.consumer.subscribe([self.cfg.readings_topic])
        await asyncio.wait_for(self.consumer.start(), self.settings.kafka.request_timeout_s * 4)
        try:
            while not self.stop.is_set():
                batch = await self._collect()
                if batch:
                    await self._flush_until_ok(batch)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 10)

    async def _collect(self) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        count = 0
        deadline = time.monotonic() + self.cfg.archive_batch_max_wait_s
        while count < self.cfg.archive_batch_max_readings and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = await self.consumer.getmany(
                timeout_ms=int(min(left, 1.0) * 1000), max_records=self.cfg.archive_batch_max_readings - count
            )
            for tp, recs in got.items():
                batch.setdefault(tp, []).extend(recs)
                count += len(recs)
        return batch

    async def _flush_until_ok(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Retry a failing archive write (disk full, S3 down) through the one retry policy (decision
        0840); never crash the process. Nothing is committed until the files are written, so a
        shutdown meanwhile replays. The first call runs even during a shutdown (the batch in hand)."""
        failed = False

        def failing(exc: BaseException) -> None:
            nonlocal failed
            if isinstance(exc, OSError):
                failed = True
                reason = f"archive write failing: {type(exc).__name__}: {exc}"[:300]
                log.warning("archive_failing", error=reason)
                if self.health is not None:
                    self.health.set_not_ready("archive_failing", reason)

        try:
            try:
                await self._flush(batch)
                return
            except OSError as exc:
                failing(exc)
            if self.stop.is_set():
                return
            await keep_trying(
                "archive",
                lambda: self._flush(batch),
                policy=ARCHIVE_RETRY,
                is_transient=lambda exc: isinstance(exc, OSError),
                on_error=failing,
                stop=self.stop,
            )
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("archive_commit_failed_rebalance", error=str(exc))  # replays elsewhere
        finally:
            if failed and self.health is not None:
                self.health.clear("archive_failing")

    async def _flush(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        for tp, recs in batch.items():
            readings = []
            for rec in recs:
                got = decode_reading(rec.value)
                if not isinstance(got, Rejected):  # poison goes to the DLQ via the rollup worker
                    readings.append(got.payload)
            if readings:
                stem = f"part-{tp.topic}-{tp.partition}-{recs[0].offset:012d}-{recs[-1].offset:012d}"
                await asyncio.to_thread(write_partitions, self.cfg.archive_uri, readings, stem)
                metrics.ARCHIVED.inc(len(readings))
        offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "") for tp, recs in batch.items() if recs}
        await self.consumer.commit(offsets)
        log.info("archived", readings=sum(len(r) for r in batch.values()))
