"""WSGI front of the BMS simulator: routes ``/bms/<facility_id>`` to that facility's spyne app,
injects faults, and serves the admin and health endpoints.

Admin (JSON):
- ``POST /_admin/faults`` ``{facility_id?, latency_ms, fault_rate, ack_loss_rate, down}``
  (no facility_id: the default for every facility); ``GET /_admin/faults``
- ``GET /_admin/executions[?facility_id=]`` -> ``{idempotency_key: times executed}``, every
  execution answered, duplicates included (so "exactly once" can fail on "twice")
- ``GET /_admin/applied[?facility_id=]`` -> ``{idempotency_key: times it changed a zone}``
- ``GET /_admin/requests[?facility_id=]`` -> ``{idempotency_key: times received}``
- ``GET /_admin/commands[?facility_id=]`` -> the command log (with each call's traceparent)
- ``GET /_admin/hits`` -> ``{facility_id: HTTP requests received}`` (WSDL, SOAP, even while down)
- ``GET /_admin/connections`` -> TCP connections ``opened`` since start and ``open`` now (keep-alive)
- ``POST /_admin/reset`` clears faults and the command log (not the zone states in Redis)
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

import structlog
from spyne.server.wsgi import WsgiApplication

from sim.bms.model import BmsControllers, FaultConfig
from sim.bms.soap import ENV_CONTROLLERS, ENV_FACILITY, ENV_INJECT_FAULT, build_wsgi_app

StartResponse = Callable[..., Any]
log = structlog.get_logger("sim.bms")


def _json(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class BmsSimulator:
    """The WSGI application of the whole simulator (thread-safe)."""

    def __init__(self, controllers: BmsControllers, rng: random.Random | None = None) -> None:
        self.controllers = controllers
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._apps: dict[str, WsgiApplication] = {}
        self._apps_lock = threading.Lock()
        self._faults_lock = threading.Lock()
        self._default_faults = FaultConfig()
        self._faults: dict[str, FaultConfig] = {}
        self._hits: dict[str, int] = {}
        self.connection_stats: Callable[[], dict[str, Any]] = dict  # set by the HTTP server that serves it

    def set_faults(self, facility_id: str | None, faults: FaultConfig) -> None:
        with self._faults_lock:
            if facility_id is None:
                self._default_faults = faults
                self._faults.clear()
            else:
                self._faults[facility_id] = faults

    def faults_for(self, facility_id: str) -> FaultConfig:
        with self._faults_lock:
            return self._faults.get(facility_id, self._default_faults)

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._rng_lock:
            return self._rng.random() < rate

    def _app_for(self, facility_id: str) -> WsgiApplication:
        with self._apps_lock:
            app = self._apps.get(facility_id)
            if app is None:
                app = self._apps[facility_id] = build_wsgi_app()
            return app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        try:
            if path == "/healthz":
                return _json(start_response, "200 OK", {"service": "bms-sim", "alive": True})
            if path.startswith("/_admin/"):
                return self._admin(environ, start_response, path.removeprefix("/_admin/"))
            if path.startswith("/bms/"):
                return self._bms(environ, start_response, path.removeprefix("/bms/").strip("/"))
            return _json(start_response, "404 Not Found", {"error": f"no route {path}"})
        except Exception as exc:  # the simulator must answer, never drop the connection
            log.exception("bms_sim_request_failed", path=path)
            return _json(start_response, "500 Internal Server Error", {"error": f"{type(exc).__name__}: {exc}"})

    def _bms(self, environ: dict[str, Any], start_response: StartResponse, facility_id: str) -> Iterable[bytes]:
        if facility_id not in self.controllers.facilities:
            return _json(start_response, "404 Not Found", {"error": f"no BMS for facility {facility_id!r}"})
        with self._faults_lock:
            self._hits[facility_id] = self._hits.get(facility_id, 0) + 1
        faults = self.faults_for(facility_id)
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000.0)
        if faults.down:
            return _json(start_response, "503 Service Unavailable", {"error": f"BMS of {facility_id} is down"})
        is_rpc = environ.get("REQUEST_METHOD", "GET").upper() == "POST"
        environ[ENV_CONTROLLERS] = self.controllers
        environ[ENV_FACILITY] = facility_id
        environ[ENV_INJECT_FAULT] = is_rpc and self._chance(faults.fault_rate)
        app = self._app_for(facility_id)
        if is_rpc and self._chance(faults.ack_loss_rate):
            # Execute for real, then lose the answer: the caller must retry with the same key.
            captured: list[str] = []
            body = b"".join(app(environ, lambda status, headers, *_: captured.append(status)))
            log.info("bms_sim_ack_lost", facility_id=facility_id, status=captured[:1], bytes=len(body))
            return _json(start_response, "503 Service Unavailable", {"error": "injected: answer lost after executing"})
        return app(environ, start_response)  # type: ignore[no-any-return]

    def _admin(self, environ: dict[str, Any], start_response: StartResponse, action: str) -> Iterable[bytes]:
        from urllib.parse import parse_qs

        method = environ.get("REQUEST_METHOD", "GET").upper()
        query = parse_qs(environ.get("QUERY_STRING", ""))
        facility = (query.get("facility_id") or [None])[0]
        if action == "faults" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length > 65536:
                    raise ValueError("body too large")
                body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                facility_id, faults = FaultConfig.parse(body)
                if facility_id is not None and facility_id not in self.controllers.facilities:
                    raise ValueError(f"unknown facility_id {facility_id!r}")
            except ValueError as exc:
                return _json(start_response, "400 Bad Request", {"error": str(exc)})
            self.set_faults(facility_id, faults)
            log.info("bms_sim_faults_set", facility_id=facility_id, **asdict(faults))
            return _json(start_response, "200 OK", {"facility_id": facility_id, **asdict(faults)})
        if action == "faults" and method == "GET":
            with self._faults_lock:
                body = {"default": asdict(self._default_faults), **{k: asdict(v) for k, v in self._faults.items()}}
            return _json(start_response, "200 OK", body)
        if action == "executions" and method == "GET":
            return _json(start_response, "200 OK", self.controllers.executions(facility))
        if action == "applied" and method == "GET":
            return _json(start_response, "200 OK", self.controllers.applied(facility))
        if action == "requests" and method == "GET":
            return _json(start_response, "200 OK", self.controllers.requests(facility))
        if action == "commands" and method == "GET":
            return _json(start_response, "200 OK", [asdict(r) for r in self.controllers.records(facility)])
        if action == "hits" and method == "GET":
            with self._faults_lock:
                return _json(start_response, "200 OK", dict(self._hits))
        if action == "connections" and method == "GET":
            return _json(start_response, "200 OK", self.connection_stats())
        if action == "reset" and method == "POST":
            with self._faults_lock:
                self._hits.clear()
            self.controllers.reset()
            self.set_faults(None, FaultConfig())
            return _json(start_response, "200 OK", {"reset": True})
        return _json(start_response, "404 Not Found", {"error": f"no admin action {method} {action}"})
