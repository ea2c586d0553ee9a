"""Fixtures of the infrastructure checks: the repository's infra files parsed, and the
offline tools they need (terraform + its plugin mirror, checkov in its own virtualenv,
promtool, kubectl's built-in kustomize)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from energy.settings_paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
TERRAFORM_DIR = ROOT / "infra" / "terraform"
DEPLOY_DIR = ROOT / "deploy"
TF_PLUGIN_MIRROR = Path(os.environ.get("ENERGY_TF_PLUGIN_DIR", "/opt/tf-plugins"))
CHECKOV_VERSION = "3.2.224"
TOOLS_DIR = ROOT / ".stack" / "tools"


def missing_tool(reason: str) -> NoReturn:
    """A tool the infrastructure checks need is absent: skip on a user's machine, saying what was
    skipped, but fail in CI (``CI=true``), where a silent skip would hide every check behind it."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: install it; scripts/bootstrap.sh does)", pytrace=False)
    pytest.skip(f"{reason}; these checks were NOT run")


def run(argv: list[str], cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None):
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env or os.environ.copy()
    )


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    found = shutil.which("terraform")
    if not found:
        missing_tool("terraform is not installed on this machine (command -v terraform is empty)")
    if not TF_PLUGIN_MIRROR.is_dir():
        missing_tool(f"no Terraform plugin mirror at {TF_PLUGIN_MIRROR}; init would need the internet")
    return found


@pytest.fixture(scope="session")
def terraform_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of infra/terraform, so init never writes into the working tree."""
    dest = tmp_path_factory.mktemp("terraform") / "terraform"
    shutil.copytree(TERRAFORM_DIR, dest, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    return dest


@pytest.fixture(scope="session")
def checkov_bin() -> Path:
    """checkov pins libraries that clash with the main venv: it lives in its own virtualenv,
    created on first use (about 25 s from the local wheel mirror)."""
    venv = TOOLS_DIR / "checkov-venv"
    exe = venv / "bin" / "checkov"
    stamp = venv / f".checkov-{CHECKOV_VERSION}"
    if not stamp.exists():
        TOOLS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.monotonic()
        made = run([sys.executable, "-m", "venv", str(venv)], timeout=120)
        assert made.returncode == 0, made.stderr
        pip = run([str(venv / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"], timeout=900)
        assert pip.returncode == 0, f"installing checkov=={CHECKOV_VERSION} failed:\n{pip.stderr[-2000:]}"
        stamp.write_text(f"installed in {time.monotonic() - t0:.0f}s\n")
    return exe


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    """promtool from PATH, or extracted from the Debian package `prometheus` into .stack/tools
    (a 19 MB download; nothing is installed system-wide and no server is started)."""
    found = shutil.which("promtool")
    if found:
        return found
    local = TOOLS_DIR / "prometheus" / "usr" / "bin" / "promtool"
    if local.exists():
        return str(local)
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        missing_tool("promtool is not installed and apt-get/dpkg are missing to fetch the Debian package prometheus")
    dl = TOOLS_DIR / "prometheus-deb"
    dl.mkdir(parents=True, exist_ok=True)
    got = run(["apt-get", "download", "prometheus"], cwd=dl, timeout=300)
    debs = sorted(dl.glob("prometheus_*.deb"))
    if got.returncode != 0 or not debs:
        missing_tool(f"promtool unavailable: apt-get download prometheus failed: {got.stderr.strip()[-300:]}")
    unpacked = run(["dpkg", "-x", str(debs[-1]), str(TOOLS_DIR / "prometheus")], timeout=120)
    assert unpacked.returncode == 0, unpacked.stderr
    return str(local)


@pytest.fixture(scope="session")
def kustomize_render() -> Any:
    """Render an overlay with kubectl's built-in kustomize; returns the parsed documents."""
    import yaml

    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if not kubectl and not kustomize:
        missing_tool("neither kubectl nor kustomize is installed to render deploy/overlays")
    cache: dict[str, list[dict[str, Any]]] = {}

    def render(overlay: str) -> list[dict[str, Any]]:
        if overlay not in cache:
            path = DEPLOY_DIR / "overlays" / overlay
            argv = [kubectl, "kustomize", str(path)] if kubectl else [str(kustomize), "build", str(path)]
            out = run(argv, timeout=120)
            assert out.returncode == 0, f"kustomize failed for {overlay}:\n{out.stderr}"
            cache[overlay] = [d for d in yaml.safe_load_all(out.stdout) if d]
        return cache[overlay]

    return render


@pytest.fixture(scope="session")
def mount_namespaces() -> None:
    """`energy deploy rehearse` needs root, unshare and setpriv (util-linux) and a kernel that
    grants this process a private mount namespace (a container without CAP_SYS_ADMIN does not)."""
    if os.geteuid() != 0:
        missing_tool("energy deploy rehearse needs root (a private mount namespace, the pods' uids)")
    for tool in ("unshare", "setpriv", "nsenter"):
        if not shutil.which(tool):
            missing_tool(f"{tool} (Debian util-linux) is not installed")
    probe = run(["unshare", "--mount", "--propagation", "private", "--", "mount", "-o", "remount,bind,ro", "/"])
    if probe.returncode != 0:
        missing_tool(f"no private mount namespace here: {probe.stderr.strip()[-300:]}")
