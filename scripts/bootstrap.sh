#!/usr/bin/env bash
# Installs what `make run` and `make test` need and is missing; fast when nothing is.
set -euo pipefail
cd "$(dirname "$0")/.."

need_debs=()
command -v redis-server >/dev/null || need_debs+=(redis-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_debs+=(mosquitto)
command -v influxd >/dev/null || need_debs+=(influxdb)
command -v prometheus >/dev/null || need_debs+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_debs+=(postgresql)
command -v chromium >/dev/null || need_debs+=(chromium chromium-driver)
# tests/infra render deploy/ with `kubectl kustomize`, and `energy deploy rehearse` starts the
# containers with `unshare` (util-linux). terraform is not packaged: see the check below.
command -v kubectl >/dev/null || need_debs+=(kubectl)
command -v unshare >/dev/null || need_debs+=(util-linux)
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${need_debs[*]}; run as root or: sudo apt-get install -y ${need_debs[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages: ${need_debs[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_debs[@]}" >/dev/null
fi

if ! command -v terraform >/dev/null; then
  # Not in the Debian or PyPI registries; CI images ship it. `make test` fails under CI=true without it.
  echo "bootstrap: terraform is not installed: tests/infra/test_terraform.py will be skipped (and fail when CI=true)" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages (torch takes the local CPU wheel)"
  .venv/bin/pip install -q "torch==2.13.0" numpy
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi
