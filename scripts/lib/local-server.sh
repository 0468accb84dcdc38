# Sourced by smoke-local.sh and loadtest-local.sh: starts the built facepass binary on a
# throw-away database and key prefix, sets $url, $key and $server_log, and stops and removes
# everything on exit. Needs the services up and their env exported.

bin="${FACEPASS_BIN:-${CARGO_TARGET_DIR:-target}/debug/facepass}"
[ -x "$bin" ] || { echo "local-server: no binary at $bin (cargo build first)" >&2; exit 1; }
: "${DATABASE_URL:?export the services env first: eval \"\$(scripts/services.sh env)\"}"

local_db="facepass_local_$RANDOM$RANDOM"
local_base="${DATABASE_URL%/*}"
local_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key="local-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
url="http://127.0.0.1:$local_port"
server_log=$(mktemp)
local_pid=""

local_server_stop() {
  if [ -n "$local_pid" ]; then
    kill "$local_pid" 2>/dev/null && wait "$local_pid" 2>/dev/null
  fi
  psql "$local_base/postgres" -qc "drop database if exists $local_db with (force)" >/dev/null 2>&1
  rm -f "$server_log"
  return 0
}
trap local_server_stop EXIT

# Extra settings for the server can be passed as NAME=value arguments.
local_server_start() {
  psql "$local_base/postgres" -qc "create database $local_db" >/dev/null
  DATABASE_URL="$local_base/$local_db" "$bin" migrate up >/dev/null
  env DATABASE_URL="$local_base/$local_db" PORT="$local_port" API_KEYS="local:$key" \
    S3_BUCKET=facepass-test S3_KEY_PREFIX="$local_db/" REDIS_KEY_PREFIX="local:$local_db" \
    LOG_FORMAT=json RUST_LOG=warn "$@" "$bin" serve >"$server_log" 2>&1 &
  local_pid=$!
  for _ in $(seq 1 60); do
    curl -fs "$url/api/v2/health" >/dev/null 2>&1 && return 0
    kill -0 "$local_pid" 2>/dev/null || { echo "local-server: server exited:" >&2; cat "$server_log" >&2; return 1; }
    sleep 0.5
  done
  echo "local-server: no answer on $url" >&2
  return 1
}
