#!/usr/bin/env bash
# Brings up PostgreSQL+pgvector, Redis and S3 (scripts/services.sh), fetches the models, applies
# migrations and runs the FacePass server on http://127.0.0.1:${PORT:-58080}.
# A development API key is created once in .data/dev-api-key and printed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh up
scripts/fetch-models.sh
eval "$(scripts/services.sh env)"

if [ -z "${API_KEYS:-}" ]; then
  if [ ! -s .data/dev-api-key ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > .data/dev-api-key)
  fi
  API_KEYS="dev:$(cat .data/dev-api-key)"
  export API_KEYS
  echo "development API key (tenant 'dev'): X-API-Key: $(cat .data/dev-api-key)"
fi

cargo build --locked --bin facepass
bin="${CARGO_TARGET_DIR:-target}/debug/facepass"
"$bin" migrate up
echo "Swagger UI: http://127.0.0.1:${PORT:-58080}/docs/"
exec "$bin" serve
