# Shared by the scripts that drive the release binary (sourced after `set -euo pipefail` and a
# `cd` to the repository): a scratch directory and the processes to stop on exit, starting
# `serve` on free ports, and reading the addresses it bound.
#
# With CG_TEST_STORE=postgres, each named store is a fresh database on the machine's PostgreSQL
# (CG_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres), dropped on exit.
work=$(mktemp -d)
pids=()
pg_admin=${CG_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # (store_flags runs in a subshell: the databases it made are listed in a file.)
  if [ -f "$work/databases" ]; then
    while read -r d; do psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" || true; done <"$work/databases"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# store_flags NAME: the flags that keep a store named NAME: `--data-dir $work/NAME`, or under
# CG_TEST_STORE=postgres `--database-url` of a database made for it (once).
store_flags() {
  if [ "${CG_TEST_STORE:-}" != postgres ]; then
    echo "--data-dir $work/$1"
    return
  fi
  local db="cg_sh_$$_$1"
  if [ ! -e "$work/$1.db" ]; then
    psql "$pg_admin" -qc "CREATE DATABASE $db" >&2
    echo "$db" >>"$work/databases"
    touch "$work/$1.db"
  fi
  echo "--database-url ${pg_admin%/*}/$db"
}

# start_serve NAME [FLAG...]: starts `serve` on port 0 with its data in store NAME and its log
# in $work/NAME.log, and waits for its ready file $work/NAME.json (30 s at most).
start_serve() {
  local name=$1; shift
  local store
  store=$(store_flags "$name")
  # shellcheck disable=SC2086 # the store's flag and its value
  target/release/compute-gateway serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    $store --ready-file "$work/$name.json" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    [ -s "$work/$name.json" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/$name.log" >&2; echo "$name did not start" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name not ready in 30 s" >&2
  exit 1
}

# ready_addr NAME grpc|http: an address the `serve` started as NAME bound.
ready_addr() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/$1.json" "$2"; }
