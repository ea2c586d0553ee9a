"""Rendered Kubernetes manifests -> the processes their containers run (pure: no I/O).

What a container runs is decided the way the kubelet and the container runtime decide it:
``command`` replaces the image's ENTRYPOINT and ``args`` its CMD; the working directory is the
container's ``workingDir`` or the image's WORKDIR; the environment is the image's ENV, then
``envFrom`` (ConfigMaps and Secrets, later sources win), then ``env`` (``$(VAR)`` expanded);
``securityContext`` of the container overrides the pod's. Secrets made by the External Secrets
operator are resolved from a test secret store (remote key -> value or properties) in which
every referenced key must exist: a missing one fails naming the Secret key, never an empty
value. Anything the rehearsal cannot reproduce (an unknown volume kind, init containers) fails
loudly instead of being skipped.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The pod's own address on this machine: a loopback address other than the 127.0.0.1 the local
# stack and every default use, so a process that ignores its bind-host setting and listens on
# 127.0.0.1 only fails its probes here as it would in a pod (the kubelet probes the pod IP).
POD_IP = "127.0.0.2"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet")
# A claim is rehearsed as an empty writable folder per container, like an emptyDir: what the rehearsal checks
# (the process may write where it writes) holds; that two workloads share the claim's contents is not rehearsed.
REHEARSED_VOLUME_KINDS = ("emptyDir", "persistentVolumeClaim")


class RehearsalError(Exception):
    """The manifests cannot be run as written; the message names the object and the key."""


@dataclass(frozen=True)
class ImageSpec:
    """What the Dockerfile's final stage gives every container of the image."""

    workdir: str = "/"
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()  # directories the image creates (mount points, working dir)


@dataclass(frozen=True)
class Probe:
    path: str
    port: int
    period_s: float
    timeout_s: float
    failure_threshold: int

    @property
    def budget_s(self) -> float:
        return self.period_s * self.failure_threshold


@dataclass(frozen=True)
class Mount:
    path: str
    volume: str
    kind: str  # emptyDir or persistentVolumeClaim (rehearsed as a fresh folder); others fail in containers_of
    read_only: bool


@dataclass(frozen=True)
class ContainerSpec:
    workload: str  # "Deployment/aggregation"
    name: str
    argv: tuple[str, ...]
    workdir: str
    env: Mapping[str, str]
    ports: Mapping[str, int]  # port name (or str(number)) -> containerPort
    readiness: Probe | None
    startup: Probe | None
    read_only_root: bool
    mounts: tuple[Mount, ...]
    run_as_user: int | None
    run_as_group: int | None
    fs_group: int | None
    run_as_non_root: bool
    no_new_privileges: bool
    drop_capabilities: tuple[str, ...]
    add_capabilities: tuple[str, ...]
    grace_s: float
    pre_stop: tuple[str, ...] | None

    @property
    def label(self) -> str:
        return f"container {self.name} ({self.workload})"


# --- the image ------------------------------------------------------------------------------


def _exec_form(value: str) -> tuple[str, ...]:
    value = value.strip()
    if value.startswith("["):
        return tuple(str(v) for v in json.loads(value))
    return ("/bin/sh", "-c", value)


