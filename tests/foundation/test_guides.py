"""The user guides stay true: every command in a ``console`` block of docs/guides runs and succeeds
against the local stack (``energy`` commands as they are; ``curl`` against the API, started here on
the settings' port, with the guide's port replaced by it)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from api.app import create_app
from energy.observability.http import serve_app
from energy.settings import ServiceEndpoints

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ROOT / "docs" / "guides"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
DOCUMENTED_API = f"127.0.0.1:{ServiceEndpoints().api_port}"


def guide_commands() -> list[tuple[str, str]]:
    found = []
    for guide in sorted(GUIDES.glob("*.md")):
        for block in BLOCK.findall(guide.read_text()):
            for line in block.splitlines():
                if line.startswith("$ "):
                    found.append((guide.name, line[2:].strip()))
    return found


COMMANDS = guide_commands()


def test_every_guide_for_each_kind_of_user_exists_and_has_commands() -> None:
    names = {p.name for p in GUIDES.glob("*.md")}
    assert {"facility-manager.md", "analyst.md", "operator.md"} <= names
    assert {g for g, _ in COMMANDS} >= {"facility-manager.md", "analyst.md", "operator.md"}
    assert all(cmd.split()[0] in {"energy", "curl"} for _, cmd in COMMANDS), "only energy and curl are run here"


@pytest.mark.parametrize(("guide", "command"), COMMANDS, ids=[f"{g}:{c[:60]}" for g, c in COMMANDS])
async def test_guide_command_runs(guide: str, command: str, settings, stack, port) -> None:
    argv = shlex.split(command)
    stop = asyncio.Event()
    server = None
    if argv[0] == "energy":
        argv = [sys.executable, "-m", "energy.cli", *argv[1:]]
    else:
        app = create_app(settings)
        server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop))
        argv = [a.replace(DOCUMENTED_API, f"127.0.0.1:{port}") for a in argv]
        argv[1:1] = ["--fail-with-body", "--retry", "30", "--retry-connrefused", "--retry-delay", "1"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
            cwd=ROOT,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 180)
    finally:
        stop.set()
        if server is not None:
            await server
    assert proc.returncode == 0, f"{guide}: {command}\n{err.decode()[-2000:]}\n{out.decode()[-500:]}"
    assert out or (command.startswith("energy export readings") and "--out" in command), "it printed something"
