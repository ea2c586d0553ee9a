"""The local stack: real servers as plain processes on 127.0.0.1 (see docs/local-stack.md)."""

from energy.stack.errors import MissingPackageError, PortTakenError, StackError, StartFailedError
from energy.stack.servers import (
    InfluxServer,
    KafkaServer,
    MosquittoServer,
    PostgresServer,
    RedisServer,
    Server,
)
from energy.stack.stack import Stack

__all__ = [
    "InfluxServer",
    "KafkaServer",
    "MissingPackageError",
    "MosquittoServer",
    "PortTakenError",
    "PostgresServer",
    "RedisServer",
    "Server",
    "Stack",
    "StackError",
    "StartFailedError",
]
