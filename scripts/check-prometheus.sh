#!/usr/bin/env bash
# Validates deploy/prometheus (scrape config and alert rules) with promtool, taken from Debian's
# prometheus package without installing it (the .deb is downloaded once into
# ${FACEPASS_CACHE:-~/.cache/facepass}/promtool and unpacked there). Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${FACEPASS_CACHE:-$HOME/.cache/facepass}/promtool"
promtool="$(find "$dir/root" -name promtool -type f 2>/dev/null | head -1 || true)"
if [ -z "$promtool" ]; then
  mkdir -p "$dir"
  rm -rf "$dir/root" "$dir"/*.deb
  (cd "$dir" && apt-get download prometheus >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null && (cd "$dir" && apt-get download prometheus >/dev/null)
  }
  dpkg -x "$dir"/prometheus_*.deb "$dir/root"
  promtool="$(find "$dir/root" -name promtool -type f | head -1)"
fi
# promtool resolves rule_files relative to the config, as Prometheus does in the compose stack.
"$promtool" check config deploy/prometheus/prometheus.yml
"$promtool" check rules deploy/prometheus/alerts.yml
