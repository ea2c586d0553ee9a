#!/usr/bin/env bash
# Restore a portable InfluxDB backup into an instance where DATABASE does not exist yet.
#   scripts/backup/influx_restore.sh RPC_HOST:PORT BACKUP_DIR DATABASE [NEW_DATABASE]
source "$(dirname "$0")/_common.sh"
[ $# -ge 3 ] && [ $# -le 4 ] || die_usage "influx_restore.sh RPC_HOST:PORT BACKUP_DIR DATABASE [NEW_DATABASE]"
rpc="$1"; dir="$2"; db="$3"; newdb="${4:-$3}"
"$(influxd_bin)" restore -portable -host "$rpc" -db "$db" -newdb "$newdb" "$dir"
echo "influx_restore: restored $db from $dir as $newdb"
