#!/usr/bin/env bash
# Makes sure a PostgreSQL and a Redis answer on the addresses the project uses
# (PG_HOST:PG_PORT, REDIS_HOST:REDIS_PORT; defaults 127.0.0.1:5432 and :6379).
# Reuses running servers; otherwise installs (Debian packages) and starts local ones.
# Local development and CI only: a PostgreSQL it starts trusts loopback connections.
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}

say() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  say "installing $*"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
  else
    (exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}

postgres_up() {
  command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

# Tests also start Redis servers of their own (to stop them mid-test), so the
# binary must be here even when a Redis already answers; the migration test compares
# schemas with pg_dump.
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
command -v pg_dump >/dev/null 2>&1 || apt_install postgresql-client

if redis_up; then
  say "Redis answers on $REDIS_HOST:$REDIS_PORT"
else
  say "starting Redis on $REDIS_HOST:$REDIS_PORT"
  mkdir -p /tmp/headhunter-redis
  redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp/headhunter-redis --logfile /tmp/headhunter-redis/redis.log
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "Redis did not start; see /tmp/headhunter-redis/redis.log" >&2; exit 1; }
fi

if postgres_up; then
  say "PostgreSQL answers on $PG_HOST:$PG_PORT"
else
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql postgresql-client
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || { echo "no PostgreSQL cluster found under /etc/postgresql" >&2; exit 1; }
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q '^# headhunter: trust loopback' "$hba"; then
    say "letting loopback connections in without a password (development cluster)"
    as_root sed -i '1i # headhunter: trust loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 100); do postgres_up && break; sleep 0.2; done
  postgres_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
