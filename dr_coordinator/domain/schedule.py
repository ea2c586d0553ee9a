"""An event's schedule: its intervals, each with its own period and payloads. Pure.

OpenADR 3 (3.0.1 and 3.1, "Event" / "interval" / "intervalPeriod" of the specification): an
event's ``intervalPeriod`` is the default period of its intervals; an interval with its own
``intervalPeriod`` uses that; intervals without one follow each other, each lasting the default
duration, in the order of their ``id``. ``randomizeStart`` asks each resource to start at a
random offset within that window so that a fleet does not step all at once.

Payloads we act on, per interval (decision 0421):
- ``SIMPLE``: level 0 (normal) .. 3 (highest); level x sheds x * ``simple_level_fraction`` of the
  expected load;
- ``IMPORT_CAPACITY_LIMIT``: kW cap **per targeted resource** (each facility its own cap);
- ``LOAD_SHED_DELTA_AVAILABLE``: kW to shed by the event's resources together (split by load);
- ``DISPATCH_SETPOINT``: kW each resource should consume (shed = expected - setpoint);
- ``PRICE``: a price-responsive level (``price_level``), then handled as SIMPLE.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

SIMPLE_MAX_LEVEL = 3
# Price (currency units per kWh) from which levels 1, 2 and 3 apply; an assumption (decision 0421)
# until a program states its own tariff bands.
PRICE_LEVEL_THRESHOLDS = (0.15, 0.30, 0.60)


class ScheduleError(ValueError):
    """The event's intervals cannot be turned into a schedule (the reason is for the utility)."""


@dataclass(frozen=True)
class IntervalAsk:
    index: int
    start: datetime
    end: datetime
    level: int | None = None  # SIMPLE 0..3 (or a price turned into a level)
    import_limit_kw: float | None = None  # per targeted resource
    shed_kw: float | None = None  # for the event's resources together
    setpoint_kw: float | None = None  # per targeted resource
    price: float | None = None

    @property
    def sheds_nothing(self) -> bool:
        """Level 0 and no kW ask: the buildings run normally during this interval."""
        kw_asks = (self.import_limit_kw, self.shed_kw, self.setpoint_kw)
        return (self.level or 0) == 0 and all(v is None for v in kw_asks)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "level": self.level,
            "import_limit_kw": self.import_limit_kw,
            "shed_kw": self.shed_kw,
            "setpoint_kw": self.setpoint_kw,
            "price": self.price,
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> IntervalAsk:
        return IntervalAsk(
            index=int(d["index"]),
            start=datetime.fromisoformat(d["start"]),
            end=datetime.fromisoformat(d["end"]),
            level=d.get("level"),
            import_limit_kw=d.get("import_limit_kw"),
            shed_kw=d.get("shed_kw"),
            setpoint_kw=d.get("setpoint_kw"),
            price=d.get("price"),
        )


@dataclass(frozen=True)
class Period:
    start: datetime
    duration: timedelta
    randomize_start: timedelta | None = None


@dataclass(frozen=True)
class RawInterval:
    """One interval as the VTN sent it: its id, its own period if any, ``{payload type: values}``."""

    id: int
    period: Period | None
    payloads: Mapping[str, Sequence[Any]]


def price_level(price: float, thresholds: Sequence[float] = PRICE_LEVEL_THRESHOLDS) -> int:
    """Price-responsive level: how many thresholds the price reaches (0..3)."""
    return sum(1 for t in thresholds if price >= t)


def _numbers(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def build_schedule(default: Period | None, intervals: Sequence[RawInterval]) -> list[IntervalAsk]:
    """The event's intervals in time order, each with its period and what it asks."""
    if not intervals:
        raise ScheduleError("event has no intervals")
    out: list[IntervalAsk] = []
    cursor: datetime | None = default.start if default else None
    for raw in sorted(intervals, key=lambda i: i.id):
        period = raw.period
        if period is None:
            if default is None or cursor is None:
                raise ScheduleError(f"interval {raw.id} has no intervalPeriod and the event none to inherit")
            start, duration = cursor, default.duration
        else:
            start, duration = period.start, period.duration
            if duration <= timedelta(0) and default is not None:
                duration = default.duration
        if duration <= timedelta(0):
            raise ScheduleError(f"interval {raw.id} has no positive duration")
        end = start + duration
        cursor = end
        out.append(_interval(len(out), start, end, raw.payloads))
    out.sort(key=lambda i: i.start)
    for before, after in itertools.pairwise(out):
        if after.start < before.end:
            raise ScheduleError(f"intervals overlap: {before.start.isoformat()} and {after.start.isoformat()}")
    return [IntervalAsk(**{**_fields(i), "index": n}) for n, i in enumerate(out)]


def _fields(i: IntervalAsk) -> dict[str, Any]:
    return {k: getattr(i, k) for k in IntervalAsk.__dataclass_fields__}


def _interval(index: int, start: datetime, end: datetime, payloads: Mapping[str, Sequence[Any]]) -> IntervalAsk:
    simple = _numbers(payloads.get("SIMPLE", ()))
    limit = _numbers(payloads.get("IMPORT_CAPACITY_LIMIT", ()))
    shed = _numbers(payloads.get("LOAD_SHED_DELTA_AVAILABLE", ()))
    setpoint = _numbers(payloads.get("DISPATCH_SETPOINT", ()))
    price = _numbers(payloads.get("PRICE", ()))
    if any(v < 0 for v in limit + shed + setpoint):
        raise ScheduleError("kW payload values must be >= 0")
    if any(v < 0 or v > SIMPLE_MAX_LEVEL or v != int(v) for v in simple):
        raise ScheduleError(f"SIMPLE levels are whole numbers 0..{SIMPLE_MAX_LEVEL}")
    level = int(max(simple)) if simple else None
    if price and level is None:
        level = price_level(max(price))
    return IntervalAsk(
        index=index,
        start=start,
        end=end,
        level=level,
        import_limit_kw=min(limit) if limit else None,
        shed_kw=max(shed) if shed else None,
        setpoint_kw=min(setpoint) if setpoint else None,
        price=max(price) if price else None,
    )


def single_interval(
    start: datetime,
    end: datetime,
    *,
    level: int | None = None,
    import_limit_kw: float | None = None,
    shed_kw: float | None = None,
) -> list[IntervalAsk]:
    """The schedule of an event stored before schedules existed (one window, one ask)."""
    return [IntervalAsk(0, start, end, level=level, import_limit_kw=import_limit_kw, shed_kw=shed_kw)]


def current_interval(schedule: Sequence[IntervalAsk], now: datetime) -> IntervalAsk | None:
    """The interval running at ``now``; before the first: the first; in a gap or after: None."""
    if not schedule:
        return None
    if now < schedule[0].start:
        return schedule[0]
    for interval in schedule:
        if interval.start <= now < interval.end:
            return interval
    return None


def randomized_offset_s(randomize: timedelta | None, event_key: str, resource_id: str) -> float:
    """A resource's start offset in ``[0, randomize)``: spread, yet the same on every replay."""
    if randomize is None or randomize <= timedelta(0):
        return 0.0
    digest = hashlib.sha256(f"{event_key}|{resource_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * randomize.total_seconds()


def missed(end: datetime, now: datetime) -> bool:
    """An event first seen after its end (e.g. after an outage): recorded, never dispatched."""
    return end <= now
