"""energy: one entry point for the local stack, the database, every service and simulator.

Each service package may expose ``<package>.cli.register(subparsers)`` to add its own
subcommands; they are discovered from :data:`SERVICE_CLIS`. Errors are one line on stderr
(``error: ...``) with a non-zero exit; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

SERVICE_CLIS = (
    "ingestion.cli",
    "aggregation.cli",
    "forecast.cli",
    "dr_coordinator.cli",
    "api.cli",
    "sim.cli",
    "bench.cli",
)

Handler = Callable[[argparse.Namespace], int | None]


def _stack(args: argparse.Namespace) -> int:
    from energy.settings import get_settings
    from energy.stack import Stack, StackError

    stack = Stack(get_settings())
    try:
        if args.action == "up":
            print(f"local stack in {stack.root}")
            stack.up()
        elif args.action == "down":
            stack.down()
        elif args.action == "reset":
            stack.reset()
            print(f"stopped and removed {stack.root}")
        else:
            rows = stack.status()
            print(f"{'server':<10} {'port':<6} {'pid':<8} {'running':<8} answers")
            for r in rows:
                print(
                    f"{r.name:<10} {r.port:<6} {r.pid or '-':<8} {'yes' if r.running else 'no':<8} "
                    f"{'yes' if r.answers else 'NO'}"
                )
            return 0 if all(r.answers for r in rows) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _db(args: argparse.Namespace) -> int:
    import asyncio

    from energy.adapters.postgres import ssl_option
    from energy.db.migrate import applied_versions, migrate
    from energy.settings import get_settings

    pg = get_settings().postgres
    dsn, ssl = pg.dsn(), ssl_option(pg)
    if args.action == "migrate":
        done = asyncio.run(migrate(dsn, ssl=ssl))
        print("applied: " + (", ".join(done) if done else "nothing (up to date)"))
    else:
        for version, name in asyncio.run(applied_versions(dsn, ssl=ssl)):
            print(f"{version}  {name}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from schemas.registry import JSONSCHEMA_DIR, export, json_schemas

    if args.action == "export":
        for path in export():
            print(path)
        return 0
    import json

    stale = [
        n
        for n, s in json_schemas().items()
        if not (JSONSCHEMA_DIR / n).exists() or json.loads((JSONSCHEMA_DIR / n).read_text()) != s
    ]
    for name in stale:
        print(f"out of date: schemas/jsonschema/{name} (run: energy schemas export)")
    return 1 if stale else 0


def _seed(args: argparse.Namespace) -> int:
    import asyncio

    from energy.seed import SeedRefusedError, seed_fleet
    from energy.seed_history import seed_history
    from energy.settings import get_settings

    s = get_settings()
    try:
        summary = asyncio.run(seed_fleet(s, facilities=args.facilities, meters_per_facility=args.meters))
        print(summary, flush=True)
        if args.history_days > 0:
            history = asyncio.run(
                seed_history(s, days=args.history_days, facilities=args.facilities, meters_per_facility=args.meters)
            )
            print(history.line())
    except SeedRefusedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return value


def _run(args: argparse.Namespace) -> int:
    from energy.runner import run_all

    return run_all(args.only, first_model=args.first_model)


def _first_model(args: argparse.Namespace) -> int:
    from energy.first_model import ENSEMBLE, STEPS, first_model
    from energy.settings import get_settings

    steps = STEPS if args.steps is None else args.steps
    ensemble = ENSEMBLE if args.ensemble is None else args.ensemble
    return first_model(get_settings(), steps=steps, ensemble=ensemble, progress=args.progress is not False)


def _stop(args: argparse.Namespace) -> int:
    from energy.runner import stop_all

    return stop_all()


def _status(args: argparse.Namespace) -> int:
    from energy.runner import print_status

    return print_status()


def _deploy(args: argparse.Namespace) -> int:
    from energy.deploy.manifest import RehearsalError
    from energy.settings import get_settings

    try:
        if args.action == "compose":
            from energy.deploy.compose import check_compose

            problems = check_compose()
            for problem in problems:
                print(f"FAIL  {problem}")
            print("docker-compose.yml: every service's command and variables check out" if not problems else "")
            return 1 if problems else 0
        from energy.deploy.rehearse import DEFAULT_STORE, rehearse

        report = rehearse(
            args.overlay,
            get_settings(),
            store_path=args.secrets or DEFAULT_STORE,
            only=args.only,
            progress=print,
        )
    except RehearsalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"overlay {report.overlay} (ports moved by {report.port_offset:+d}):")
    for outcome in report.outcomes:
        print(outcome.line())
        if outcome.changed_env:
            print(f"      pointed at the local stack: {', '.join(outcome.changed_env)}")
    return 0 if report.ok else 1


def _plugin_failed(module_name: str, exc: BaseException) -> None:
    print(f"warning: commands of {module_name} unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("energy-platform")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand its one-line help as the description of its own ``--help``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None and helps.get(name):
                    child.description = helps[name]
                _describe_subcommands(child)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (with where to read more), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="energy", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"energy {package_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars with ETA on stderr for long work (default: only when stderr is a terminal)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="the local servers: PostgreSQL, Redis, Mosquitto, InfluxDB, Kafka")
    p.add_argument("action", choices=["up", "down", "status", "reset"])
    p.set_defaults(handler=_stack)

    p = sub.add_parser("db", help="PostgreSQL migrations")
    p.add_argument("action", choices=["migrate", "status"])
    p.set_defaults(handler=_db)

    p = sub.add_parser("schemas", help="event JSON Schemas")
    p.add_argument("action", choices=["export", "check"])
    p.set_defaults(handler=_schemas)

    p = sub.add_parser("seed", help="register the simulated fleet and write its history (idempotent)")
    p.add_argument("--facilities", type=int, default=None)
    p.add_argument("--meters", type=int, default=None, help="meters per facility")
    p.add_argument(
        "--history-days",
        type=_non_negative_int,
        default=60,
        help="days of 15-min meter history for facilities that have none yet (0: none); see decision 0820",
    )
    p.set_defaults(handler=_seed)

    p = sub.add_parser("run", help="start every service and simulator in the background")
    p.add_argument("--only", nargs="*", default=None, help="names of processes to start")
    p.add_argument(
        "--first-model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then train the forecast model on the seeded history in the background (energy first-model)",
    )
    p.set_defaults(handler=_run)
    p = sub.add_parser(
        "first-model",
        help="train the forecast model on the seeded history (energy forecast train), then forecast once; "
        "energy run starts it in the background; see decision 0951",
    )
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per ensemble member (default 300)")
    p.add_argument("--ensemble", type=int, default=None, help="ensemble members (default 1)")
    p.set_defaults(handler=_first_model)
    p = sub.add_parser("stop", help="stop the services and simulators started by `energy run`")
    p.set_defaults(handler=_stop)
    p = sub.add_parser("status", help="what `energy run` started, and whether it is ready")
    p.set_defaults(handler=_status)

    p = sub.add_parser("deploy", help="rehearse deploy/ on this machine: each container under its pod's constraints")
    p.add_argument("action", choices=["rehearse", "compose"])
    p.add_argument("--overlay", choices=["staging", "production"], default="production")
    p.add_argument("--secrets", type=Path, default=None, help="test secret store (deploy/rehearsal/test-secrets.yaml)")
    p.add_argument("--only", nargs="*", default=None, help="names of containers to start")
    p.set_defaults(handler=_deploy)

    for module_name in SERVICE_CLIS:
        try:
            module: Any = importlib.import_module(module_name)
            module.register(sub)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that service has no CLI yet
            _plugin_failed(module_name, exc)
        except Exception as exc:
            # One broken service must not take the stack, migration and other commands down with it.
            _plugin_failed(module_name, exc)
    _describe_subcommands(parser)
    return parser


_UNREACHABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}


def error_line(exc: BaseException) -> str:
    """One line a person can act on, for an error no command handled itself."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        return f"invalid configuration: {problems}"
    if isinstance(exc, ConnectionError | TimeoutError) or (isinstance(exc, OSError) and exc.errno in _UNREACHABLE):
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return f"cannot reach a server: {detail} (is the local stack up? see: energy stack status)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    if args.progress is not None:
        from energy.progress import set_mode

        set_mode(args.progress)
    _log_to_stderr()
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc(file=sys.stderr)
        for line in error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2 if _is_configuration_error(exc) else 1


def _log_to_stderr() -> None:
    """A command's logs go to stderr, so its stdout (JSON, CSV) stays clean; a service that configures
    logging (``configure_logging``) takes over. sys.stderr is looked up at each line (test capture)."""
    import structlog

    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))


def error_lines(exc: BaseException) -> list[str]:
    """What to tell the person: one line per problem, never a traceback."""
    from pydantic import ValidationError

    from energy.settings import InsecureSettingsError

    if isinstance(exc, InsecureSettingsError):
        return [f"refusing to run in {exc.environment}: {problem}" for problem in exc.problems]
    if isinstance(exc, ValidationError):
        # One line per wrong setting, naming its variable (no pydantic report spread over lines).
        lines = []
        for error in exc.errors():
            path = tuple(str(part) for part in error["loc"])
            variable = "ENERGY_" + "__".join(part.upper() for part in path)
            lines.append(f"invalid configuration: {'.'.join(path)} ({variable}): {error['msg']}")
        return lines
    return [error_line(exc)]


def _is_configuration_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    from energy.settings import InsecureSettingsError

    return isinstance(exc, ValidationError | InsecureSettingsError)


if __name__ == "__main__":
    sys.exit(main())
