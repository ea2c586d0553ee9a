"""The two commands: README opens with them, CI calls `make test`, `make run` sets up and starts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash)?\n(.*?)```", text, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    assert text.index("```") < text.index("## ")  # before any other section


def test_ci_runs_make_test_and_fails_on_failure() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert re.search(r"^make test$", script, re.M)


def test_make_targets_set_up_before_they_start() -> None:
    out = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    joined = "\n".join(lines)
    assert joined.index("bootstrap.sh") < joined.index("stack up") < joined.index("db migrate")
    assert joined.index("seed") < joined.index("energy run")
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.index("bootstrap.sh") < out.stdout.index("stack up") < out.stdout.index("pytest")


def test_every_service_cli_plugin_loads_without_warnings() -> None:
    out = subprocess.run([str(ROOT / ".venv/bin/energy"), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "warning:" not in out.stderr, out.stderr
    for group in ("stack", "db", "schemas", "seed", "run", "stop", "status"):
        assert group in out.stdout
