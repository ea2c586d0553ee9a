"""``/healthz`` (process alive) and ``/ready`` (dependencies answer within their timeouts).

A service registers named async checks; readiness runs them concurrently, each bounded by
its own timeout, and reports every failure with its reason. Services also report
conditions of their own (``set_not_ready("kafka_backpressure", "...")``), e.g. while they
push back on a slow broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[], Awaitable[object]]


@dataclass
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None


@dataclass
class Health:
    service: str
    started_at: float = field(default_factory=time.time)
    _checks: dict[str, tuple[Check, float]] = field(default_factory=dict)
    _conditions: dict[str, str] = field(default_factory=dict)

    def add_check(self, name: str, check: Check, timeout_s: float = 1.0) -> None:
        self._checks[name] = (check, timeout_s)

    def set_not_ready(self, condition: str, reason: str) -> None:
        self._conditions[condition] = reason

    def clear(self, condition: str) -> None:
        self._conditions.pop(condition, None)

    @property
    def conditions(self) -> dict[str, str]:
        return dict(self._conditions)

    async def _run(self, name: str, check: Check, timeout_s: float) -> CheckResult:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(check(), timeout_s)
            return CheckResult(name, True, (time.perf_counter() - t0) * 1000)
        except TimeoutError:
            return CheckResult(name, False, (time.perf_counter() - t0) * 1000, f"timeout after {timeout_s}s")
        except Exception as exc:
            return CheckResult(name, False, (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}"[:300])

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        results = await asyncio.gather(*(self._run(n, c, t) for n, (c, t) in self._checks.items()))
        ok = all(r.ok for r in results) and not self._conditions
        body: dict[str, Any] = {
            "service": self.service,
            "ready": ok,
            "checks": {r.name: {"ok": r.ok, "latency_ms": round(r.latency_ms, 1), "error": r.error} for r in results},
            "conditions": dict(self._conditions),
        }
        return ok, body

    def alive(self) -> dict[str, Any]:
        return {"service": self.service, "alive": True, "uptime_s": round(time.time() - self.started_at, 1)}
