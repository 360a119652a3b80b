#!/usr/bin/env bash
# Durable REST PATCH on each store, through the gateway: the embedded store, PostgreSQL with one
# backend replica, and PostgreSQL with two replicas behind one gateway. Prints a markdown table:
# req/s, p50 and p99 (wrk), and the replies that were not 2xx.
#
#   bash bench/postgres.sh
#   DURATION=20 CONNS=64 DATABASE_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres bash bench/postgres.sh
#   SSLMODE=disable bash bench/postgres.sh
#
# Needs wrk and psql, and a PostgreSQL server (the CI machine's by default); makes the database
# cg_bench, and drops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
anchor=${ANCHOR_DIR:-$root/../shared/anchors/grpc-gateway}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
admin=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
. bench/lib.sh
for t in wrk psql curl; do
  command -v "$t" >/dev/null || { echo "bench: $t not found" >&2; exit 1; }
done
cargo build --release --locked --quiet --bin compute-gateway
bin=target/release/compute-gateway
# SSLMODE: the replicas' sslmode (libpq's; `prefer`, the default, is TLS when the server offers it).
db_url="${admin%/*}/cg_bench?sslmode=${SSLMODE:-prefer}"
psql "$admin" -qc "DROP DATABASE IF EXISTS cg_bench WITH (FORCE)" -c "CREATE DATABASE cg_bench"
trap 'cleanup; psql "$admin" -qc "DROP DATABASE IF EXISTS cg_bench WITH (FORCE)" || true' EXIT

body='{"updateMask":"name,labels","name":"n","labels":{"a":"b"},"minDiskSize":"4194304"}'
rows=()
# scenario NAME BACKEND-FLAGS... : starts the backends (one per flag set, separated by `--`),
# a gateway over them, and measures PATCH on one image.
scenario() {
  local name=$1; shift
  local backends=() mine=() set=()
  for arg in "$@" --; do
    if [ "$arg" = -- ]; then
      local port; port=$(free_port)
      # shellcheck disable=SC2068 # the flags of one backend
      $bin backend --grpc-listen "127.0.0.1:$port" --create-delay-ms 10 ${set[@]} 2>"$work/backend-$port.log" &
      pids+=($!); mine+=($!); backends+=("http://127.0.0.1:$port"); wait_port "$port"; set=()
    else
      set+=("$arg")
    fi
  done
  local gp; gp=$(free_port)
  $bin gateway --http-listen "127.0.0.1:$gp" --backend "$(IFS=,; echo "${backends[*]}")" 2>"$work/gateway.log" &
  pids+=($!); mine+=($!); wait_port "$gp"
  local image; image=$(bench_image "$gp")
  local url="http://127.0.0.1:$gp/compute/v1/images/$image"
  WRK_METHOD=PATCH WRK_BODY=$body wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$anchor/patch.lua" "$url" >/dev/null
  local out; out=$(WRK_METHOD=PATCH WRK_BODY=$body wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$anchor/patch.lua" "$url")
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec:/{printf "%.0f", $2}' <<<"$out")
  p50=$(awk '/^lua: latency_us/{split($3,a,"="); printf "%.2f", a[2]/1000}' <<<"$out")
  p99=$(awk '/^lua: latency_us/{split($5,a,"="); printf "%.2f", a[2]/1000}' <<<"$out")
  bad=$(awk -F'[= ]' '/^lua: requests=/{print $5}' <<<"$out")
  rows+=("| $name | $rps | $p50 | $p99 | ${bad:-0} |")
  kill "${mine[@]}" 2>/dev/null || true
  wait "${mine[@]}" 2>/dev/null || true
}

scenario "embedded store (redb, group commit), 1 backend" --data-dir "$work/data"
scenario "PostgreSQL, 1 backend" --database-url "$db_url"
psql "$admin" -qc "DROP DATABASE cg_bench WITH (FORCE)" -c "CREATE DATABASE cg_bench"
scenario "PostgreSQL, 2 backends, one gateway" --database-url "$db_url" -- --database-url "$db_url"

echo
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, ${DURATION}s per run, $CONNS connections, durable REST PATCH through the gateway"
echo
echo "| scenario | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
