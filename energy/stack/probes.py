"""Protocol-level "does it answer" checks, each bounded by a short timeout."""

from __future__ import annotations

import socket
import struct
import urllib.request

TIMEOUT_S = 1.0


def _exchange(host: str, port: int, payload: bytes, expect_len: int) -> bytes:
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.sendall(payload)
        data = b""
        while len(data) < expect_len:
            chunk = sock.recv(expect_len - len(data))
            if not chunk:
                break
            data += chunk
        return data


def postgres_answers(host: str, port: int) -> bool:
    """SSLRequest: a live postmaster answers a single byte, 'S' or 'N'."""
    try:
        return _exchange(host, port, struct.pack("!ii", 8, 80877103), 1) in (b"S", b"N")
    except OSError:
        return False


def redis_answers(host: str, port: int) -> bool:
    try:
        return _exchange(host, port, b"PING\r\n", 7).startswith(b"+PONG")
    except OSError:
        return False


def mqtt_answers(host: str, port: int) -> bool:
    """MQTT 3.1.1 CONNECT with clean session and an empty client id; expect CONNACK accepted."""
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0])
    try:
        return _exchange(host, port, connect, 4) == bytes([0x20, 2, 0, 0])
    except OSError:
        return False


def kafka_answers(host: str, port: int) -> bool:
    """ApiVersions v0; a broker answers with our correlation id and error code 0."""
    client_id = b"energy-probe"
    body = struct.pack("!hhih", 18, 0, 4242, len(client_id)) + client_id
    try:
        data = _exchange(host, port, struct.pack("!i", len(body)) + body, 10)
    except OSError:
        return False
    if len(data) < 10:
        return False
    _, correlation_id, error_code = struct.unpack("!iih", data[:10])
    return correlation_id == 4242 and error_code == 0


def influx_answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=TIMEOUT_S) as resp:
            return int(resp.status) == 204
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 - loopback only
            return int(resp.status) == 200
    except OSError:
        return False
