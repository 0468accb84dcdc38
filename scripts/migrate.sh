#!/usr/bin/env bash
# Schema migrations for DBAs: runs `facepass migrate ...` against DATABASE_URL.
#
#   DATABASE_URL=postgres://user:pass@host:5432/facepass scripts/migrate.sh status
#   scripts/migrate.sh up [--to V] [--dry-run]       apply pending migrations
#   scripts/migrate.sh down [--to V] [--dry-run]     revert the newest one, or down to V
#   scripts/migrate.sh status                        list migrations, applied or pending
#
# All arguments go to `facepass migrate` unchanged. The migrations are compiled into the binary,
# so use the binary of the release you are deploying. It is found as:
#   $FACEPASS_BIN, else `facepass` on PATH, else ${CARGO_TARGET_DIR:-target}/{release,debug}/facepass
#   (a relative CARGO_TARGET_DIR is taken relative to the repository); a candidate whose
#   `migrate --help` does not list up/down/status is skipped.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)

die() { printf 'migrate: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

# postgres://user:secret@host/db -> postgres://user:****@host/db (for display only)
mask_url() { mask_userinfo "$1" | sed 's/\([?&]password=\)[^&]*/\1****/g'; }
mask_userinfo() {
  local url=$1 scheme rest userinfo
  case "$url" in *://*) ;; *) printf '%s' "$url"; return ;; esac
  scheme=${url%%://*}; rest=${url#*://}
  case "$rest" in *@*) ;; *) printf '%s' "$url"; return ;; esac
  userinfo=${rest%@*}
  case "$userinfo" in
    *:*) printf '%s://%s:****@%s' "$scheme" "${userinfo%%:*}" "${rest##*@}" ;;
    *) printf '%s' "$url" ;;
  esac
}

# A facepass binary whose `migrate --help` lists up, down and status (guards against a stale or
# unrelated binary of that name that would accept anything and do nothing).
is_facepass() {
  local help
  [ -f "$1" ] && [ -x "$1" ] || return 1
  help=$("$1" migrate --help 2>/dev/null) || return 1
  grep -qE '^ +up ' <<<"$help" && grep -qE '^ +down ' <<<"$help" && grep -qE '^ +status ' <<<"$help"
}

find_binary() {
  local target c rejected=()
  if [ -n "${FACEPASS_BIN:-}" ]; then
    is_facepass "$FACEPASS_BIN" \
      || die "FACEPASS_BIN=$FACEPASS_BIN is not a facepass binary with a migrate command (\`$FACEPASS_BIN migrate --help\` must list up/down/status)"
    printf '%s' "$FACEPASS_BIN"; return 0
  fi
  target=${CARGO_TARGET_DIR:-target}
  case "$target" in /*) ;; *) target=$REPO_ROOT/$target ;; esac
  for c in "$(command -v facepass 2>/dev/null || true)" "$target/release/facepass" "$target/debug/facepass"; do
    [ -n "$c" ] && [ -e "$c" ] || continue
    if is_facepass "$c"; then printf '%s' "$c"; return 0; fi
    rejected+=("$c")
  done
  die "no facepass binary found (looked at \$FACEPASS_BIN, \`facepass\` on PATH, $target/release/facepass, $target/debug/facepass)${rejected[*]:+; not a facepass with a migrate command: ${rejected[*]}}.
Build it with:  cd $REPO_ROOT && cargo build --release --locked
or point FACEPASS_BIN at a facepass binary."
}

case "${1:-}" in
  "") usage; exit 2 ;;
  -h|--help|help) usage; exit 0 ;;
esac

if [ -z "${DATABASE_URL:-}" ]; then
  die "DATABASE_URL is not set. Export the URL of the database to migrate, e.g.
  export DATABASE_URL='postgres://facepass:PASSWORD@db-host:5432/facepass'
then run: $0 $*"
fi
case "$DATABASE_URL" in
  postgres://*|postgresql://*) ;;
  *) die "DATABASE_URL must be a postgres:// or postgresql:// URL (got $(mask_url "$DATABASE_URL"))" ;;
esac

bin=$(find_binary)
printf 'migrate: %s migrate %s on %s\n' "$bin" "$*" "$(mask_url "$DATABASE_URL")" >&2
export DATABASE_URL
exec "$bin" migrate "$@"
