"""InfluxDB 1.x HTTP API (``/write`` line protocol, ``/query`` InfluxQL with bound parameters).

The v1 API is what the local InfluxDB 1.6 serves, and InfluxDB 2.x/3.x and AWS Timestream
for InfluxDB serve it too. ``influxdb-client``'s write/query APIs speak v2 only, so we use
its :class:`Point` for line-protocol encoding and httpx for transport.

Injection safety: queries take user values only as bound parameters (``$name`` with
``params=``); identifiers go through :func:`quote_ident`, which validates them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import msgspec
from influxdb_client import Point, WritePrecision

from energy.adapters.tls import client_ssl_context
from energy.resilience import CircuitOpenError, RetryPolicy, guarded_call, make_breaker
from energy.settings import InfluxSettings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class InfluxError(RuntimeError):
    """A non-transient error: bad query, bad line protocol (4xx)."""


class InfluxUnavailableError(RuntimeError):
    """InfluxDB did not answer in time, refused, or failed (5xx); retry later."""


def quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"invalid InfluxQL identifier {name!r}")
    return f'"{name}"'


def point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | bool | str],
    ts: datetime | int,
) -> str:
    """One line of line protocol; ``ts`` as aware datetime or integer nanoseconds."""
    p = Point(measurement)
    for k, v in tags.items():
        p.tag(k, v)
    for name, value in fields.items():
        p.field(name, value)
    p.time(ts, WritePrecision.NS)
    return str(p.to_line_protocol())


@dataclass
class Series:
    name: str
    columns: list[str]
    values: Sequence[Sequence[Any]]
    tags: dict[str, str]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, v, strict=False)) for v in self.values]


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, InfluxUnavailableError | httpx.TransportError | TimeoutError)


class InfluxClient:
    """Async client with timeouts, a breaker and retries on transient errors only."""

    def __init__(
        self, settings: InfluxSettings, breaker_name: str = "influxdb", fail_max: int = 5, reset_s: float = 10.0
    ) -> None:
        self.settings = settings
        self.database = settings.database
        auth = (
            httpx.BasicAuth(settings.username, settings.password.get_secret_value())
            if settings.username and settings.password
            else None
        )
        self._http = httpx.AsyncClient(
            base_url=settings.url,
            timeout=httpx.Timeout(settings.write_timeout_s, connect=2.0),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            auth=auth,
            verify=client_ssl_context(settings.tls_ca_file),
        )
        self.breaker = make_breaker(breaker_name, fail_max=fail_max, reset_s=reset_s, exclude=[InfluxError])

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> InfluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> None:
        resp = await self._http.get("/ping", timeout=1.0)
        if resp.status_code != 204:
            raise InfluxUnavailableError(f"ping answered {resp.status_code}")

    async def write_lines(
        self, lines: Sequence[str], retention_policy: str | None = None, retry: RetryPolicy | None = None
    ) -> None:
        """Write line protocol; identical points (measurement, tags, time) overwrite, never add."""
        if not lines:
            return
        body = "\n".join(lines).encode()
        params = {"db": self.database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy

        async def call() -> None:
            try:
                resp = await self._http.post("/write", params=params, content=body)
            except httpx.TransportError as exc:
                raise InfluxUnavailableError(f"write: {type(exc).__name__}: {exc}") from exc
            if resp.status_code == 204:
                return
            if resp.status_code >= 500:
                raise InfluxUnavailableError(f"write {resp.status_code}: {resp.text[:300]}")
            raise InfluxError(f"write {resp.status_code}: {resp.text[:300]}")

        await guarded_call(
            "influxdb_write",
            call,
            timeout_s=self.settings.write_timeout_s,
            breaker=self.breaker,
            retry=retry or RetryPolicy(attempts=1),
            is_transient=_transient,
        )

    async def query(
        self,
        q: str,
        params: Mapping[str, Any] | None = None,
        epoch: str | None = None,
        timeout_s: float | None = None,
        msgpack: bool = False,
    ) -> list[Series]:
        """Run InfluxQL; user values go in ``params`` and are referenced as ``$name``. ``msgpack``: the answer
        comes as MessagePack instead of JSON (same structure; floats stay floats, where JSON writes ``1.0`` as
        ``1``; rows are tuples), uncompressed: InfluxDB encodes and this process decodes a large answer for a
        fraction of the CPU of gzipped JSON (docs/decisions/1040-forecast-first-run-reads.md)."""
        form: dict[str, str] = {"db": self.database, "q": q}
        if params:
            form["params"] = json.dumps(dict(params))
        if epoch:
            form["epoch"] = epoch
        # uncompressed: next to the server (same host or VPC) gzip costs InfluxDB ~25 % more CPU on a large
        # answer, and this process the inflating, for a transfer that is not the bottleneck (decision 1040)
        headers = {"Accept": _MSGPACK, "Accept-Encoding": "identity"} if msgpack else None

        async def call() -> list[Series]:
            try:
                resp = await self._http.post(
                    "/query", data=form, headers=headers, timeout=timeout_s or self.settings.query_timeout_s
                )
            except httpx.TransportError as exc:
                raise InfluxUnavailableError(f"query: {type(exc).__name__}: {exc}") from exc
            if resp.status_code >= 500:
                raise InfluxUnavailableError(f"query {resp.status_code}: {resp.text[:300]}")
            if resp.headers.get("content-type", "").startswith(_MSGPACK):
                return _msgpack_series(resp)
            body = resp.json()
            if resp.status_code >= 400 or "error" in body:
                raise InfluxError(str(body.get("error", resp.text[:300])))
            out: list[Series] = []
            for result in body.get("results", []):
                if "error" in result:
                    raise InfluxError(str(result["error"]))
                for s in result.get("series", []):
                    out.append(Series(s.get("name", ""), s.get("columns", []), s.get("values", []), s.get("tags", {})))
            return out

        return await guarded_call(
            "influxdb_query",
            call,
            timeout_s=timeout_s or self.settings.query_timeout_s,
            breaker=self.breaker,
            is_transient=_transient,
        )


_MSGPACK = "application/x-msgpack"


class _PackedSeries(msgspec.Struct):
    name: str = ""
    columns: list[str] = []
    values: list[tuple[Any, ...]] = []  # rows as tuples: of scalars only, the garbage collector skips them
    tags: dict[str, str] = {}


class _PackedResult(msgspec.Struct):
    series: list[_PackedSeries] = []
    error: str | None = None


class _PackedAnswer(msgspec.Struct):
    results: list[_PackedResult] = []
    error: str | None = None


_PACKED = msgspec.msgpack.Decoder(_PackedAnswer)


def _msgpack_series(resp: httpx.Response) -> list[Series]:
    """The series of a MessagePack answer. Decoded into typed structures: with generic lists, the garbage
    collector's passes over a million new row lists made decoding ~4x slower in a process with a large heap."""
    try:
        answer = _PACKED.decode(resp.content)
    except msgspec.DecodeError as exc:
        raise InfluxError(f"query {resp.status_code}: undecodable answer: {resp.content[:300]!r}") from exc
    if resp.status_code >= 400 or answer.error is not None:
        raise InfluxError(str(answer.error or resp.content[:300]))
    out: list[Series] = []
    for result in answer.results:
        if result.error is not None:
            raise InfluxError(result.error)
        out.extend(Series(s.name, s.columns, s.values, s.tags) for s in result.series)
    return out


def iter_rows(series: Iterable[Series]) -> Iterable[dict[str, Any]]:
    for s in series:
        for row in s.rows():
            yield {**s.tags, **row}


__all__ = [
    "CircuitOpenError",
    "InfluxClient",
    "InfluxError",
    "InfluxUnavailableError",
    "Series",
    "iter_rows",
    "point",
    "quote_ident",
]
