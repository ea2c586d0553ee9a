# Shared helpers of the backup scripts (sourced, not executed).
set -euo pipefail

pg_tool() {
  # The newest PostgreSQL client tool installed (Debian keeps them per major version).
  local tool="$1" found
  found=$(ls -1 /usr/lib/postgresql/*/bin/"$tool" 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$found" ]; then found=$(command -v "$tool" || true); fi
  if [ -z "$found" ]; then
    echo "backup: '$tool' not found; install the Debian package postgresql-client" >&2
    exit 2
  fi
  echo "$found"
}

influxd_bin() {
  command -v influxd || { echo "backup: 'influxd' not found; install the Debian package influxdb" >&2; exit 2; }
}

die_usage() {
  echo "usage: $1" >&2
  exit 64
}
