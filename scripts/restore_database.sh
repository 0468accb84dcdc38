#!/usr/bin/env bash
# Restores a dump made by scripts/backup_database.sh.
#
#   scripts/restore_database.sh FILE [--target-db NAME] [--force]
#
#   FILE             a PREFIX-<time>.dump; FILE.sha256 must exist and match (checked first)
#   --target-db NAME database to restore into (default: the database of DATABASE_URL), on the
#                    server of DATABASE_URL with its credentials; created if it does not exist
#   --force          restore into a database that already has tables: objects of the dump are
#                    dropped first (pg_restore --clean --if-exists); other objects are left alone
#
# The restore runs in one transaction (--single-transaction --exit-on-error): it applies fully
# or not at all; a database this script created is dropped again if the restore fails. Owners and
# grants of the dump are not restored (--no-owner --no-privileges): the objects belong to the
# role of DATABASE_URL. Extensions the target database already has (vector, provisioned by a
# superuser) are left as they are: their CREATE/COMMENT entries are skipped, since only their
# owner may comment on or drop them. Afterwards prints row counts per table and the applied
# migration versions.
#
# pg_restore/psql are $PG_BIN/... when PG_BIN is set, else those on PATH.
set -euo pipefail

log() { printf 'restore: %s\n' "$*" >&2; }
die() { printf 'restore: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }
now_ns() { date +%s%N; }

TABLES=(tenant api_key session photo face identity identity_embedding _sqlx_migrations)

# ---------------------------------------------------------------- DATABASE_URL
# shellcheck source=lib/pg-url.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/pg-url.sh"
# ---------------------------------------------------------------- arguments
FILE=
TARGET=
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --target-db) [ $# -ge 2 ] || die "--target-db needs a value"; TARGET=$2; shift 2 ;;
    --target-db=*) TARGET=${1#*=}; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; [ $# -eq 1 ] && [ -z "$FILE" ] || { usage; die "expected one FILE"; }; FILE=$1; shift ;;
    -*) usage; die "unknown option: $1" ;;
    *) [ -z "$FILE" ] || { usage; die "more than one FILE given ($FILE, $1)"; }; FILE=$1; shift ;;
  esac
done
[ -n "$FILE" ] || { usage; die "no FILE given"; }
[ -f "$FILE" ] || die "$FILE: no such file"
[ -r "$FILE" ] || die "$FILE: not readable"

# ---------------------------------------------------------------- checksum (before anything else)
SUM=$FILE.sha256
[ -f "$SUM" ] || die "refusing to restore $FILE: its checksum file $SUM is missing"
expected=$(awk 'NR == 1 { print tolower($1) }' "$SUM")
[[ $expected =~ ^[0-9a-f]{64}$ ]] || die "refusing to restore $FILE: $SUM does not start with a sha256 (sha256sum format expected)"
actual=$(sha256sum -- "$FILE" | cut -d' ' -f1)
[ "$actual" = "$expected" ] \
  || die "refusing to restore $FILE: checksum mismatch (file has sha256 $actual, $SUM says $expected): the dump is corrupt or was changed"
log "checksum OK ($actual)"

# ---------------------------------------------------------------- connection, tools
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set (e.g. export DATABASE_URL='postgres://facepass:PASSWORD@db-host:5432/facepass')"
parse_url "$DATABASE_URL"
[ -n "$TARGET" ] || TARGET=$URL_DB
[ ${#TARGET} -le 63 ] || die "--target-db: a database name has at most 63 bytes"
case "$TARGET" in postgres|template0|template1) die "refusing to restore into the system database $TARGET" ;; esac
TARGET_URL=$(url_for_db "$TARGET")
SHOWN_URL=$(masked_url "$TARGET")
if [ -n "$URL_PASSWORD" ]; then export PGPASSWORD=$URL_PASSWORD; fi
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}

if [ -n "${PG_BIN:-}" ]; then
  PG_RESTORE=$PG_BIN/pg_restore; PSQL=$PG_BIN/psql
  for t in "$PG_RESTORE" "$PSQL"; do [ -x "$t" ] || die "PG_BIN=$PG_BIN has no executable $(basename "$t")"; done
else
  PG_RESTORE=$(command -v pg_restore) || die "pg_restore not found on PATH (or set PG_BIN)"
  PSQL=$(command -v psql) || die "psql not found on PATH (or set PG_BIN)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/facepass-restore.XXXXXX")
