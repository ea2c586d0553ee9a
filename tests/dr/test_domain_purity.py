"""The DR domain is pure: no module under dr_coordinator/domain imports I/O, clocks or frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

import dr_coordinator.domain

FORBIDDEN = {
    "asyncio",
    "asyncpg",
    "httpx",
    "aiokafka",
    "zeep",
    "redis",
    "fastapi",
    "os",
    "socket",
    "time",
    "energy.adapters",
    "dr_coordinator.adapters",
    "dr_coordinator.entrypoints",
    "structlog",
    "influxdb_client",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_modules_import_no_io() -> None:
    root = Path(dr_coordinator.domain.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        bad = {m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
        assert not bad, f"{path.name} imports {sorted(bad)}"
        source = path.read_text()
        assert "datetime.now(" not in source and "utcnow(" not in source, f"{path.name} reads the clock"
