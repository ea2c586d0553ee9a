"""The BMS simulator's HTTP/1.1 server: a WSGI gateway over the standard library's threaded HTTP
server that keeps connections alive, as a building's SOAP endpoint does (decision 1020).

werkzeug's development server answers every request with ``Connection: close``, so each SOAP call
paid a new TCP connection on both sides. This server:

- keeps a connection open after a response (HTTP/1.1 persistent connections, RFC 9112 §9.3) unless
  the client sent ``Connection: close`` or spoke HTTP/1.0 without ``keep-alive``;
- closes a connection that stayed idle ``idle_timeout_s`` (a real server's keep-alive timeout), and
  one that has carried ``max_requests`` requests, saying ``Connection: close`` on its last response
  (RFC 9112 §9.6): clients must cope with both, as with any real peer;
- reads the whole request body (``Content-Length``) before the application runs, so the next
  request on the connection always starts at a request line; a body without a length is refused
  with 411 and the connection closed (RFC 9110 §15.5.12);
- answers with a ``Content-Length`` (the application's body is buffered; SOAP answers are small).
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

# The defaults of a common production HTTP server (Apache httpd: KeepAliveTimeout 5,
# MaxKeepAliveRequests 100).
IDLE_TIMEOUT_S = 5.0
MAX_REQUESTS = 100
_HOP_BY_HOP = {"connection", "keep-alive", "content-length", "transfer-encoding"}
_MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK of the headers (tens of ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    server: KeepAliveWsgiServer
    _served = 0

    def setup(self) -> None:
        super().setup()  # applies the class's ``timeout`` (the idle timeout) to the socket
        self.server.connection_opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.connection_closed()

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            self.close_connection = True  # the client went away: nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr is the noise werkzeug's logger was silenced for

    def _serve(self) -> None:
        self._served += 1
        if self.headers.get("Transfer-Encoding"):
            self._refuse(411, "Length Required", b"a request body needs a Content-Length")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self._refuse(400, "Bad Request", b"invalid Content-Length")
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True  # the client went away mid-body
            return
        status, headers, chunks = self._run_app(body)
        payload = b"".join(chunks)
        if self._served >= self.server.max_requests:
            self.close_connection = True
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def _refuse(self, code: int, reason: str, message: bytes) -> None:
        self.close_connection = True
        self.send_response(code, reason)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(message)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(message)

    def _run_app(self, body: bytes) -> tuple[str, list[tuple[str, str]], list[bytes]]:
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result: Iterable[bytes] = self.server.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return started[0], started[1], chunks


class KeepAliveWsgiServer(ThreadingHTTPServer):
    """One thread per connection (not per request); ``serve_forever``/``shutdown`` as usual."""

    daemon_threads = True
    request_queue_size = 1024  # a fleet's connections arrive at once when a dispatch starts

    def __init__(
        self,
        host: str,
        port: int,
        app: Any,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        if idle_timeout_s <= 0 or max_requests < 1:
            raise ValueError("idle_timeout_s must be > 0 and max_requests >= 1")
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self.connections_opened = 0
        self.connections_open = 0
        handler = type("_IdleTimeoutHandler", (_Handler,), {"timeout": idle_timeout_s})
        super().__init__((host, port), handler)

    def connection_opened(self) -> None:
        with self._lock:
            self.connections_opened += 1
            self.connections_open += 1

    def connection_closed(self) -> None:
        with self._lock:
            self.connections_open -= 1
