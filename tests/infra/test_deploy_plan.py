"""energy.deploy without starting services: manifests -> process specs, secrets from the test
store, the local-stack environment, the sandbox script, docker-compose's commands and variables,
and the CI rule for missing tools. Expected values are written out by hand from the manifests."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from energy.deploy.compose import check_compose, command_problems, environment_problems
from energy.deploy.local import LocalStack, local_env
from energy.deploy.manifest import (
    ContainerSpec,
    ImageSpec,
    Mount,
    RehearsalError,
    containers_of,
    parse_dockerfile,
    secrets,
)
from energy.deploy.rehearse import DEFAULT_STORE, choose_port_offset
from energy.deploy.sandbox import script
from tests.infra.conftest import ROOT, missing_tool

IMAGE = ImageSpec(
    workdir="/srv/app",
    user="10001",
    env={"PATH": "/opt/venv/bin:$PATH", "FROM_IMAGE": "image", "OVERRIDDEN": "image"},
    entrypoint=("tini", "--"),
    cmd=("energy", "--help"),
    dirs=("/srv/app", "/srv/app/models"),
)


def _deployment(container: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "svc"},
        "spec": {"template": {"spec": {"containers": [container], **pod}}},
    }


CONFIG = {"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"OVERRIDDEN": "configmap", "FROM_CM": "cm"}}
EXTERNAL = {
    "kind": "ExternalSecret",
    "metadata": {"name": "ext"},
    "spec": {
        "target": {"name": "sec"},
        "data": [
            {"secretKey": "DB_PASSWORD", "remoteRef": {"key": "prod/db", "property": "password"}},
            {"secretKey": "TOKEN", "remoteRef": {"key": "prod/token"}},
        ],
    },
}
STORE = {"prod/db": {"username": "u", "password": "s3cr3t-db"}, "prod/token": "tok-123"}


# --- the image -------------------------------------------------------------------------------


def test_the_projects_dockerfile_gives_workdir_user_path_and_its_directories() -> None:
    image = parse_dockerfile((ROOT / "Dockerfile").read_text())
    assert image.workdir == "/var/lib/energy"
    assert image.user == "10001"
    assert image.env["PATH"] == "/opt/venv/bin:$PATH"
    assert image.cmd == ("energy", "--help")
    assert {"/var/lib/energy/models", "/var/lib/energy/archive", "/var/lib/energy"} <= set(image.dirs)


def test_only_the_final_stage_of_a_dockerfile_counts() -> None:
    text = (
        "FROM a AS build\nWORKDIR /src\nUSER 1\nENV X=1\nRUN mkdir -p /build/out\n"
        "FROM b\nENV X=2 Y=$X/y\nRUN groupadd g \\\n && mkdir -p /data/a /data/b && chown x /data\n"
        'USER 7:8\nCMD ["run", "it"]\n'
    )
    image = parse_dockerfile(text)
    assert (image.workdir, image.user, image.cmd) == ("/", "7:8", ("run", "it"))
    assert dict(image.env) == {"X": "2", "Y": "2/y"}
    assert image.dirs == ("/data/a", "/data/b")


# --- containers ------------------------------------------------------------------------------


def test_command_args_workdir_env_order_and_security_context_follow_kubernetes() -> None:
    container = {
        "name": "app",
        "args": ["energy", "$(FROM_CM)", "$$(FROM_CM)"],
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "COMBINED", "value": "$(FROM_CM)-$(TOKEN)-$(UNDEFINED)"},
            {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "DB_PASSWORD"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "NOPE", "optional": True}}},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2},
        "securityContext": {"runAsUser": 20, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "securityContext": {"runAsUser": 10, "runAsGroup": 11, "fsGroup": 12},
        "terminationGracePeriodSeconds": 45,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    [spec] = containers_of([CONFIG, EXTERNAL, _deployment(container, **pod)], IMAGE, STORE)
    # args replace CMD only: the image's ENTRYPOINT stays.
    assert spec.argv == ("tini", "--", "energy", "cm", "$(FROM_CM)")
    assert spec.workdir == "/srv/app"
    assert spec.env["FROM_IMAGE"] == "image" and spec.env["OVERRIDDEN"] == "configmap"
    assert spec.env["TOKEN"] == "tok-123" and spec.env["DB_PASSWORD"] == "s3cr3t-db" and spec.env["DB"] == "s3cr3t-db"
    assert spec.env["COMBINED"] == "cm-tok-123-$(UNDEFINED)"
    assert "OPT" not in spec.env
    assert (spec.run_as_user, spec.run_as_group, spec.fs_group) == (20, 11, 12)
    assert spec.read_only_root and spec.drop_capabilities == ("ALL",) and spec.grace_s == 45
    assert spec.readiness is not None and (spec.readiness.port, spec.readiness.path) == (8080, "/ready")
    assert spec.readiness.budget_s == 10
    assert spec.mounts == (Mount("/tmp", "tmp", "emptyDir", False),)


def test_command_replaces_entrypoint_and_drops_the_images_cmd() -> None:
    [spec] = containers_of([_deployment({"name": "a", "command": ["python", "-m", "x"]})], IMAGE, {})
    assert spec.argv == ("python", "-m", "x")
    [spec] = containers_of([_deployment({"name": "a"})], IMAGE, {})
    assert spec.argv == ("tini", "--", "energy", "--help")
    assert spec.run_as_user == 10001  # the image's USER when the pod sets none


@pytest.mark.parametrize(
    ("container", "volumes", "expected"),
    [
        ({"name": "a", "envFrom": [{"secretRef": {"name": "absent"}}]}, [], "envFrom Secret absent does not exist"),
        (
            {"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "MISSING"}}}]},
            [],
            "env X: key MISSING of Secret sec does not exist",
        ),
        (
            {"name": "a", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE"}}}]},
            [],
            "env X: key NOPE of ConfigMap cfg does not exist",
        ),
        (
            {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            [{"name": "data", "hostPath": {"path": "/x"}}],
            "volume data of kind hostPath is not rehearsed yet",
        ),
        (
            {"name": "a", "readinessProbe": {"httpGet": {"path": "/", "port": "metrics"}}},
            [],
            "probe port 'metrics' is not a declared container port",
        ),
    ],
)
def test_what_would_not_start_in_a_cluster_fails_naming_container_and_key(
    container: dict[str, Any], volumes: list[Any], expected: str
) -> None:
    with pytest.raises(RehearsalError) as err:
        containers_of([CONFIG, EXTERNAL, _deployment(container, volumes=volumes)], IMAGE, STORE)
    assert "Deployment/svc container a" in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ({"prod/token": "t"}, "Secret sec key DB_PASSWORD: remote key 'prod/db' property 'password'"),
        ({"prod/db": {"username": "u"}, "prod/token": "t"}, "Secret sec key DB_PASSWORD"),
        ({"prod/db": {"password": "p"}}, "Secret sec key TOKEN: remote key 'prod/token'"),
    ],
)
def test_a_secret_key_missing_from_the_store_fails_with_the_keys_name(store: dict[str, Any], expected: str) -> None:
    with pytest.raises(RehearsalError) as err:
        secrets([EXTERNAL], store)
    assert expected in str(err.value)
    assert "not in the test secret store" in str(err.value)


# --- the repository's overlays with the test secret store -----------------------------------


def _store() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_STORE.read_text())


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_every_container_of_the_overlays_resolves_with_the_test_store(kustomize_render: Any, overlay: str) -> None:
    store = _store()
    image = parse_dockerfile((ROOT / "Dockerfile").read_text())
    specs = containers_of(kustomize_render(overlay), image, store)
    retrain = ["forecast-retrain-15m", "forecast-retrain-30m", "forecast-retrain-60m"]  # CronJobs
    assert sorted(s.name for s in specs) == ["aggregation", "api", "dr-coordinator", "forecast", *retrain, "ingestion"]
    for spec in specs:
        assert spec.read_only_root and spec.run_as_user == 10001 and spec.drop_capabilities == ("ALL",)
        assert spec.workdir == "/var/lib/energy"
        assert spec.argv[0] == "energy"
        # Values straight from the store file, read here independently of the code under test.
        assert spec.env["ENERGY_POSTGRES__PASSWORD"] == store[f"energy-{overlay}/rds-master"]["password"]
        assert spec.env["ENERGY_API__TOKEN_SECRET"] == store[f"energy-{overlay}/api/token-secret"]
        assert spec.env["ENERGY_KAFKA__SASL_PASSWORD"] == store[f"AmazonMSK_energy-{overlay}_services"]["password"]
        assert spec.env["ENERGY_AGGREGATION__FAUST_DATADIR"].startswith("/tmp/")
        assert "/tmp" in {m.path for m in spec.mounts}
    by_name = {s.name: s for s in specs}
    assert by_name["aggregation"].grace_s == 90 and by_name["api"].grace_s == 30


def test_the_faust_datadir_of_the_manifests_is_on_a_writable_volume(kustomize_render: Any) -> None:
    image = parse_dockerfile((ROOT / "Dockerfile").read_text())
    [agg] = [s for s in containers_of(kustomize_render("production"), image, _store()) if s.name == "aggregation"]
    datadir = agg.env["ENERGY_AGGREGATION__FAUST_DATADIR"]
    assert any(datadir == m.path or datadir.startswith(m.path + "/") for m in agg.mounts if not m.read_only)


def test_a_secret_key_the_overlay_adds_but_the_store_lacks_fails_naming_it(kustomize_render: Any) -> None:
    docs = copy.deepcopy(kustomize_render("production"))
    external = next(d for d in docs if d["kind"] == "ExternalSecret")
    external["spec"]["data"].append(
        {"secretKey": "ENERGY_DR__BMS_PASSWORD", "remoteRef": {"key": "energy-production/bms/password"}}
    )
    image = parse_dockerfile((ROOT / "Dockerfile").read_text())
    with pytest.raises(RehearsalError) as err:
        containers_of(docs, image, _store())
    assert "ENERGY_DR__BMS_PASSWORD" in str(err.value) and "energy-production/bms/password" in str(err.value)


def test_the_rehearsal_command_fails_with_the_missing_keys_name_before_starting_anything(
    kustomize_render: Any, tmp_path: Path
) -> None:
    kustomize_render("production")  # kubectl present (or the CI rule of conftest applies)
    store = _store()
    del store["energy-production/redis/auth-token"]
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(store))
    out = subprocess.run(
        [sys.executable, "-m", "energy.cli", "deploy", "rehearse", "--overlay", "production", "--secrets", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ENERGY_REDIS__PASSWORD" in out.stderr and "energy-production/redis/auth-token" in out.stderr
    assert "started container" not in out.stdout


# --- the local stack -------------------------------------------------------------------------

STACK = LocalStack(
    postgres=("127.0.0.1", 5500),
    redis=("127.0.0.1", 6600),
    mqtt=("127.0.0.1", 1900),
    influx_url="http://127.0.0.1:8100",
    kafka_bootstrap="127.0.0.1:9200",
    weather_urls=("http://127.0.0.1:7000/a", "http://127.0.0.1:7000/b"),
    extra={"ENERGY_AGGREGATION__CONSUMER_GROUP": "rehearsal"},
)


def test_local_env_points_the_stores_at_the_local_stack_and_moves_the_ports() -> None:
    env = {
        "ENERGY_POSTGRES__HOST": "db.rds.amazonaws.com",
        "ENERGY_POSTGRES__PORT": "5432",
        "ENERGY_POSTGRES__SSL_MODE": "require",
        "ENERGY_REDIS__PASSWORD": "auth",
        "ENERGY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "ENERGY_ENDPOINTS__API_PORT": "58000",
        "ENERGY_ENDPOINTS__API_HOST": "0.0.0.0",
        "ENERGY_AGGREGATION__ARCHIVE_URI": "s3://bucket/readings",
        "ENERGY_AGGREGATION__CONSUMER_GROUP": "aggregation",
        "ENERGY_API__TOKEN_SECRET": "kept",
    }
    local = local_env({**env, "ENERGY_ENVIRONMENT": "staging"}, STACK, -40000)
    e = local.env
    assert (e["ENERGY_POSTGRES__HOST"], e["ENERGY_POSTGRES__PORT"], e["ENERGY_POSTGRES__SSL_MODE"]) == (
        "127.0.0.1",
        "5500",
        "disable",
    )
    assert "ENERGY_REDIS__PASSWORD" not in e and e["ENERGY_REDIS__PORT"] == "6600"
    assert e["ENERGY_KAFKA__SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert e["ENERGY_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:9200"
    assert e["ENERGY_ENDPOINTS__API_PORT"] == "18000" and e["ENERGY_ENDPOINTS__API_HOST"] == "127.0.0.2"
    assert e["ENERGY_AGGREGATION__ARCHIVE_URI"] == "/tmp/rehearsal-archive/readings"
    assert e["ENERGY_AGGREGATION__CONSUMER_GROUP"] == "rehearsal"
    assert e["ENERGY_API__TOKEN_SECRET"] == "kept" and e["ENERGY_ENVIRONMENT"] == "test"
    assert "ENERGY_API__TOKEN_SECRET" not in local.changed
    assert {"ENERGY_REDIS__PASSWORD", "ENERGY_ENDPOINTS__API_PORT", "ENERGY_POSTGRES__HOST"} <= set(local.changed)


def test_the_port_offset_moves_every_port_below_the_ephemeral_range_onto_free_ports() -> None:
    ports = [58000, 58001, 58004]
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    offset = choose_port_offset(ports)
    assert all(10_000 <= p + offset < low for p in ports)


# --- the sandbox script ------------------------------------------------------------------------


def _spec(**overrides: Any) -> ContainerSpec:
    base: dict[str, Any] = dict(
        workload="Deployment/svc",
        name="svc",
        argv=("energy", "svc", "run"),
        workdir="/srv/app",
        env={},
        ports={},
        readiness=None,
        startup=None,
        read_only_root=True,
        mounts=(Mount("/tmp", "tmp", "emptyDir", False), Mount("/srv/app/spool", "spool", "emptyDir", False)),
        run_as_user=10001,
        run_as_group=10001,
        fs_group=10001,
        run_as_non_root=True,
        no_new_privileges=True,
        drop_capabilities=("ALL",),
        add_capabilities=(),
        grace_s=30.0,
        pre_stop=None,
    )
    base.update(overrides)
    return ContainerSpec(**base)


def test_the_sandbox_binds_volumes_before_the_root_turns_read_only_and_drops_privileges_last() -> None:
    volumes = {"/tmp": "/host/tmp", "/srv/app/spool": "/host/spool"}
    lines = script(_spec(), IMAGE, volumes, ["/", "/proc", "/dev/shm", "/work"]).splitlines()
    assert lines.index("mount -t tmpfs -o mode=0755,size=16m image-layer /srv/app") < lines.index(
        "mkdir -p /srv/app /srv/app/models /srv/app/spool"
    )
    binds = [i for i, ln in enumerate(lines) if ln.startswith("mount --bind")]
    remounts = [i for i, ln in enumerate(lines) if "remount" in ln]
    assert len(binds) == 2 and len(remounts) == 3 and max(binds) < min(remounts)
    assert "mount -o remount,bind,ro /" in lines and "mount -o remount,bind,ro /work" in lines
    assert not any("/proc" in ln or "/dev/shm" in ln for ln in lines)
    assert lines[-2] == "cd /srv/app"
    assert lines[-1] == (
        "exec setpriv --reuid=10001 --regid=10001 --groups=10001 --no-new-privs --inh-caps=-all "
        "--bounding-set=-all -- energy svc run"
    )


def test_a_writable_root_is_left_writable_and_run_as_non_root_needs_a_user() -> None:
    text = script(_spec(read_only_root=False), IMAGE, {"/tmp": "/a", "/srv/app/spool": "/b"}, ["/"])
    assert "remount" not in text
    with pytest.raises(RehearsalError, match="runAsNonRoot"):
        script(_spec(run_as_user=None), IMAGE, {"/tmp": "/a", "/srv/app/spool": "/b"}, ["/"])


# --- docker-compose.yml --------------------------------------------------------------------------


def test_the_compose_files_commands_and_variables_check_out() -> None:
    assert check_compose() == []


def test_compose_problems_name_the_service_and_what_is_wrong(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose["services"]["aggregation"]["command"] = ["energy", "aggregation", "runn"]
    compose["services"]["migrate"]["command"] = ["sh", "-c", "energy db migrate && energy sede"]
    compose["services"]["api"]["environment"] = {"ENERGY_API__NO_SUCH_FIELD": "1"}
    compose["services"]["forecast"]["environment"] = {"ENERGY_POSTGRES__PORT": "not-a-port"}
    compose["services"]["kafka-topics"]["command"] = ["python", "-c", "from schemas.topics import NO_TOPICS"]
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(compose))
    problems = check_compose(path)
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    assert "aggregation: `energy aggregation runn` is not a command of the energy CLI" in text
    assert "migrate: `energy sede` is not a command" in text
    assert "api: ENERGY_API__NO_SUCH_FIELD: Settings has no field api.no_such_field" in text
    assert "forecast: variables do not validate" in text and "postgres.port" in text
    assert "kafka-topics: python -c imports NO_TOPICS from schemas.topics" in text


def test_command_and_environment_checks_accept_what_exists() -> None:
    assert command_problems(["sh", "-c", "energy db migrate && energy seed"]) == []
    assert command_problems(["redis-server"]) == ["`redis-server`: not a command of the project's image"]
    assert environment_problems({"ENERGY_AGGREGATION__FAUST_DATADIR": "/tmp/faust"}) == []


# --- missing tools in CI -----------------------------------------------------------------------------


def test_a_missing_tool_fails_under_ci_and_skips_saying_so_elsewhere() -> None:
    with mock.patch.dict(os.environ, {"CI": "true"}), pytest.raises(pytest.fail.Exception) as failed:
        missing_tool("terraform is not installed")
    assert "terraform is not installed" in str(failed.value) and "CI=true" in str(failed.value)
    with mock.patch.dict(os.environ, {"CI": ""}), pytest.raises(pytest.skip.Exception) as skipped:
        missing_tool("kubectl is not installed")
    assert "NOT run" in str(skipped.value)


def test_a_volume_over_tmp_is_mounted_after_the_volumes_whose_host_folders_it_would_hide() -> None:
    # The run folder under /tmp (pytest's tmp_path): binding /tmp first would hide the spool's source.
    volumes = {"/tmp": "/tmp/run/volumes/tmp", "/srv/app/spool": "/tmp/run/volumes/spool"}
    lines = script(_spec(), IMAGE, volumes, ["/"]).splitlines()
    binds = [ln for ln in lines if ln.startswith("mount --bind")]
    assert binds == [
        "mount --bind /tmp/run/volumes/spool /srv/app/spool",
        "mount --bind /tmp/run/volumes/tmp /tmp",
    ]
    nested = _spec(mounts=(Mount("/data", "a", "emptyDir", False), Mount("/x", "b", "emptyDir", False)))
    with pytest.raises(RehearsalError, match="would hide each other"):
        script(nested, IMAGE, {"/data": "/x/a", "/x": "/data/b"}, ["/"])


def test_a_development_or_short_secret_in_the_store_fails_the_production_checks_before_start(
    kustomize_render: Any,
) -> None:
    from energy.deploy.rehearse import plan

    docs = kustomize_render("production")
    image = parse_dockerfile((ROOT / "Dockerfile").read_text())
    store = _store()
    store["energy-production/rds-master"] = {"username": "energy", "password": "energy"}  # the local default
    with pytest.raises(RehearsalError) as err:
        plan(docs, store, STACK, port_offset=0, only=["api"], image_spec=image)
    assert "container api" in str(err.value)
    assert "ENERGY_POSTGRES__PASSWORD holds a development default" in str(err.value)
    _, planned = plan(docs, _store(), STACK, port_offset=0, only=["api"], image_spec=image)
    [(spec, changed)] = planned
    assert spec.env["ENERGY_ENVIRONMENT"] == "test" and "ENERGY_ENVIRONMENT" in changed
