"""The CLI behaves: a version, help per action, and every error one line on stderr with a non-zero exit
(the traceback only with --debug)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from energy.stack.process import free_port

ROOT = Path(__file__).resolve().parents[2]
ENERGY = [sys.executable, "-m", "energy.cli"]
PERIOD = ["--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T06:00:00Z"]


def energy(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENERGY, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=ROOT
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_version_is_the_package_version() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = energy("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"energy {declared}"


def test_each_action_has_its_own_help_without_markup() -> None:
    for args in (["--help"], ["stack", "--help"], ["export", "readings", "--help"]):
        out = energy(*args)
        assert out.returncode == 0, out.stderr
        assert "``" not in out.stdout
    assert "the local servers" in energy("stack", "--help").stdout  # the action's description, not only usage


def test_unknown_command_and_bad_argument_are_one_line_usage_errors() -> None:
    assert_one_line_error(energy("bogus"), "invalid choice: 'bogus'")
    bad_time = energy("export", "readings", "--facility", "fac-001", "--from", "yesterday", "--to", "2026-01-01T00:00Z")
    assert_one_line_error(bad_time, "not an ISO-8601 time")
    assert bad_time.returncode == 2


def test_bad_time_zone_is_one_line_naming_it(stack) -> None:
    out = energy("export", "readings", "--facility", "fac-001", *PERIOD, "--tz", "Mars/Olympus_Mons")
    assert_one_line_error(out, "unknown time zone 'Mars/Olympus_Mons'")


def test_unknown_facility_is_one_line_naming_it(stack) -> None:
    out = energy("export", "readings", "--facility", "fac-001", "--facility", "no-such-facility", *PERIOD)
    assert_one_line_error(out, "unknown facility: no-such-facility")
    assert out.returncode == 1


def test_stopped_server_is_one_line_saying_what_to_check() -> None:
    nothing_listens = str(free_port())
    out = energy("db", "status", ENERGY_POSTGRES__PORT=nothing_listens)
    assert_one_line_error(out, "cannot reach a server")
    assert nothing_listens in out.stderr and "energy stack status" in out.stderr
    debug = energy("--debug", "db", "status", ENERGY_POSTGRES__PORT=nothing_listens)
    assert debug.returncode == out.returncode and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == out.stderr.strip()
