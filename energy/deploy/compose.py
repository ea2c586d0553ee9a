"""docker-compose.yml rehearsed at the level of commands and environment (no Docker engine here).

For every service built from the project's image: each ``energy ...`` command (also inside
``sh -c "a && b"``) parses with the real CLI parser to a handler; each ``python -c`` program
compiles and its ``from X import y`` names exist; every variable the service sets is a field
of :class:`energy.settings.Settings`, and the set as a whole validates as the process would
read it at start.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from pydantic import BaseModel, ValidationError

from energy.settings_paths import PROJECT_ROOT

PREFIX = "ENERGY_"


def settings_field_problem(variable: str) -> str | None:
    """None when ``variable`` names a Settings field (ENERGY_GROUP__FIELD), else why not."""
    from energy.settings import Settings

    if not variable.startswith(PREFIX):
        return f"{variable} is not an ENERGY_* variable"
    parts = [p.lower() for p in variable[len(PREFIX) :].split("__")]
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            return f"{variable}: Settings has no field {'.'.join(parts[: i + 1])}"
        annotation = model.model_fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return f"{variable}: {'.'.join(parts[: i + 1])} is not a settings group"
            model = annotation
    return None


def _energy_command_problem(argv: Sequence[str]) -> str | None:
    from energy.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(list(argv[1:]))
        except SystemExit:
            return f"`{shlex.join(argv)}` is not a command of the energy CLI: {err.getvalue().strip()[-300:]}"
    if not callable(getattr(args, "handler", None)):
        return f"`{shlex.join(argv)}` names no action of the energy CLI"
    return None


def _python_problem(code: str) -> str | None:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"python -c program does not compile: {exc}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            try:
                module = importlib.import_module(node.module)
            except ImportError as exc:
                return f"python -c imports {node.module}: {exc}"
            for alias in node.names:
                if not hasattr(module, alias.name):
                    return f"python -c imports {alias.name} from {node.module}, which has no such name"
    return None


def command_problems(command: Sequence[str]) -> list[str]:
    argv = list(command)
    if argv[:2] == ["sh", "-c"] and len(argv) == 3:
        problems = []
        for part in argv[2].replace("&&", ";").replace("||", ";").split(";"):
            problems += command_problems(shlex.split(part))
        return problems
    if argv and argv[0] == "energy":
        problem = _energy_command_problem(argv)
        return [problem] if problem else []
    if argv[:2] == ["python", "-c"] and len(argv) == 3:
        problem = _python_problem(argv[2])
        return [problem] if problem else []
    return [f"`{shlex.join(argv)}`: not a command of the project's image"]


def environment_problems(env: Mapping[str, str]) -> list[str]:
    from energy.settings import Settings

    problems = [p for p in map(settings_field_problem, env) if p]
    if problems:
        return problems
    clean = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        try:
            Settings()
        except ValidationError as exc:
            return [f"variables do not validate: {exc}".replace("\n", " ")[:600]]
        except Exception as exc:  # settings' own refusals, e.g. insecure staging/production values
            return [f"settings refuse to start: {line}" for line in str(exc).splitlines() or [type(exc).__name__]]
    return []


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def check_compose(path: Path = PROJECT_ROOT / "docker-compose.yml") -> list[str]:
    """Problems of every service built from the project's Dockerfile, each naming the service."""
    import yaml

    compose = yaml.safe_load(path.read_text())
    problems = []
    for name, service in (compose.get("services") or {}).items():
        if "build" not in service:
            continue  # an engine's own image (postgres, kafka, ...): not ours to check
        command = service.get("command")
        if command is None:
            problems.append(f"{name}: no command (the image's CMD is `energy --help`)")
        else:
            argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
            problems += [f"{name}: {p}" for p in command_problems(argv)]
        problems += [f"{name}: {p}" for p in environment_problems(_environment(service))]
    return problems
