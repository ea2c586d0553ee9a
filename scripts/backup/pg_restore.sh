#!/usr/bin/env bash
# Restore a pg_dump custom-format file into a database (created if missing).
#   scripts/backup/pg_restore.sh BACKUP_FILE ADMIN_DSN TARGET_DATABASE
# ADMIN_DSN connects to a maintenance database (e.g. .../postgres) as a user allowed to
# CREATE DATABASE. The target database must be empty or absent: a restore never merges.
source "$(dirname "$0")/_common.sh"
[ $# -eq 3 ] || die_usage "pg_restore.sh BACKUP_FILE ADMIN_DSN TARGET_DATABASE"
file="$1"; admin="$2"; target="$3"
[[ "$target" =~ ^[a-z][a-z0-9_]{0,62}$ ]] || { echo "pg_restore: bad database name '$target'" >&2; exit 64; }
psql=$(pg_tool psql)
exists=$("$psql" "$admin" -v ON_ERROR_STOP=1 -Atc "SELECT 1 FROM pg_database WHERE datname = '$target'")
if [ -z "$exists" ]; then
  "$psql" "$admin" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$target\""
fi
# Replace the database name at the end of the admin DSN with the target.
target_dsn="${admin%/*}/$target"
"$(pg_tool pg_restore)" --dbname="$target_dsn" --no-owner --no-acl --exit-on-error --single-transaction "$file"
echo "pg_restore: restored $file into $target"
