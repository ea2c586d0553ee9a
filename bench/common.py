"""What every benchmark shares: the results file (figures, units, machine, date) and a table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="short run against the local stack")
    return p


def machine() -> dict[str, Any]:
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
    except OSError:
        cpu = platform.processor()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def write_results(
    name: str,
    figures: dict[str, Any],
    units: dict[str, str],
    quick: bool,
    goals: dict[str, str] | None = None,
    notes: str = "",
) -> Path:
    """Write ``bench/results/<name>.json`` (a full run) or ``<name>.quick.json`` (``--quick``, not kept
    in git: a smoke run must never replace the figures docs/benchmarks.md reports) and print a table."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "figures": figures,
        "units": units,
        "goals": goals or {},
        "notes": notes,
        **figures,  # top-level keys too, so consumers can read results[key] directly
    }
    path = RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    print_table(name, figures, units, goals or {})
    return path


def print_table(name: str, figures: dict[str, Any], units: dict[str, str], goals: dict[str, str]) -> None:
    width = max([len(k) for k in figures] + [6])
    print(f"\n{name}")
    print(f"{'figure':<{width}}  {'value':>14}  {'unit':<10}  goal")
    for key, value in figures.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown:>14}  {units.get(key, ''):<10}  {goals.get(key, '')}")
