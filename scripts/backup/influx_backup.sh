#!/usr/bin/env bash
# Portable backup of one InfluxDB 1.x database over its backup RPC service.
#   scripts/backup/influx_backup.sh RPC_HOST:PORT DATABASE OUTPUT_DIR
# The local stack's InfluxDB serves RPC on its HTTP port + 2 (127.0.0.1:58088).
source "$(dirname "$0")/_common.sh"
[ $# -eq 3 ] || die_usage "influx_backup.sh RPC_HOST:PORT DATABASE OUTPUT_DIR"
rpc="$1"; db="$2"; out="$3"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "influx_backup: $out is not empty; choose a new folder per backup" >&2
  exit 64
fi
mkdir -p "$out"
"$(influxd_bin)" backup -portable -host "$rpc" -db "$db" "$out"
ls "$out"/*.manifest >/dev/null  # a portable backup always has a manifest
echo "influx_backup: wrote $out"
