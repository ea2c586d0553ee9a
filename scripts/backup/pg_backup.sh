#!/usr/bin/env bash
# Dump one PostgreSQL database in pg_dump's custom format (compressed, restorable table by table).
#   scripts/backup/pg_backup.sh DSN OUTPUT_FILE [SNAPSHOT_ID]
# DSN e.g. postgresql://energy:PASSWORD@HOST:5432/energy (or use PGPASSWORD / ~/.pgpass).
# SNAPSHOT_ID (from pg_export_snapshot()) dumps exactly what another open transaction sees;
# the restore drill uses it to count rows in the very snapshot that is dumped.
source "$(dirname "$0")/_common.sh"
[ $# -eq 2 ] || [ $# -eq 3 ] || die_usage "pg_backup.sh DSN OUTPUT_FILE [SNAPSHOT_ID]"
dsn="$1"; out="$2"; snapshot=()
if [ $# -eq 3 ]; then snapshot=(--snapshot="$3"); fi
mkdir -p "$(dirname "$out")"
tmp="$out.partial"
# --no-owner/--no-acl: the dump restores into any instance, whoever owns the objects there.
"$(pg_tool pg_dump)" --dbname="$dsn" --format=custom --compress=6 --no-owner --no-acl "${snapshot[@]}" --file="$tmp"
mv "$tmp" "$out"
"$(pg_tool pg_restore)" --list "$out" >/dev/null  # the archive is readable
echo "pg_backup: wrote $out ($(stat -c %s "$out") bytes)"
