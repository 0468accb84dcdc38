#!/usr/bin/env bash
# Brings up PostgreSQL+pgvector, Redis and S3 (scripts/services.sh), fetches the models and test
# photos, then runs the whole test suite against those real services.
#   scripts/test.sh                # everything
#   scripts/test.sh --no-lint      # skip fmt/clippy
set -euo pipefail
cd "$(dirname "$0")/.."

lint=1
for arg in "$@"; do
  case "$arg" in
    --no-lint) lint=0 ;;
    *) echo "usage: scripts/test.sh [--no-lint]" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
scripts/services.sh up
scripts/fetch-models.sh
scripts/fetch-fixtures.sh
eval "$(scripts/services.sh env)"
export RUST_LOG="${RUST_LOG:-warn}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
echo "set-up took $(( $(date +%s) - start ))s"

if [ "$lint" = 1 ]; then
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
  # The deployment files agree with the code (env vars, metric names, routes).
  python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
  python3 scripts/check-deploy.py
  scripts/check-prometheus.sh
  # Dependency policy: licences, banned crates (a second sqlx), sources (deny.toml).
  scripts/deny.sh
fi

# Unit tests of both crates (the engine's: kernels against their definitions and tract, the
# pipeline against onnxruntime's reference) and the API tests, each API test on its own
# database, bucket and Redis prefix. Always the whole workspace: a build of one package alone
# resolves other features and rebuilds tract.
cargo test --locked --workspace --lib --bins --test api
# Fault tests stop and restart the shared services, so they run alone and one at a time.
cargo test --locked --workspace --test faults -- --test-threads=1

# Operations: the DBA scripts and the deployment checklist, run on the built binary.
export FACEPASS_BIN="${CARGO_TARGET_DIR:-target}/debug/facepass"
scripts/test-backup-restore.sh
scripts/smoke-local.sh
# Hardening: mixed load at 16 clients, no 5xx but `overloaded`, resident memory flat after the
# warm-up: two minutes, memory compared from minute 1 to the end (SOAK_SECONDS=0 skips it).
if [ "${SOAK_SECONDS:-120}" != 0 ]; then
  scripts/soak-local.sh "${SOAK_SECONDS:-120}" "$(( ${SOAK_SECONDS:-120} / 2 ))"
fi
echo "test suite took $(( $(date +%s) - start ))s"
