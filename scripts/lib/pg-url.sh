# Sourced by backup_database.sh and restore_database.sh: DATABASE_URL split into its parts,
# and URLs for other databases on the same server with the password left out (libpq reads it
# from PGPASSWORD). The caller defines die().
pct_decode() { local s=${1//\\/\\\\}; printf '%b' "${s//%/\\x}"; }
pct_encode() {
  local LC_ALL=C s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case "$c" in [A-Za-z0-9._~-]) out+=$c ;; *) out+=$(printf '%%%02X' "'$c") ;; esac
  done
  printf '%s' "$out"
}

# Splits DATABASE_URL into URL_SCHEME URL_USER URL_PASSWORD URL_HOSTPORT URL_DB URL_QUERY.
parse_url() {
  local url=$1 rest userinfo=
  case "$url" in
    postgres://*|postgresql://*) ;;
    *) die "DATABASE_URL must be a postgres:// or postgresql:// URL" ;;
  esac
  URL_SCHEME=${url%%://*}; rest=${url#*://}
  if [[ $rest == *@* ]]; then userinfo=${rest%@*}; rest=${rest##*@}; fi
  URL_QUERY=
  if [[ $rest == *\?* ]]; then URL_QUERY=${rest#*\?}; rest=${rest%%\?*}; fi
  URL_HOSTPORT=${rest%%/*}
  URL_DB=; [[ $rest == */* ]] && URL_DB=$(pct_decode "${rest#*/}")
  URL_USER=$(pct_decode "${userinfo%%:*}")
  URL_PASSWORD=; [[ $userinfo == *:* ]] && URL_PASSWORD=$(pct_decode "${userinfo#*:}")
  if [ -z "$URL_DB" ]; then URL_DB=${PGDATABASE:-${URL_USER:-${PGUSER:-$(id -un)}}}; fi
  return 0
}

# URL of database $1 on the same server, without the password (libpq gets it from PGPASSWORD).
url_for_db() {
  local u=
  [ -n "$URL_USER" ] && u="$(pct_encode "$URL_USER")@"
  printf '%s://%s%s/%s%s' "$URL_SCHEME" "$u" "$URL_HOSTPORT" "$(pct_encode "$1")" "${URL_QUERY:+?$URL_QUERY}"
}

masked_url() {
  local u=
  [ -n "$URL_USER" ] && u="$(pct_encode "$URL_USER")${URL_PASSWORD:+:****}@"
  printf '%s://%s%s/%s' "$URL_SCHEME" "$u" "$URL_HOSTPORT" "$(pct_encode "$1")"
}

