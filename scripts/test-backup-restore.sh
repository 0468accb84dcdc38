#!/usr/bin/env bash
# End-to-end test of scripts/migrate.sh, scripts/backup_database.sh and scripts/restore_database.sh
# against the running local services (scripts/services.sh up). Non-destructive: it works only on
# throwaway databases facepass_bk_<random>* and a temp dir, all removed on exit, even on failure.
#
#   scripts/test-backup-restore.sh        prints one summary line; details only for failures
#
# Needs DATABASE_URL (else it takes `scripts/services.sh env`) of a role with CREATEDB, the vector
# extension in template1, and a facepass binary (found as scripts/migrate.sh finds it).
# Exit 0 only if every check held.
set -uo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
cd "$REPO_ROOT" || exit 1

T0=$(date +%s%N)
if [ -z "${DATABASE_URL:-}" ]; then eval "$(scripts/services.sh env)"; fi
PSQL=psql; [ -n "${PG_BIN:-}" ] && PSQL=$PG_BIN/psql

PASSED=0
FAILED=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/facepass-bk-test.XXXXXX")
SUFFIX=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
SRC=facepass_bk_$SUFFIX        # migrated, filled, backed up, then dropped
DST=facepass_bk_${SUFFIX}_r    # restored into (created by restore_database.sh)
BAD=facepass_bk_${SUFFIX}_bad  # must never come to exist
BASE_URL=${DATABASE_URL%%\?*}; BASE_URL=${BASE_URL%/*}
QUERY=; [[ $DATABASE_URL == *\?* ]] && QUERY="?${DATABASE_URL#*\?}"
db_url() { printf '%s/%s%s' "$BASE_URL" "$1" "$QUERY"; }

admin() { "$PSQL" -X -A -t -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"; }
on() { local db=$1; shift; "$PSQL" -X -A -t -q -v ON_ERROR_STOP=1 -d "$(db_url "$db")" "$@"; }
db_exists() { [ "$(admin -v db="$1" <<<"select count(*) from pg_database where datname = :'db';")" = 1 ]; }

cleanup() {
  local db
  for db in "$SRC" "$DST" "$BAD"; do
    admin -v db="$db" <<<'drop database if exists :"db" with (force);' >/dev/null 2>&1 \
      || echo "backup/restore test: could not drop database $db" >&2
  done
  rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { PASSED=$((PASSED + 1)); }
# fail NAME REASON [LOGFILE]: report one failed check, with the output of the step behind it
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL %s: %s\n' "$1" "$2" >&2
  if [ -n "${3:-}" ] && [ -s "$3" ]; then sed 's/^/    | /' "$3" | tail -n 40 >&2; fi
}
summary() {
  local ms=$(( ($(date +%s%N) - T0) / 1000000 ))
  printf 'backup/restore: %d passed, %d failed (%d.%ds)\n' "$PASSED" "$FAILED" $((ms / 1000)) $((ms % 1000 / 100))
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
}
abort() { fail "$@"; summary; exit 1; }

# One fingerprint line per table: name, row count, md5 of all rows. Equal fingerprints = same data.
fingerprint() {
  on "$1" <<'SQL'
select t || ' ' || (xpath('/row/n/text()', query_to_xml(format(
         'select count(*) || '' '' || md5(coalesce(string_agg(x::text, ''|'' order by x::text), '''')) as n from public.%I x', t),
         false, true, '')))[1]::text
from unnest(array['tenant', 'api_key', 'session', 'photo', 'face', 'identity', 'identity_embedding',
                  '_sqlx_migrations']) with ordinality u(t, i)
order by i;
SQL
}

# Exact nearest neighbour of a query close to face ...b (index scans off: an IVFFlat index over
# 3 rows with 100 lists may miss; this checks the data, not the index).
nearest() {
  on "$1" <<'SQL'
set enable_indexscan = off;
set enable_bitmapscan = off;
select face_id from face
order by embedding <=> (array_fill(0.0441941738::real, array[240])
                        || array_fill(-0.0441941738::real, array[272]))::vector
limit 1;
SQL
}

# ------------------------------------------------------------------ 1. migrate.sh on a fresh db
L=$TMP/migrate.log
if (unset DATABASE_URL; scripts/migrate.sh status) >"$L" 2>&1; then
  fail migrate "migrate.sh ran without DATABASE_URL" "$L"
elif ! grep -q 'DATABASE_URL is not set' "$L"; then
  fail migrate "migrate.sh without DATABASE_URL did not say why it refused" "$L"
else
  admin -v db="$SRC" <<<'create database :"db";' >"$L" 2>&1 || abort migrate "createdb $SRC failed" "$L"
  n_up=$(ls migrations/*.up.sql | wc -l)
  if ! DATABASE_URL=$(db_url "$SRC") scripts/migrate.sh up >"$L" 2>&1; then
    abort migrate "migrate.sh up failed" "$L"
  elif ! DATABASE_URL=$(db_url "$SRC") scripts/migrate.sh status >>"$L" 2>&1; then
    abort migrate "migrate.sh status failed" "$L"
  elif [ "$(grep -c ' applied ' "$L")" != "$n_up" ]; then
    fail migrate "status does not list $n_up applied migrations" "$L"
  elif grep -q -E '://[^:/@]*:[^*@][^@]*@' "$L"; then
    fail migrate "migrate.sh printed the password" "$L"
  else
    pass
  fi
fi
db_exists "$SRC" || abort migrate "database $SRC was not created" "$L"

# ------------------------------------------------------------------ data
L=$TMP/fill.log
on "$SRC" >"$L" 2>&1 <<'SQL' || abort fill "inserting test rows failed" "$L"
-- three orthogonal 512-d unit vectors (components +-1/sqrt(512))
create temp table v (name text, face_id uuid, e vector(512));
insert into v values
  ('a', '00000000-0000-4000-8000-00000000000a', array_fill(0.0441941738::real, array[512])::vector),
  ('b', '00000000-0000-4000-8000-00000000000b',
        (array_fill(0.0441941738::real, array[256]) || array_fill(-0.0441941738::real, array[256]))::vector),
  ('c', '00000000-0000-4000-8000-00000000000c',
        (select array_agg(case when i % 2 = 0 then 0.0441941738 else -0.0441941738 end::real order by i)
         from generate_series(1, 512) i)::vector);
insert into tenant (tenant_id) values ('bk-tenant');
insert into api_key (api_key_id, tenant_id, key_hash, key_prefix, label)
  values (gen_random_uuid(), 'bk-tenant', sha256('secret'::bytea), 'fp_test', 'backup test');
insert into session (tenant_id, session_id) values ('bk-tenant', 'wedding-1');
insert into photo (session_pk, tenant_id, photo_id, s3_key, sha256, size_bytes, content_type, width, height)
  select session_pk, tenant_id, 'p1', 'bk-tenant/wedding-1/p1', sha256('p1'::bytea), 12345, 'image/jpeg', 640, 480
  from session where session_id = 'wedding-1';
insert into identity (tenant_id, identity_id, model_id, template)
  select 'bk-tenant', 'alice', 'test-model', e from v where name = 'a';
insert into identity_embedding (identity_pk, image_sha256, bbox, det_score, model_id, embedding)
  select identity_pk, sha256('alice.jpg'::bytea), '{1,2,3,4}', 0.99, 'test-model', template from identity;
insert into face (face_id, photo_pk, tenant_id, session_pk, bbox, landmarks, det_score, size_px, sharpness,
                  model_id, embedding, identity_pk, identity_similarity)
  select v.face_id, p.photo_pk, p.tenant_id, p.session_pk, '{10,20,110,140}', array_fill(5::real, array[10]),
         0.9, 120, 33.5, 'test-model', v.e,
         case when v.name = 'a' then (select identity_pk from identity) end,
         case when v.name = 'a' then 1 end
  from photo p, v;
SQL
FP_BEFORE=$(fingerprint "$SRC" 2>"$L") || abort fill "fingerprint of $SRC failed" "$L"
NN_BEFORE=$(nearest "$SRC" 2>"$L") || abort fill "nearest-neighbour query on $SRC failed" "$L"
[ "$NN_BEFORE" = 00000000-0000-4000-8000-00000000000b ] || abort fill "nearest face before backup is '$NN_BEFORE', expected ...0b" "$L"
grep -q '^face 3 ' <<<"$FP_BEFORE" || abort fill "expected 3 faces: $FP_BEFORE" "$L"

# ------------------------------------------------------------------ 2. backup + pruning
L=$TMP/backup.log
BK=$TMP/backups
mkdir -p "$BK"
for f in bk-20000101T000000Z.dump bk-20000101T000000Z.dump.sha256 other-20000101T000000Z.dump bk-notes.dump; do
  echo old >"$BK/$f"; touch -d '30 days ago' "$BK/$f"
done
echo recent >"$BK/bk-20000102T000000Z.dump"; touch -d '2 days ago' "$BK/bk-20000102T000000Z.dump"
DUMP=
if ! DATABASE_URL=$(db_url "$SRC") scripts/backup_database.sh --dir "$BK" --name bk --keep-days 14 >"$L" 2>&1; then
  fail backup "backup_database.sh failed" "$L"
else
  for f in "$BK"/bk-2*.dump; do
    case "$f" in *-2000010[12]T*) ;; *) [ -e "$f" ] && DUMP=$f ;; esac
  done
  if [ -z "$DUMP" ] || [ ! -s "$DUMP" ]; then
    fail backup "no dump in $BK" "$L"; DUMP=
  elif ! (cd "$BK" && sha256sum --check --status "$(basename "$DUMP").sha256"); then
    fail backup "the .sha256 does not check with sha256sum -c" "$L"
  elif [ "$(stat -c %a "$DUMP")" != 600 ]; then
    fail backup "dump mode is $(stat -c %a "$DUMP"), expected 600" "$L"
  elif ! grep -q -F "$DUMP" "$L" || ! grep -q ' in [0-9]*\.[0-9]*s' "$L"; then
    fail backup "output does not name the file and the duration" "$L"
  elif [ -e "$BK/bk-20000101T000000Z.dump" ] || [ -e "$BK/bk-20000101T000000Z.dump.sha256" ]; then
    fail backup "--keep-days 14 did not prune the 30-day-old dump and its .sha256" "$L"
  elif [ ! -e "$BK/bk-20000102T000000Z.dump" ] || [ ! -e "$BK/other-20000101T000000Z.dump" ] \
       || [ ! -e "$BK/bk-notes.dump" ]; then
    fail backup "pruning removed a file it should have kept: $(ls "$BK" | tr '\n' ' ')" "$L"
  else
    pass
  fi
fi
[ -n "$DUMP" ] || abort backup "no dump to restore" "$L"

# ------------------------------------------------------------------ 3. drop, restore, compare
L=$TMP/restore.log
admin -v db="$SRC" <<<'drop database :"db" with (force);' >"$L" 2>&1 || abort restore "dropping $SRC failed" "$L"
if ! scripts/restore_database.sh "$DUMP" --target-db "$DST" >"$L" 2>&1; then
  abort restore "restore_database.sh into a new database failed" "$L"
fi
FP_AFTER=$(fingerprint "$DST" 2>>"$L")
if [ "$FP_AFTER" != "$FP_BEFORE" ]; then
  fail restore "restored data differs: before [$FP_BEFORE] after [$FP_AFTER]" "$L"
elif ! grep -qE '^ +face +3$' "$L" || ! grep -q 'migrations applied: 1 2 3 4' "$L"; then
  fail restore "report lacks row counts / migration versions" "$L"
elif [ "$(on "$DST" <<<"select attname || '=' || attstorage::text from pg_attribute where attrelid = 'face'::regclass and attname = 'embedding';" 2>>"$L")" != embedding=p ]; then
  fail restore "face.embedding lost its PLAIN storage" "$L"
else
  pass
fi

# ------------------------------------------------------------------ 4. same nearest neighbour
NN_AFTER=$(nearest "$DST" 2>>"$L")
if [ "$NN_AFTER" = "$NN_BEFORE" ]; then pass; else fail nearest "nearest face after restore is '$NN_AFTER', before '$NN_BEFORE'" "$L"; fi

# ------------------------------------------------------------------ 5. restored db is usable
L=$TMP/usable.log
if ! DATABASE_URL=$(db_url "$DST") scripts/migrate.sh status >"$L" 2>&1; then
  fail usable "migrate.sh status on the restored database failed" "$L"
elif grep -q -e pending -e MISMATCH "$L"; then
  fail usable "restored database has pending migrations or checksum mismatches" "$L"
elif ! on "$DST" >>"$L" 2>&1 <<'SQL'
insert into session (tenant_id, session_id) values ('bk-tenant', 'after-restore');
insert into face (face_id, photo_pk, tenant_id, session_pk, bbox, landmarks, det_score, size_px, sharpness, model_id, embedding)
  select gen_random_uuid(), photo_pk, tenant_id, session_pk, bbox, landmarks, det_score, size_px, sharpness, model_id, embedding
  from face where face_id = '00000000-0000-4000-8000-00000000000c';
SQL
then
  fail usable "inserting into the restored database failed (sequences?)" "$L"
else
  pass
fi

# ------------------------------------------------------------------ 6. refusals: checksum, non-empty
L=$TMP/refuse.log
cp "$DUMP" "$TMP/corrupt.dump"; cp "$DUMP.sha256" "$TMP/corrupt.dump.sha256"
size=$(stat -c %s "$TMP/corrupt.dump")
byte=$(od -An -tu1 -j $((size / 2)) -N1 "$TMP/corrupt.dump" | tr -d ' ')
printf '%b' "\\$(printf '%03o' $(( byte ^ 1 )))" | dd of="$TMP/corrupt.dump" bs=1 seek=$((size / 2)) conv=notrunc status=none
cp "$DUMP" "$TMP/nosum.dump"
if cmp -s "$DUMP" "$TMP/corrupt.dump"; then
  fail refuse "could not corrupt the copy"
elif scripts/restore_database.sh "$TMP/corrupt.dump" --target-db "$BAD" >"$L" 2>&1; then
  fail refuse "a dump with a flipped byte was restored" "$L"
elif ! grep -q 'checksum mismatch' "$L"; then
  fail refuse "corrupt dump refused, but not for its checksum" "$L"
elif scripts/restore_database.sh "$TMP/nosum.dump" --target-db "$BAD" >"$L" 2>&1 || ! grep -q 'checksum file .* is missing' "$L"; then
  fail refuse "a dump without .sha256 was not refused" "$L"
elif db_exists "$BAD"; then
  fail refuse "a refused restore created database $BAD" "$L"
elif scripts/restore_database.sh "$DUMP" --target-db "$DST" >"$L" 2>&1 || ! grep -q 'is not empty' "$L"; then
  fail refuse "restore into the non-empty $DST without --force was not refused" "$L"
elif [ "$(on "$DST" <<<'select count(*) from face;' 2>>"$L")" != 4 ]; then
  fail refuse "the refused restore changed $DST" "$L"
else
  pass
fi

# ------------------------------------------------------------------ 7. --force over an existing db
L=$TMP/force.log
if ! scripts/restore_database.sh "$DUMP" --target-db "$DST" --force >"$L" 2>&1; then
  fail force "restore --force into the non-empty $DST failed" "$L"
elif [ "$(fingerprint "$DST" 2>>"$L")" != "$FP_BEFORE" ]; then
  fail force "after restore --force the data differs from the backup" "$L"
elif [ "$(on "$DST" <<<"select extowner::regrole from pg_extension where extname = 'vector';" 2>>"$L")" = "" ]; then
  fail force "the vector extension is gone after --force" "$L"
else
  pass
fi

# ------------------------------------------------------------------ 8. backup failure modes
L=$TMP/fail.log
FAKE=$TMP/fakebin; mkdir -p "$FAKE"
REAL_PSQL=$(command -v "$PSQL"); REAL_RESTORE=$(command -v "${PG_BIN:+$PG_BIN/}pg_restore")
ln -s "$REAL_PSQL" "$FAKE/psql"; ln -s "$REAL_RESTORE" "$FAKE/pg_restore"
cat >"$FAKE/pg_dump" <<'EOF'
#!/bin/sh
case "$1" in --version) echo "pg_dump (PostgreSQL) ${FAKE_PG_DUMP_VERSION:-14.9}"; exit 0 ;; esac
for a; do case "$a" in --file=*) f=${a#--file=} ;; esac; done
printf 'PGDMP partial' >"$f"; echo "pg_dump: error: simulated failure" >&2; exit 1
EOF
chmod +x "$FAKE/pg_dump"
mkdir -p "$TMP/bk-fail"
if PG_BIN=$FAKE DATABASE_URL=$(db_url "$DST") scripts/backup_database.sh --dir "$TMP/bk-fail" >"$L" 2>&1; then
  fail backup-fail "an older pg_dump (14) was used against the newer server" "$L"
elif ! grep -q 'major version' "$L"; then
  fail backup-fail "old pg_dump refused, but not with a version message" "$L"
elif FAKE_PG_DUMP_VERSION=99.0 PG_BIN=$FAKE DATABASE_URL=$(db_url "$DST") \
       scripts/backup_database.sh --dir "$TMP/bk-fail" >"$L" 2>&1; then
  fail backup-fail "a failing pg_dump gave exit 0" "$L"
elif ! grep -q 'simulated failure' "$L"; then
  fail backup-fail "pg_dump's error was not shown" "$L"
elif [ -n "$(ls -A "$TMP/bk-fail")" ]; then
  fail backup-fail "a failed backup left files: $(ls -A "$TMP/bk-fail" | tr '\n' ' ')" "$L"
else
  pass
fi

summary
