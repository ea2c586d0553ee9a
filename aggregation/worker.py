"""``energy aggregation run``: the Faust rollup worker (+ the raw archiver) and the ops endpoints.

The worker is :class:`aggregation.faust_worker.FaustRollupWorker` (the one engine, decision
0810); the steps of a batch live in :mod:`aggregation.pipeline`. This module only wires the
service: signals, ``/healthz`` ``/ready`` ``/metrics`` and the archiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal

from aggregation.faust_worker import FaustRollupWorker
from energy.observability.health import Health
from energy.settings import Settings

# The worker allocates a few container objects per reading (messages, readings, samples, lines):
# with CPython's default thresholds (700, 10, 10) a young-generation collection ran every ~10
# readings and the collector took over a third of the worker's CPU (profiled, decision 0810).
# Collections every 50,000 allocations bound the garbage the same way at a fraction of the cost.
GC_THRESHOLDS = (50_000, 20, 20)


async def run_service(settings: Settings, with_archive: bool | None = None) -> None:
    """Worker (+ archiver) and the ops endpoints, until SIGTERM/SIGINT."""
    from energy.observability.http import serve_ops

    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what was loaded at start (modules, settings, the app) is never collected again
    health = Health("aggregation")
    worker = FaustRollupWorker(settings, health)
    stop = worker.stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ops = asyncio.create_task(serve_ops(health, settings.stack.bind_host, settings.endpoints.aggregation_port, stop))
    tasks = [asyncio.create_task(worker.run())]
    archive = settings.aggregation.archive_enabled if with_archive is None else with_archive
    if archive:
        from aggregation.archive import Archiver

        archiver = Archiver(settings, stop=stop, health=health)
        tasks.append(asyncio.create_task(archiver.run()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                stop.set()
                raise t.exception()  # type: ignore[misc]
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for t in tasks:
            if not t.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 15)
        await ops
