"""One retry policy (decision 0840): no hand-written retry or backoff loop outside energy.resilience.

The scan flags a wait (``asyncio.sleep``, ``time.sleep``, ``asyncio.wait_for(<event>.wait(), ...)``)
inside a ``for``/``while`` loop whose body also catches exceptions: the shape of a hand-written
retry loop. Loops that wait and catch but are not retries (a poll, a schedule) are listed below
with the reason; a new one needs a reason here, or to use ``guarded_call``/``keep_trying``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# bench/ is not scanned: it drives the system under measurement and polls it with deadlines.
PACKAGES = ("ingestion", "aggregation", "forecast", "dr_coordinator", "api", "energy", "sim", "schemas")
POLICY_MODULE = "energy/resilience.py"

# (file, function) -> why this loop that waits and catches is not a retry loop
NOT_RETRIES = {
    ("dr_coordinator/entrypoints/settlement.py", "run"): "polling loop: scans for due settlements every interval",
    ("dr_coordinator/entrypoints/timers.py", "run"): "polling loop: the saga timers' tick",
    ("dr_coordinator/entrypoints/ven_runtime.py", "run"): "polling loop: each VTN is polled on its own schedule",
    ("forecast/service.py", "run_forever"): "schedule: one forecast run per quarter hour",
    ("ingestion/registry.py", "refresh_forever"): "polling loop: refreshes the meter registry cache",
    ("sim/weather/process.py", "start"): "test helper: waits for a child process to answer, with a deadline",
}


def _is_wait(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = ast.unparse(node.func)
    if name in ("asyncio.sleep", "time.sleep", "sleep"):
        return True
    first = node.args[0] if node.args else None
    return (
        name == "asyncio.wait_for"
        and isinstance(first, ast.Call)
        and isinstance(first.func, ast.Attribute)
        and first.func.attr == "wait"
    )


def retry_shaped_loops(source: str | ast.Module) -> set[str]:
    """Names of the functions holding a loop that both catches an exception and waits."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.functions: list[str] = []

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            self.functions.append(node.name)
            self.generic_visit(node)
            self.functions.pop()

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

        def visit_loop(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
            inside = [n for stmt in node.body for n in ast.walk(stmt)]
            if any(isinstance(n, ast.Try) and n.handlers for n in inside) and any(_is_wait(n) for n in inside):
                found.add(".".join(self.functions) or "<module>")
            self.generic_visit(node)

        visit_For = visit_AsyncFor = visit_While = visit_loop  # type: ignore[assignment]

    Visitor().visit(ast.parse(source) if isinstance(source, str) else source)
    return found


@functools.cache
def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_the_scan_sees_a_hand_written_retry_loop_and_not_a_plain_loop() -> None:
    retry_loop = """
async def fetch():
    for attempt in range(5):
        try:
            return await call()
        except OSError:
            await asyncio.sleep(0.1 * 2**attempt)
"""
    stop_aware = """
async def run(stop):
    while not stop.is_set():
        try:
            await consume()
        except Exception:
            await asyncio.wait_for(stop.wait(), 5)
"""
    plain = """
async def pace(items):
    for item in items:
        await send(item)
        await asyncio.sleep(0.1)
"""
    assert retry_shaped_loops(retry_loop) == {"fetch"}
    assert retry_shaped_loops(stop_aware) == {"run"}
    assert retry_shaped_loops(plain) == set()


def test_no_hand_written_retry_loops_outside_the_policy() -> None:
    found = {
        (path, function)
        for path, source in _sources()
        if path != POLICY_MODULE
        for function in retry_shaped_loops(source)
    }
    unexplained = sorted(found - set(NOT_RETRIES))
    assert not unexplained, (
        "a loop that catches and waits looks like a hand-written retry: use energy.resilience "
        f"(guarded_call, keep_trying) or list it in NOT_RETRIES with the reason: {unexplained}"
    )
    stale = sorted(set(NOT_RETRIES) - found)
    assert not stale, f"NOT_RETRIES lists loops that are gone; remove them: {stale}"


def test_retry_libraries_and_backoff_helpers_are_used_only_through_the_policy() -> None:
    offenders = []
    for path, source in _sources():
        if path == POLICY_MODULE:
            continue
        for node in ast.walk(source):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                names = [a.name for a in node.names]
                roots = [(module or n).split(".")[0] for n in names]
                if {"stamina", "tenacity", "backoff"} & set(roots):
                    offenders.append(f"{path}: imports {module or names}")
                if "backoff_delays" in names:
                    offenders.append(f"{path}: imports backoff_delays")
    assert not offenders, offenders
