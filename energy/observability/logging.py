"""structlog JSON logs; every line carries the service name and, inside a trace, its ids."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(service: str, level: str = "INFO", json_logs: bool = True) -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # No file argument: print to whatever sys.stdout is at each call (test capture, redirection).
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # Noisy libraries: keep their warnings, drop their chatter.
    for noisy in ("aiokafka", "mqtt", "faust", "mode", "zeep", "httpx", "httpcore", "spyne"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configure_tracing(service)


def _configure_tracing(service: str) -> None:
    # Every process configures logging first thing; its spans get the same service name.
    from energy.observability import tracing
    from energy.settings import get_settings

    tracing.configure(service, get_settings().log.traces_file)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
