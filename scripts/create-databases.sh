#!/usr/bin/env bash
# Creates the main and analytics databases unless they exist.
set -euo pipefail
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
for db in "${MAIN_DB_NAME:-headhunter}" "${ANALYTICS_DB_NAME:-headhunter_analytics}"; do
  if psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    printf '==> database %s exists\n' "$db"
  else
    printf '==> creating database %s\n' "$db"
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE \"$db\""
  fi
done
