#!/usr/bin/env bash
# Create (idempotently) the Python venv used by the reference scripts and print its python path.
#
#   PY=$(scripts/pyenv.sh) && "$PY" scripts/reference.py
#
# Location: ${FACEPASS_CACHE:-$HOME/.cache/facepass}/venv (override the whole path with
# FACEPASS_VENV). Needs python3 >= 3.9 with venv; pinned for CPython 3.11 on x86_64 Linux.
# All progress goes to stderr; stdout carries only the interpreter path.
set -euo pipefail

CACHE="${FACEPASS_CACHE:-$HOME/.cache/facepass}"
VENV="${FACEPASS_VENV:-$CACHE/venv}"
PYTHON="${PYTHON:-python3}"

# Top-level pins first; the rest are their dependencies, pinned so every machine gets the same set.
REQUIREMENTS="
onnxruntime==1.22.1
numpy==2.2.6
opencv-python-headless==4.12.0.88
coloredlogs==15.0.1
flatbuffers==25.2.10
humanfriendly==10.0
mpmath==1.3.0
packaging==25.0
protobuf==6.31.1
sympy==1.14.0
"

stamp="$VENV/.facepass-requirements"
want="$(printf '%s' "$REQUIREMENTS" | sha256sum | cut -c1-64)"

if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

{
  echo "pyenv.sh: creating venv at $VENV"
  mkdir -p "$(dirname "$VENV")"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  req="$(mktemp)"
  trap 'rm -f "$req"' EXIT
  printf '%s\n' "$REQUIREMENTS" | sed '/^$/d' > "$req"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --only-binary :all: -r "$req"
  "$VENV/bin/python" -c 'import cv2, numpy, onnxruntime; print("pyenv.sh: numpy", numpy.__version__, "cv2", cv2.__version__, "onnxruntime", onnxruntime.__version__)'
} >&2

printf '%s' "$want" > "$stamp"
echo "$VENV/bin/python"
