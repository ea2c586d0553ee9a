"""A container's manifest environment pointed at the local stack (pure).

Only what differs between the cluster and this machine is rewritten, and every rewrite is
listed (:class:`LocalEnv.changed`) so a report shows it:

- the managed data stores' endpoints become the local servers' (``energy stack up``), and the
  transport security the local servers do not speak (TLS, SASL, Redis AUTH) is turned off --
  tests/foundation/test_secure_connections.py rehearses those against real TLS servers;
- ``ENERGY_ENVIRONMENT`` staging/production becomes ``test``: those environments refuse the
  unencrypted connections above at start. Their checks (secrets, TLS) run before, in-process,
  on the container's environment as the cluster gives it;
- an ``s3://`` archive becomes a folder in the pod's ``/tmp`` (no object store here);
- listening hosts become the "pod IP" 127.0.0.2 (:data:`POD_IP`), where the probes go: a pod's
  0.0.0.0 is its own network namespace, here it would be every interface of the machine, and a
  process listening on 127.0.0.1 whatever its settings say fails its probe as in a pod;
- every ``ENERGY_ENDPOINTS__*_PORT`` and every containerPort moves by the same offset, so that
  the manifest's ports (inside the kernel's ephemeral range) cannot collide with the services a
  developer runs; the relation between the port a process listens on and the port its probe
  uses stays the manifest's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from energy.deploy.manifest import POD_IP, ContainerSpec, Probe

ENDPOINT_PORT = re.compile(r"^ENERGY_ENDPOINTS__[A-Z_]+_PORT$")


@dataclass(frozen=True)
class LocalStack:
    postgres: tuple[str, int]
    redis: tuple[str, int]
    mqtt: tuple[str, int]
    influx_url: str
    kafka_bootstrap: str
    weather_urls: tuple[str, str]
    extra: Mapping[str, str] = field(default_factory=dict)  # the caller's own overrides, applied last


@dataclass(frozen=True)
class LocalEnv:
    env: dict[str, str]
    changed: tuple[str, ...]


def local_env(env: Mapping[str, str], stack: LocalStack, port_offset: int) -> LocalEnv:
    new = dict(env)
    set_to = {
        "ENERGY_POSTGRES__HOST": stack.postgres[0],
        "ENERGY_POSTGRES__PORT": str(stack.postgres[1]),
        "ENERGY_POSTGRES__SSL_MODE": "disable",
        "ENERGY_REDIS__HOST": stack.redis[0],
        "ENERGY_REDIS__PORT": str(stack.redis[1]),
        "ENERGY_REDIS__TLS": "false",
        "ENERGY_MQTT__HOST": stack.mqtt[0],
        "ENERGY_MQTT__PORT": str(stack.mqtt[1]),
        "ENERGY_MQTT__TLS": "false",
        "ENERGY_INFLUX__URL": stack.influx_url,
        "ENERGY_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "ENERGY_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
        "ENERGY_FORECAST__WEATHER_PRIMARY_URL": stack.weather_urls[0],
        "ENERGY_FORECAST__WEATHER_SECONDARY_URL": stack.weather_urls[1],
        "ENERGY_STACK__BIND_HOST": POD_IP,
        "ENERGY_ENDPOINTS__API_HOST": POD_IP,
    }
    new.update(set_to)
    # Staging/production settings refuse unencrypted connections at start, and the local broker
    # cannot speak TLS or SASL: the process runs as "test". The production checks themselves run
    # on the unrewritten environment first (rehearse.plan -> cluster_settings_problems).
    if env.get("ENERGY_ENVIRONMENT") in ("staging", "production"):
        new["ENERGY_ENVIRONMENT"] = "test"
    # The local Redis has no password: a client sending AUTH to it is refused.
    for key in ("ENERGY_REDIS__PASSWORD", "ENERGY_REDIS__USERNAME"):
        new.pop(key, None)
    if new.get("ENERGY_AGGREGATION__ARCHIVE_URI", "").startswith("s3://"):
        new["ENERGY_AGGREGATION__ARCHIVE_URI"] = "/tmp/rehearsal-archive/readings"
    for key, value in env.items():
        if ENDPOINT_PORT.match(key):
            new[key] = str(int(value) + port_offset)
    new.update(stack.extra)
    changed = tuple(sorted(k for k in set(env) | set(new) if env.get(k) != new.get(k)))
    return LocalEnv(new, changed)


def _shift(probe: Probe | None, offset: int) -> Probe | None:
    if probe is None:
        return None
    return Probe(probe.path, probe.port + offset, probe.period_s, probe.timeout_s, probe.failure_threshold)


def localize(spec: ContainerSpec, stack: LocalStack, port_offset: int) -> tuple[ContainerSpec, tuple[str, ...]]:
    """The container with its environment pointed at the local stack and its ports moved."""
    from dataclasses import replace

    local = local_env(spec.env, stack, port_offset)
    return (
        replace(
            spec,
            env=local.env,
            ports={name: port + port_offset for name, port in spec.ports.items()},
            readiness=_shift(spec.readiness, port_offset),
            startup=_shift(spec.startup, port_offset),
        ),
        local.changed,
    )