def parse_dockerfile(text: str) -> ImageSpec:
    """The final stage's WORKDIR, USER, ENV, ENTRYPOINT, CMD and the directories its RUN lines
    create with ``mkdir -p`` (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    last_from = max((i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")), default=-1)
    workdir, user = "/", None
    env: dict[str, str] = {}
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    dirs: list[str] = []
    for line in lines[last_from + 1 :]:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "WORKDIR":
            workdir = rest.strip() if rest.strip().startswith("/") else f"{workdir.rstrip('/')}/{rest.strip()}"
            dirs.append(workdir)
        elif keyword == "USER":
            user = rest.strip()
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = _expand_shell(value, env)
        elif keyword == "ENTRYPOINT":
            entrypoint = _exec_form(rest)
        elif keyword == "CMD":
            cmd = _exec_form(rest)
        elif keyword == "RUN":
            for command in re.split(r"&&|;", rest):
                words = shlex.split(command)
                if words[:2] == ["mkdir", "-p"]:
                    dirs.extend(w for w in words[2:] if w.startswith("/"))
    return ImageSpec(workdir, user, env, entrypoint, cmd, tuple(dirs))


def _expand_shell(value: str, env: Mapping[str, str]) -> str:
    # Dockerfile ENV expands $VAR / ${VAR} from earlier ENV lines; unknown ones are left for the
    # process environment the rehearsal supplies (PATH).
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), value)


# --- ConfigMaps and Secrets ----------------------------------------------------------------------


def config_maps(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: {k: str(v) for k, v in (d.get("data") or {}).items()} for d in _kind(docs, "ConfigMap")
    }


def secrets(docs: Iterable[Mapping[str, Any]], store: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Every Secret the pods can see: plain Secret objects, and the targets of ExternalSecrets
    resolved from ``store`` (remote key -> a string, or a mapping of properties)."""
    docs = list(docs)
    out: dict[str, dict[str, str]] = {}
    for d in _kind(docs, "Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (d.get("stringData") or {}).items()})
        out[d["metadata"]["name"]] = data
    for d in _kind(docs, "ExternalSecret"):
        spec = d.get("spec") or {}
        target = (spec.get("target") or {}).get("name") or d["metadata"]["name"]
        data = {}
        for entry in spec.get("dataFrom") or []:
            key = (entry.get("extract") or {}).get("key")
            if key is None:
                raise RehearsalError(f"ExternalSecret {d['metadata']['name']}: only dataFrom.extract is rehearsed")
            value = _remote(store, target, f"dataFrom {key}", key, None)
            if not isinstance(value, Mapping):
                raise RehearsalError(f"Secret {target}: remote key {key!r} must hold properties for dataFrom")
            data.update({str(k): str(v) for k, v in value.items()})
        for entry in spec.get("data") or []:
            ref = entry.get("remoteRef") or {}
            data[entry["secretKey"]] = str(
                _remote(store, target, entry["secretKey"], ref.get("key"), ref.get("property"))
            )
        out[target] = data
    return out


def _remote(store: Mapping[str, Any], target: str, secret_key: str, key: str | None, prop: str | None) -> Any:
    where = f"remote key {key!r}" + (f" property {prop!r}" if prop else "")
    if key is None or key not in store:
        raise RehearsalError(f"Secret {target} key {secret_key}: {where} is not in the test secret store")
    value = store[key]
    if prop is None:
        if isinstance(value, Mapping):
            raise RehearsalError(f"Secret {target} key {secret_key}: {where} holds properties; name one")
        return value
    if not isinstance(value, Mapping) or prop not in value:
        raise RehearsalError(f"Secret {target} key {secret_key}: {where} is not in the test secret store")
    return value[prop]


# --- containers ------------------------------------------------------------------------------------


def _kind(docs: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [d for d in docs if d and d.get("kind") == kind]


def _pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def containers_of(docs: Iterable[Mapping[str, Any]], image: ImageSpec, store: Mapping[str, Any]) -> list[ContainerSpec]:
    """Every container of every workload, as the process it starts. Raises RehearsalError naming
    the workload, container and key for anything that would not start in a cluster either."""
    docs = list(docs)
    maps = config_maps(docs)
    secret_data = secrets(docs, store)
    out = []
    for doc in docs:
        if not doc or doc.get("kind") not in WORKLOAD_KINDS:
            continue
        workload = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = _pod_spec(doc)
        if pod.get("initContainers"):
            raise RehearsalError(f"{workload}: init containers are not rehearsed yet")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod["containers"]:
            out.append(_container(workload, pod, c, volumes, image, maps, secret_data))
    return out


def _container(
    workload: str,
    pod: Mapping[str, Any],
    c: Mapping[str, Any],
    volumes: Mapping[str, Mapping[str, Any]],
    image: ImageSpec,
    maps: Mapping[str, Mapping[str, str]],
    secret_data: Mapping[str, Mapping[str, str]],
) -> ContainerSpec:
    where = f"{workload} container {c['name']}"
    env = _environment(where, c, image, maps, secret_data)
    # command replaces ENTRYPOINT (and drops CMD); args alone replaces CMD.
    entry, default_args = (c["command"], []) if "command" in c else (image.entrypoint, image.cmd)
    argv = [_expand_refs(str(a), env) for a in [*entry, *c.get("args", default_args)]]
    if not argv:
        raise RehearsalError(f"{where}: no command (neither the manifest nor the image sets one)")
    ports = {}
    for p in c.get("ports") or []:
        ports[str(p["containerPort"])] = int(p["containerPort"])
        if "name" in p:
            ports[p["name"]] = int(p["containerPort"])
    pod_sc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    mounts = []
    for m in c.get("volumeMounts") or []:
        if m["name"] not in volumes:
            raise RehearsalError(f"{where}: volumeMount {m['mountPath']} names no volume {m['name']!r}")
        kind = next((k for k in volumes[m["name"]] if k != "name"), "?")
        if kind not in REHEARSED_VOLUME_KINDS:
            raise RehearsalError(f"{where}: volume {m['name']} of kind {kind} is not rehearsed yet")
        mounts.append(Mount(m["mountPath"], m["name"], kind, bool(m.get("readOnly", False))))
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command")
    return ContainerSpec(
        workload=workload,
        name=c["name"],
        argv=tuple(argv),
        workdir=c.get("workingDir") or image.workdir,
        env=env,
        ports=ports,
        readiness=_probe(where, c.get("readinessProbe"), ports),
        startup=_probe(where, c.get("startupProbe"), ports),
        read_only_root=bool(sc.get("readOnlyRootFilesystem", False)),
        mounts=tuple(mounts),
        run_as_user=_pick_int(sc, pod_sc, "runAsUser", image.user),
        run_as_group=_pick_int(sc, pod_sc, "runAsGroup", None),
        fs_group=pod_sc.get("fsGroup"),
        run_as_non_root=bool(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False))),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        drop_capabilities=tuple(caps.get("drop") or ()),
        add_capabilities=tuple(caps.get("add") or ()),
        grace_s=float(pod.get("terminationGracePeriodSeconds", 30)),
        pre_stop=tuple(str(a) for a in pre_stop) if pre_stop else None,
    )


