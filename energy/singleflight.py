"""Single flight: concurrent callers asking for the same key share one in-flight load.

The one implementation for the code base (the API's current-load cache, its response cache and its
principal cache use it). The load runs as its own task and callers await it through
``asyncio.shield``: a caller that goes away never cancels the load the others wait for. Within one
process only; across processes the caches in front of it (Redis) do that job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self, on_size: Callable[[int], None] | None = None) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}
        self._on_size = on_size

    def __contains__(self, key: K) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def join(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        on_done: Callable[[asyncio.Future[V]], None] | None = None,
    ) -> tuple[Awaitable[V], bool]:
        """(awaitable result, joined): ``joined`` is True when a load for ``key`` was already running.
        ``on_done`` runs once when a new load finishes, whatever happened to its callers."""
        flight = self._flights.get(key)
        if flight is not None:
            return asyncio.shield(flight), True
        flight = asyncio.ensure_future(load())
        self._flights[key] = flight
        self._size_changed()

        def finished(done: asyncio.Future[V]) -> None:
            self._flights.pop(key, None)
            self._size_changed()
            if on_done is not None:
                on_done(done)

        flight.add_done_callback(finished)
        return asyncio.shield(flight), False

    def _size_changed(self) -> None:
        if self._on_size is not None:
            self._on_size(len(self._flights))
