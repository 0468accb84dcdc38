#!/usr/bin/env bash
# Soak test (issue #7): mixed search/verify/index at 16 clients against the built binary on
# 127.0.0.1, sampling the server's resident memory every second. Fails when any response is a
# 5xx other than 503 `overloaded`, when a request gets no response at all, or when resident
# memory after the warm-up ever goes more than 10% above its high-water mark during the warm-up
# (from 5 s, once the models are loaded). High-water marks, not single samples: the allocator
# returns freed memory to the system, so samples swing by +-15% with the requests in flight,
# while a leak keeps setting new highs.
#   scripts/soak-local.sh [SECONDS] [WARMUP_SECONDS]     (default 120 and 60: minute 1 to 2)
# Writes bench/soak.json (the load report plus the memory samples).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
warmup="${2:-60}"
clients="${SOAK_CLIENTS:-16}"
. scripts/lib/local-server.sh

# Partners' rate limits are not what is tested here. The queue is the production default, so
# `overloaded` answers are possible and allowed.
local_server_start RATE_LIMIT_PER_SECOND=100000 RATE_LIMIT_BURST=100000

mkdir -p bench
samples=bench/soak-rss.txt
report_file=bench/soak-load.json
( while kill -0 "$local_pid" 2>/dev/null; do
    awk -v t="$(date +%s.%N)" '/^VmRSS:/ { print t, $2 }' "/proc/$local_pid/status" 2>/dev/null || true
    sleep 1
  done ) >"$samples" &
sampler=$!

echo "soak: mixed load at $clients clients for ${seconds}s (warm-up ${warmup}s)" >&2
start=$(date +%s.%N)
"$bin" loadtest --url "$url" --api-key "$key" --endpoint mixed \
  --concurrency "$clients" --duration "$seconds" >"$report_file"
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

python3 - "$start" "$warmup" "$samples" "$report_file" <<'PY'
import json, sys
start, warmup = float(sys.argv[1]), float(sys.argv[2])
report = json.load(open(sys.argv[4]))
rss = [(float(t) - start, int(kb)) for t, kb in (l.split() for l in open(sys.argv[3]) if l.strip())]
run = [(t, kb) for t, kb in rss if 0 <= t <= report["seconds"]]
after = [kb for t, kb in run if t >= warmup]
at_warmup = [kb for t, kb in run if 5 <= t < warmup]
failures = []
bad = {k: v for k, v in report["errors"].items()
       if k == "transport" or (k[:1] == "5" and k != "503 overloaded")}
if bad:
    failures.append(f"server errors: {bad}")
if report["requests"] == 0:
    failures.append("no request was answered")
if not after or not at_warmup:
    failures.append("no memory samples around the end of the warm-up")
else:
    level, peak, last = max(at_warmup), max(after), max(after[-10:])
    growth = (peak - level) / level
    print(f"soak: rss high-water during the warm-up {level/1024:.0f} MiB; after it: "
          f"peak {peak/1024:.0f} MiB ({growth:+.1%}), last 10 s {last/1024:.0f} MiB, "
          f"lowest {min(after)/1024:.0f} MiB")
    if growth > 0.10:
        failures.append(f"resident memory rose {growth:.1%} above its high-water mark during "
                        "the warm-up (limit 10%)")
print(f"soak: {report['requests']} requests in {report['seconds']:.0f}s "
      f"({report['throughput_per_s']:.1f}/s), errors {report['errors']}")
for name, e in report["per_endpoint"].items():
    print(f"soak:   {name:<6} {e['requests']:>5} requests  p50 {e['p50_ms']:.0f} ms  "
          f"p95 {e['p95_ms']:.0f} ms  p99 {e['p99_ms']:.0f} ms  failed {e['failed']}")
json.dump({"report": report, "warmup_s": warmup, "rss_kib": run},
          open("bench/soak.json", "w"), indent=1)
for f in failures:
    print(f"soak: FAIL {f}")
sys.exit(1 if failures else 0)
PY