CREATED=0
RESTORED=0
cleanup() {
  local rc=$?
  if [ "$CREATED" = 1 ] && [ "$RESTORED" != 1 ]; then
    log "dropping database $TARGET, created for this failed restore"
    q_admin -v db="$TARGET" <<<'drop database if exists :"db" with (force);' >/dev/null 2>&1 \
      || log "could not drop $TARGET; drop it by hand"
  fi
  rm -rf -- "$WORK"
  return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# psql on the target database / on a maintenance database; SQL on stdin (psql variables work there)
q() { "$PSQL" -X -A -t -q -v ON_ERROR_STOP=1 --no-password -d "$TARGET_URL" "$@"; }
ADMIN_URL=
q_admin() { "$PSQL" -X -A -t -q -v ON_ERROR_STOP=1 --no-password -d "$ADMIN_URL" "$@"; }

# the dump must read back before we touch any database
"$PG_RESTORE" --list "$FILE" >"$WORK/toc" 2>"$WORK/err" \
  || die "$FILE is not a readable pg_dump archive: $(cat "$WORK/err")"

# ---------------------------------------------------------------- target database
for m in postgres template1 "$URL_DB"; do
  ADMIN_URL=$(url_for_db "$m")
  if q_admin -c 'select 1' >/dev/null 2>"$WORK/err"; then break; fi
  ADMIN_URL=
done
[ -n "$ADMIN_URL" ] || die "cannot connect to $(masked_url postgres) (nor template1, $URL_DB): $(cat "$WORK/err")"

exists=$(q_admin -v db="$TARGET" <<<"select count(*) from pg_database where datname = :'db';")
if [ "$exists" = 0 ]; then
  q_admin -v db="$TARGET" <<<'create database :"db";' >/dev/null 2>"$WORK/err" \
    || die "database $TARGET does not exist and cannot be created: $(cat "$WORK/err")"
  CREATED=1
  log "created database $TARGET"
fi

# Tables, views, sequences... in the target that do not belong to an extension.
existing=$(q <<'SQL'
select coalesce(string_agg(format('%I.%I', n.nspname, c.relname), ' ' order by n.nspname, c.relname), '')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
  and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  and not exists (select 1 from pg_depend d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e');
SQL
) || die "cannot inspect database $TARGET"
clean=()
if [ -n "$existing" ]; then
  if [ "$FORCE" != 1 ]; then
    n=$(wc -w <<<"$existing")
    die "database $TARGET is not empty ($n relations: $(cut -d' ' -f1-8 <<<"$existing")$([ "$n" -gt 8 ] && echo ' ...')).
Restore into another database (--target-db NAME), or add --force to drop the dump's objects in $TARGET and restore them"
  fi
  log "--force: $TARGET is not empty; objects of the dump are dropped first (--clean --if-exists)"
  clean=(--clean --if-exists)
fi

# ---------------------------------------------------------------- extensions
# Extensions the target already has: skip their CREATE EXTENSION / COMMENT ON EXTENSION entries
# (and, with --clean, DROP EXTENSION): an extension belongs to the superuser who created it.
have_ext=" $(q <<<"select string_agg(extname, ' ') from pg_extension;") "
need_ext=$(awk '/^[0-9]+; [0-9]+ [0-9]+ EXTENSION - / { print $6 }' "$WORK/toc")
for e in $need_ext; do
  [[ $have_ext == *" $e "* ]] && continue
  can=$(q -v e="$e" <<'SQL'
select case when r.rolsuper then 'yes'
            when coalesce((select bool_or(trusted) from pg_available_extension_versions where name = :'e'), false) then 'yes'
            when not exists (select 1 from pg_available_extensions where name = :'e') then 'unavailable'
            else 'no' end
from pg_roles r where r.rolname = current_user;
SQL
  )
  case "$can" in
    yes) log "extension $e is not installed in $TARGET: the restore creates it" ;;
    unavailable) die "the dump needs extension $e, which is not installed on this server" ;;
    *) die "the dump needs extension $e, missing in database $TARGET, and role ${URL_USER:-(current)} may not create it.
Ask a superuser to run:  CREATE EXTENSION $e;  in database $TARGET (or in template1, before the database is created), then rerun" ;;
  esac
done
awk -v have="$have_ext" '
  /^[0-9]+; [0-9]+ [0-9]+ EXTENSION - / && index(have, " " $6 " ") { print ";" $0; next }
  /^[0-9]+; [0-9]+ [0-9]+ COMMENT - EXTENSION / && index(have, " " $7 " ") { print ";" $0; next }
  { print }
' "$WORK/toc" >"$WORK/toc.use"
skipped=$(grep -c '^;[0-9]' "$WORK/toc.use" || true)
[ "$skipped" -eq 0 ] || log "skipping $skipped entr$([ "$skipped" = 1 ] && echo y || echo ies) for extensions $TARGET already has:$(grep '^;[0-9]' "$WORK/toc.use" | awk '/ EXTENSION - / { printf " %s", $6 }')"

# ---------------------------------------------------------------- restore
t0=$(now_ns)
if ! "$PG_RESTORE" --dbname="$TARGET_URL" --no-password --no-owner --no-privileges \
      --single-transaction --exit-on-error "${clean[@]+"${clean[@]}"}" \
      --use-list="$WORK/toc.use" "$FILE" 2>"$WORK/err"; then
  cat "$WORK/err" >&2
  die "pg_restore into $SHOWN_URL failed; nothing was changed (single transaction)"
fi
# Notices (e.g. pgvector's "ivfflat index created with little data") are not failures.
grep -v -e '^$' "$WORK/err" >&2 || true
q <<<'analyze;' >/dev/null 2>&1 || log "warning: ANALYZE failed; run it before serving traffic"
RESTORED=1
t1=$(now_ns)
ms=$(( (t1 - t0) / 1000000 ))
printf 'restore: %s -> %s in %d.%03ds\n' "$FILE" "$SHOWN_URL" $((ms / 1000)) $((ms % 1000))

# ---------------------------------------------------------------- report
q -F $'\t' -v tables="${TABLES[*]}" <<'SQL' | awk -F'\t' '{ printf "  %-20s %12s\n", $1, $2 }'
select t, case when to_regclass(format('public.%I', t)) is null then 'missing'
               else (xpath('/row/n/text()', query_to_xml(format('select count(*) as n from public.%I', t),
                                                         false, true, '')))[1]::text end
from unnest(string_to_array(:'tables', ' ')) with ordinality as u(t, i)
order by i;
SQL
if [ "$(q <<<"select to_regclass('public._sqlx_migrations') is not null;")" = t ]; then
  versions=$(q <<'SQL'
select coalesce(string_agg(version::text || case when success then '' else '(failed)' end, ' ' order by version), '(none)')
from public._sqlx_migrations;
SQL
  )
else
  versions='(no _sqlx_migrations table)'
fi
printf '  migrations applied: %s\n' "$versions"
