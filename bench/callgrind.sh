#!/usr/bin/env bash
# Instructions per request of one process under callgrind: a measure of CPU work that does not
# move with the noise of a shared machine (CPU time does, by ±20%). Starts our `backend` and
# `gateway` on loopback, one of them under valgrind, creates an image, warms up, then zeroes the
# counters, runs wrk for a fixed time and divides the instructions by the requests served.
#
#   bash bench/callgrind.sh                 # gateway, PATCH
#   TARGET=backend METHOD=GET bash bench/callgrind.sh
#   KEEP=/tmp/gw.cg bash bench/callgrind.sh # keep the profile for callgrind_annotate
#   GATEWAY_FLAGS=--transcode-dynamically bash bench/callgrind.sh   # flags for the gateway
#
# Needs valgrind and wrk (Debian: valgrind, wrk) and the anchors' patch.lua.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
anchor=${ANCHOR_DIR:-$root/../shared/anchors/grpc-gateway}
TARGET=${TARGET:-gateway}
METHOD=${METHOD:-PATCH}
SECONDS_MEASURED=${SECONDS_MEASURED:-4}
# The table in RESULTS.md: the gateway at 8 connections, the backend at 32 (its commit batches,
# and so its cost per update, depend on how many writes are in flight).
if [ "${TARGET:-gateway}" = backend ]; then CONNS=${CONNS:-32}; else CONNS=${CONNS:-8}; fi
for t in valgrind callgrind_control callgrind_annotate wrk curl; do
  command -v "$t" >/dev/null || { echo "callgrind.sh: $t not found" >&2; exit 1; }
done
case $TARGET in gateway | backend) ;; *) echo "TARGET is gateway or backend" >&2; exit 2 ;; esac
. bench/lib.sh

cargo build --release --locked --quiet --bin compute-gateway
bin=$root/target/release/compute-gateway
wait_http() { for _ in $(seq 400); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "$1 not up" >&2; exit 1; }
profiled() { if [ "$TARGET" = "$1" ]; then echo valgrind --tool=callgrind "--callgrind-out-file=$work/cg.out"; fi; }

bp=$(free_port); gp=$(free_port)
$(profiled backend) "$bin" backend --grpc-listen "127.0.0.1:$bp" --data-dir "$work/data" 2>"$work/backend.log" &
pids+=($!); [ "$TARGET" = backend ] && target_pid=$!
# shellcheck disable=SC2086 # GATEWAY_FLAGS is a list of flags
$(profiled gateway) "$bin" gateway --http-listen "127.0.0.1:$gp" --backend "http://127.0.0.1:$bp" ${GATEWAY_FLAGS:-} 2>"$work/gateway.log" &
pids+=($!); [ "$TARGET" = gateway ] && target_pid=$!
wait_http "http://127.0.0.1:$gp/readyz"

image=$(bench_image "$gp")
body=""
[ "$METHOD" = PATCH ] && body='{"updateMask":"name,labels","name":"n","labels":{"a":"b"},"minDiskSize":"4194304"}'
url="http://127.0.0.1:$gp/compute/v1/images/$image"
WRK_METHOD=$METHOD WRK_BODY=$body wrk -t1 -c"$CONNS" -d2s -s "$anchor/patch.lua" "$url" >/dev/null
callgrind_control -z "$target_pid" >/dev/null 2>&1
out=$(WRK_METHOD=$METHOD WRK_BODY=$body wrk -t1 -c"$CONNS" -d"${SECONDS_MEASURED}s" -s "$anchor/patch.lua" "$url")
callgrind_control -d "$target_pid" >/dev/null 2>&1
n=$(awk -F'[= ]' '/^lua: requests=/{print $3}' <<<"$out")
profile=$(ls -t "$work"/cg.out* | head -1)
total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
echo "$TARGET $METHOD at $CONNS connections: $n requests, $((total / n)) instructions per request"
if [ -n "${KEEP:-}" ]; then cp "$profile" "$KEEP"; fi