def _pick_int(sc: Mapping[str, Any], pod_sc: Mapping[str, Any], key: str, image_default: str | None) -> int | None:
    value = sc.get(key, pod_sc.get(key))
    if value is None and image_default is not None and image_default.split(":")[0].isdigit():
        value = int(image_default.split(":")[0])
    return None if value is None else int(value)


def _probe(where: str, probe: Mapping[str, Any] | None, ports: Mapping[str, int]) -> Probe | None:
    if not probe:
        return None
    get = probe.get("httpGet")
    if get is None:
        raise RehearsalError(f"{where}: only httpGet probes are rehearsed")
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        if port not in ports:
            raise RehearsalError(f"{where}: probe port {port!r} is not a declared container port")
        number = ports[port]
    else:
        number = int(port)
    return Probe(
        path=get.get("path", "/"),
        port=number,
        period_s=float(probe.get("periodSeconds", 10)),
        timeout_s=float(probe.get("timeoutSeconds", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
    )


def _environment(
    where: str,
    c: Mapping[str, Any],
    image: ImageSpec,
    maps: Mapping[str, Mapping[str, str]],
    secret_data: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    env = dict(image.env)
    for source in c.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, objects in (("configMapRef", maps), ("secretRef", secret_data)):
            ref = source.get(kind)
            if ref is None:
                continue
            name = ref["name"]
            if name not in objects:
                if ref.get("optional"):
                    continue
                what = "ConfigMap" if kind == "configMapRef" else "Secret"
                raise RehearsalError(f"{where}: envFrom {what} {name} does not exist")
            env.update({prefix + k: v for k, v in objects[name].items()})
    for var in c.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = _expand_refs(str(var.get("value", "")), env)
            continue
        src = var["valueFrom"]
        for kind, objects, what in (
            ("configMapKeyRef", maps, "ConfigMap"),
            ("secretKeyRef", secret_data, "Secret"),
        ):
            ref = src.get(kind)
            if ref is None:
                continue
            data = objects.get(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    break
                missing = f"{what} {ref['name']}" if data is None else f"key {ref['key']} of {what} {ref['name']}"
                raise RehearsalError(f"{where}: env {var['name']}: {missing} does not exist")
            env[var["name"]] = data[ref["key"]]
            break
        else:
            field_ref = (src.get("fieldRef") or {}).get("fieldPath")
            values = {"metadata.name": f"{where.split()[0].split('/')[-1]}-rehearsal", "status.podIP": POD_IP}
            if field_ref not in values:
                raise RehearsalError(f"{where}: env {var['name']}: valueFrom {sorted(src)} is not rehearsed")
            env[var["name"]] = values[field_ref]
    return env


def _expand_refs(value: str, env: Mapping[str, str]) -> str:
    # Kubernetes' $(VAR) expansion: defined variables are replaced, $$ escapes, others stay as is.
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )
