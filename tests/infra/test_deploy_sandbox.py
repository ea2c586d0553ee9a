"""The rehearsal's runner on small hand-written workloads: a shell container reports from the
inside what its pod spec promises (uid/gid/fsGroup, no capabilities, no_new_privs, read-only
root, writable volumes, working directory), serves its readiness path, runs its preStop hook
in the container and exits 0 on SIGTERM; Jobs run to completion and a failing one is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from energy.deploy.manifest import ImageSpec
from energy.deploy.rehearse import rehearse
from energy.settings import Settings
from tests.infra.conftest import ROOT

IMAGE = ImageSpec(
    workdir="/var/lib/energy",
    user="10001",
    env={"PATH": "/opt/venv/bin:$PATH"},
    cmd=("energy", "--help"),
    dirs=("/var/lib/energy", "/var/lib/energy/models"),
)

# No "$(" anywhere: Kubernetes would expand $(NAME) in a command.
SERVER = f"""
set -u
{{ id -u; id -g; id -G; pwd; grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status
  touch /var/lib/energy/probe || true
  touch {ROOT}/rehearsal-probe || true
  touch /tmp/written && echo tmp-writable
  touch /var/lib/energy/spool/x && echo spool-writable; }} > /tmp/evidence 2>&1
mkdir -p /tmp/www && echo ok > /tmp/www/ready
python3 -m http.server "$ENERGY_ENDPOINTS__API_PORT" --bind 127.0.0.2 --directory /tmp/www >/dev/null 2>&1 &
child=$!
trap 'kill $child; wait $child; echo stopped-cleanly > /tmp/stopped; exit 0' TERM
wait $child
"""


def _pod(containers: list[dict[str, Any]], **pod: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": containers, **pod}}}}


def _deployment() -> dict[str, Any]:
    container = {
        "name": "probe-app",
        "command": ["/bin/sh", "-c", SERVER],
        "env": [{"name": "ENERGY_ENDPOINTS__API_PORT", "value": "58000"}],
        "ports": [{"name": "http", "containerPort": 58000}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 60},
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "id -u > /tmp/prestop"]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "spool", "mountPath": "/var/lib/energy/spool"}],
    }
    pod = _pod(
        [container],
        securityContext={"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10002},
        terminationGracePeriodSeconds=20,
        volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "spool", "emptyDir": {}}],
    )
    return {"kind": "Deployment", "metadata": {"name": "probe-app"}, **pod}


def _job(name: str, shell: str) -> dict[str, Any]:
    container = {"name": name, "command": ["/bin/sh", "-c", shell]}
    return {"kind": "Job", "metadata": {"name": name}, **_pod([container], securityContext={"runAsUser": 10001})}


def test_a_container_sees_exactly_the_constraints_of_its_pod_spec(
    mount_namespaces: None, settings: Settings, tmp_path: Path
) -> None:
    docs = [_deployment(), _job("one-shot", 'test "`id -u`" = 10001')]
    report = rehearse("synthetic", settings, docs=docs, image_spec=IMAGE, run_root=tmp_path)
    assert report.ok, "\n".join(report.failures())
    volumes = tmp_path / "probe-app" / "volumes"
    evidence = (volumes / "tmp" / "evidence").read_text().splitlines()
    assert evidence[:4] == ["10001", "10001", "10001 10002", "/var/lib/energy"]
    status = dict(line.split(":\t") for line in evidence[4:7])
    assert status == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1"}
    assert "touch: cannot touch '/var/lib/energy/probe': Read-only file system" in evidence
    assert f"touch: cannot touch '{ROOT}/rehearsal-probe': Read-only file system" in evidence
    assert evidence[-2:] == ["tmp-writable", "spool-writable"]
    assert (volumes / "spool" / "x").stat().st_gid == 10002  # fsGroup owns the volume
    assert not (ROOT / "rehearsal-probe").exists()
    # preStop ran inside the container as its user, then SIGTERM was handled to the end.
    assert (volumes / "tmp" / "prestop").read_text().strip() == "10001"
    assert (volumes / "tmp" / "stopped").read_text().strip() == "stopped-cleanly"
    [app, job] = report.outcomes
    assert (app.exit_code, job.exit_code) == (0, 0)
    assert app.stopped_after_s is not None and app.stopped_after_s < 20


def test_a_failing_job_and_a_process_that_ignores_sigterm_are_named(
    mount_namespaces: None, settings: Settings, tmp_path: Path
) -> None:
    stubborn = _deployment()
    container = stubborn["spec"]["template"]["spec"]
    container["terminationGracePeriodSeconds"] = 2
    container["containers"][0]["lifecycle"] = {}
    # Ready, but SIGTERM is ignored: the grace period runs out and the kill is reported.
    trap = "trap 'kill $child; wait $child; echo stopped-cleanly > /tmp/stopped; exit 0' TERM"
    assert trap in SERVER
    container["containers"][0]["command"][2] = SERVER.replace(trap, "trap '' TERM")
    docs = [stubborn, _job("migrate", "echo half done; exit 3")]
    report = rehearse("synthetic", settings, docs=docs, image_spec=IMAGE, run_root=tmp_path)
    failures = report.failures()
    assert len(failures) == 2, failures
    assert failures[0].startswith(
        "probe-app (Deployment/probe-app): did not exit within terminationGracePeriodSeconds=2"
    )
    assert failures[1].startswith("migrate (Job/migrate): job exited with status 3")
    assert "half done" in failures[1]
