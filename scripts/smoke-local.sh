#!/usr/bin/env bash
# Starts a FacePass server from the built binary on a throw-away database and runs
# `facepass smoke` against it, as an operator would against a fresh deployment.
# Needs the services up and their env exported (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${FACEPASS_BIN:-${CARGO_TARGET_DIR:-target}/debug/facepass}"
[ -x "$bin" ] || { echo "smoke-local: no binary at $bin (cargo build first)" >&2; exit 1; }
: "${DATABASE_URL:?export the services env first: eval \"\$(scripts/services.sh env)\"}"

db="facepass_smoke_$RANDOM$RANDOM"
base="${DATABASE_URL%/*}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key="smoke-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
log=$(mktemp)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  psql "$base/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT

psql "$base/postgres" -qc "create database $db" >/dev/null
export DATABASE_URL="$base/$db"
"$bin" migrate up >/dev/null
PORT="$port" API_KEYS="smoke:$key" S3_BUCKET=facepass-test S3_KEY_PREFIX="$db/" REDIS_KEY_PREFIX="smoke:$db" \
  LOG_FORMAT=json RUST_LOG=warn "$bin" serve >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$port/api/v2/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "smoke-local: server exited:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.5
done
if ! "$bin" smoke --url "http://127.0.0.1:$port" --api-key "$key"; then
  echo "smoke-local: server log:" >&2; tail -50 "$log" >&2
  exit 1
fi
# The key must never reach the logs.
if grep -q "$key" "$log"; then
  echo "smoke-local: FAIL the API key appears in the server log" >&2
  exit 1
fi
