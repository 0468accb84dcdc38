#!/usr/bin/env bash
# Backs up the FacePass database of DATABASE_URL with pg_dump (custom format).
#
#   scripts/backup_database.sh [--dir DIR] [--keep-days N] [--name PREFIX]
#
#   --dir DIR        where dumps go (default: <repo>/backups; created mode 0700)
#   --keep-days N    after a successful backup, delete PREFIX dumps (and their .sha256) whose
#                    file is older than N days (default 14; 0 keeps only the new one)
#   --name PREFIX    file name prefix (default: the database name): PREFIX-YYYYmmddTHHMMSSZ.dump
#
# Writes DIR/PREFIX-<UTC time>.dump and DIR/PREFIX-<UTC time>.dump.sha256 (sha256sum format:
# `cd DIR && sha256sum -c FILE.sha256`), checks the dump reads back (pg_restore --list), then
# prints the file, its size and how long it took. Restore with scripts/restore_database.sh.
#
# pg_dump is $PG_BIN/pg_dump when PG_BIN is set, else pg_dump on PATH; its major version must be
# at least the server's. The password is taken from DATABASE_URL (or PGPASSWORD / ~/.pgpass) and
# handed to pg_dump via PGPASSWORD, never on a command line. Dumps hold biometric data (face
# embeddings): they are created readable by their owner only (umask 077).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)

log() { printf 'backup: %s\n' "$*" >&2; }
die() { printf 'backup: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }
now_ns() { date +%s%N; }

# ---------------------------------------------------------------- DATABASE_URL
# shellcheck source=lib/pg-url.sh
. "$SCRIPT_DIR/lib/pg-url.sh"
# ---------------------------------------------------------------- arguments
DIR=$REPO_ROOT/backups
KEEP_DAYS=14
PREFIX=
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || die "--dir needs a value"; DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --keep-days) [ $# -ge 2 ] || die "--keep-days needs a value"; KEEP_DAYS=$2; shift 2 ;;
    --keep-days=*) KEEP_DAYS=${1#*=}; shift ;;
    --name) [ $# -ge 2 ] || die "--name needs a value"; PREFIX=$2; shift 2 ;;
    --name=*) PREFIX=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
done
[[ $KEEP_DAYS =~ ^[0-9]+$ ]] || die "--keep-days must be a whole number of days (got '$KEEP_DAYS')"
[ -n "$DIR" ] || die "--dir must not be empty"

[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set (e.g. export DATABASE_URL='postgres://facepass:PASSWORD@db-host:5432/facepass')"
parse_url "$DATABASE_URL"
DB_URL=$(url_for_db "$URL_DB")
SHOWN_URL=$(masked_url "$URL_DB")
if [ -n "$URL_PASSWORD" ]; then export PGPASSWORD=$URL_PASSWORD; fi
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}

[ -n "$PREFIX" ] || PREFIX=$URL_DB
[[ $PREFIX =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] \
  || die "--name must be letters, digits, '_', '.', '-' (got '$PREFIX')"

# ---------------------------------------------------------------- tools
if [ -n "${PG_BIN:-}" ]; then
  PG_DUMP=$PG_BIN/pg_dump; PG_RESTORE=$PG_BIN/pg_restore; PSQL=$PG_BIN/psql
  for t in "$PG_DUMP" "$PG_RESTORE" "$PSQL"; do [ -x "$t" ] || die "PG_BIN=$PG_BIN has no executable $(basename "$t")"; done
else
  PG_DUMP=$(command -v pg_dump) || die "pg_dump not found on PATH (install the PostgreSQL client of the server's version, or set PG_BIN)"
  PG_RESTORE=$(command -v pg_restore) || die "pg_restore not found on PATH (or set PG_BIN)"
  PSQL=$(command -v psql) || die "psql not found on PATH (or set PG_BIN)"
fi

server_num=$("$PSQL" -X -A -t -q -v ON_ERROR_STOP=1 -d "$DB_URL" -c 'show server_version_num' 2>&1) \
  || die "cannot connect to $SHOWN_URL: $server_num"
[[ $server_num =~ ^[0-9]+$ ]] || die "unexpected server_version_num from $SHOWN_URL: $server_num"
server_major=$((server_num / 10000))
dump_version=$("$PG_DUMP" --version) || die "$PG_DUMP --version failed"
dump_major=$(printf '%s\n' "$dump_version" | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p' | head -n1)
[ -n "$dump_major" ] || die "cannot read the version of $PG_DUMP ('$dump_version')"
if [ "$server_major" -gt "$dump_major" ]; then
  die "$PG_DUMP is version $dump_major but the server is PostgreSQL $server_major: use a pg_dump of major version >= $server_major (set PG_BIN=/usr/lib/postgresql/$server_major/bin or install postgresql-client-$server_major)"
fi

# ---------------------------------------------------------------- dump
umask 077
mkdir -p -- "$DIR" || die "cannot create $DIR"
DIR=$(cd -- "$DIR" && pwd -P)

stamp=$(date -u +%Y%m%dT%H%M%SZ)
FILE=$DIR/$PREFIX-$stamp.dump
SUM=$FILE.sha256
[ ! -e "$FILE" ] && [ ! -e "$SUM" ] || die "$FILE already exists (another backup in the same second?)"
TMP=$FILE.partial
done_ok=0
cleanup() {
  rm -f -- "$TMP" "$SUM.partial"
  if [ "$done_ok" != 1 ]; then rm -f -- "$FILE" "$SUM"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(now_ns)
if ! "$PG_DUMP" --format=custom --no-password --lock-wait-timeout=60s \
      --file="$TMP" --dbname="$DB_URL" 2>"$TMP.err"; then
  err=$(cat "$TMP.err" 2>/dev/null || true); rm -f -- "$TMP.err"
  die "pg_dump of $SHOWN_URL failed: $err"
fi
rm -f -- "$TMP.err"
[ -s "$TMP" ] || die "pg_dump wrote an empty file"
toc=$("$PG_RESTORE" --list "$TMP" 2>&1) || die "the dump does not read back (pg_restore --list failed): $toc"
entries=$(printf '%s\n' "$toc" | grep -c '^[0-9]' || true)
[ "$entries" -gt 0 ] || die "the dump reads back but lists no entries"

hash=$(sha256sum -- "$TMP" | cut -d' ' -f1)
printf '%s  %s\n' "$hash" "$(basename -- "$FILE")" >"$SUM.partial"
mv -f -- "$TMP" "$FILE"
mv -f -- "$SUM.partial" "$SUM"
done_ok=1
t1=$(now_ns)

size=$(stat -c %s -- "$FILE")
ms=$(( (t1 - t0) / 1000000 ))
printf 'backup: %s (%s, %s bytes, %s entries) in %d.%03ds; checksum %s\n' \
  "$FILE" "$(numfmt --to=iec-i --suffix=B "$size")" "$size" "$entries" $((ms / 1000)) $((ms % 1000)) "$(basename -- "$SUM")"

# ---------------------------------------------------------------- prune
shopt -s nullglob
pruned=0
for f in "$DIR/$PREFIX"-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.dump; do
  [ "$f" = "$FILE" ] && continue
  if [ -n "$(find "$f" -maxdepth 0 -type f -mmin +$((KEEP_DAYS * 1440)) -print)" ]; then
    rm -f -- "$f" "$f.sha256"
    log "pruned $(basename -- "$f") (older than $KEEP_DAYS days)"
    pruned=$((pruned + 1))
  fi
done
[ "$pruned" -eq 0 ] || printf 'backup: pruned %d dump(s) older than %d days\n' "$pruned" "$KEEP_DAYS"
exit 0
