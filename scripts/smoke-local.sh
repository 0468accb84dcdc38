#!/usr/bin/env bash
# Starts a FacePass server from the built binary on a throw-away database and runs
# `facepass smoke` against it, as an operator would against a fresh deployment.
# Needs the services up and their env exported (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/local-server.sh

local_server_start
if ! "$bin" smoke --url "$url" --api-key "$key"; then
  echo "smoke-local: server log:" >&2; tail -50 "$server_log" >&2
  exit 1
fi
# The key must never reach the logs.
if grep -q "$key" "$server_log"; then
  echo "smoke-local: FAIL the API key appears in the server log" >&2
  exit 1
fi
