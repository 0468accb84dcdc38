#!/usr/bin/env bash
# Measures the numbers in docs/PERFORMANCE.md: starts the built binary on a throw-away database
# and runs `facepass loadtest` for search and verify at 10 and 50 clients and for indexing, on
# 127.0.0.1 only. Writes bench/performance.json.
#   scripts/loadtest-local.sh [SECONDS]      (default 30 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
. scripts/lib/local-server.sh

# Rate limits are for partners, not for a capacity measurement.
local_server_start RATE_LIMIT_PER_SECOND=100000 RATE_LIMIT_BURST=100000 INFERENCE_QUEUE=64
mkdir -p bench
out=bench/performance.json
echo "[" > "$out"
first=1
for run in "search 10" "search 50" "verify 10" "verify 50" "index 4"; do
  set -- $run
  echo "loadtest: $1 at $2 clients for ${seconds}s" >&2
  [ "$first" = 1 ] || echo "," >> "$out"
  first=0
  "$bin" loadtest --url "$url" --api-key "$key" --endpoint "$1" --concurrency "$2" \
    --duration "$seconds" >> "$out"
done
echo "]" >> "$out"
python3 - "$out" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
print(f"{'endpoint':<8} {'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
for r in runs:
    print(f"{r['endpoint']:<8} {r['concurrency']:>7} {r['throughput_per_s']:>7.1f} {r['p50_ms']:>8.0f} "
          f"{r['p95_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['error_rate']:>7.2%}  {r['errors']}")
PY
