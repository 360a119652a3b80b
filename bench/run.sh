#!/usr/bin/env bash
# Side-by-side benchmark on loopback: our REST gateway and the classic Go grpc-gateway (built by
# ../shared/anchors/grpc-gateway/build.sh from OUR proto/) in front of the SAME backend (our
# `backend`), plus direct gRPC to that backend (the floor). Prints a markdown table: req/s,
# p50/p99, CPU-µs per request of the gateway and of the backend, peak RSS, and the ratios
# ours/grpc-gateway and gateway/direct-gRPC, all from this one run.
#
#   bash bench/run.sh                      # defaults below
#   DURATION=20 CONNS=32 bash bench/run.sh
#   SERVE_CONNS="32 64 128" bash bench/run.sh   # concurrencies of the serve rows
#   ROUNDS=3 bash bench/run.sh             # the pinned scenarios 3 times over, interleaved;
#                                          # ratios per round and their median
#   GATEWAY_FLAGS=--no-compression bash bench/run.sh   # flags for our gateway
#
# Needs wrk, h2load and protoc (Debian: wrk, nghttp2-client, protobuf-compiler); the
# grpc-gateway columns also need ../shared/anchors/grpc-gateway/install.sh to have run.
# Pinning (taskset): GW_CPUS (both gateways, default 0), BACKEND_CPUS and LOADGEN_CPUS
# (default 1). Our gateway and backend run as separate processes (`gateway` + `backend`) so
# that each one's CPU is measured on its own; `serve` runs the same code in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
anchor=${ANCHOR_DIR:-$root/../shared/anchors/grpc-gateway}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
GW_CPUS=${GW_CPUS:-0}
BACKEND_CPUS=${BACKEND_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-1}
. bench/lib.sh
for t in wrk h2load protoc taskset curl; do
  command -v "$t" >/dev/null || { echo "bench: $t not found (apt-get install wrk nghttp2-client protobuf-compiler)" >&2; exit 1; }
done

cargo build --release --locked --quiet --bin compute-gateway
bin=target/release/compute-gateway

backend_port=$(free_port)
taskset -c "$BACKEND_CPUS" $bin backend --grpc-listen "127.0.0.1:$backend_port" --data-dir "$work/data" 2>"$work/backend.log" &
backend_pid=$!; pids+=($backend_pid)
ours_port=$(free_port)
# shellcheck disable=SC2086 # GATEWAY_FLAGS is a list of flags
taskset -c "$GW_CPUS" $bin gateway --http-listen "127.0.0.1:$ours_port" --backend "http://127.0.0.1:$backend_port" ${GATEWAY_FLAGS:-} 2>"$work/gateway.log" &
ours_pid=$!; pids+=($ours_pid)
wait_port "$backend_port"; wait_port "$ours_port"

# A serve process alone, for start-to-ready (both ports accepting): from exec to its ready file.
s0=$(date +%s%N)
$bin serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$work/ready" --ready-file "$work/ready.json" 2>/dev/null &
sp=$!
for _ in $(seq 5000); do [ -s "$work/ready.json" ] && break; sleep 0.001; done
s1=$(date +%s%N)
ready_ms=$(( (s1 - s0) / 1000000 ))
kill -TERM $sp; wait $sp 2>/dev/null || true

gw_pid=
if [ -x /usr/bin/protoc-gen-grpc-gateway ] && [ -f "$anchor/build.sh" ]; then
  bash "$anchor/build.sh" "$root/proto" "$work/gw" yandex/cloud/compute/v1/image_service.proto \
    yandex/cloud/operation/operation_service.proto >"$work/gw-build.log" 2>&1
  gw_port=$(free_port)
  taskset -c "$GW_CPUS" "$work/gw/bin/grpc-gateway" -listen "127.0.0.1:$gw_port" -backend "127.0.0.1:$backend_port" 2>"$work/grpc-gateway.log" &
  gw_pid=$!; pids+=($gw_pid)
  wait_port "$gw_port"
else
  echo "bench: grpc-gateway not installed (run ../shared/anchors/grpc-gateway/install.sh); its rows are skipped" >&2
fi

# The image every scenario reads and updates.
image=$(bench_image "$ours_port")

frame() { # message-type text-proto -> gRPC length-prefixed frame file
  protoc -I proto --encode="$1" yandex/cloud/compute/v1/image_service.proto <<<"$2" >"$work/msg"
  local n; n=$(stat -c %s "$work/msg")
  printf "$(printf '\\x00\\x%02x\\x%02x\\x%02x\\x%02x' $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))" >"$3"
  cat "$work/msg" >>"$3"
}
frame yandex.cloud.compute.v1.UpdateImageRequest "image_id: \"$image\" update_mask { paths: \"name\" paths: \"labels\" } name: \"n\" labels { key: \"a\" value: \"b\" } min_disk_size: 4194304" "$work/update.grpc"
frame yandex.cloud.compute.v1.GetImageRequest "image_id: \"$image\"" "$work/get.grpc"

ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hwm() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
rows=()
declare -A RPS P50 P99 GUS

# scenario name, gateway pid, backend pid ("-" for none), command...
measure() {
  local name=$1 gpid=$2 bpid=$3; shift 3
  local g0=0 b0=0 g1=0 b1=0 out n rps p50 p99
  [ "$gpid" = "-" ] || g0=$(ticks "$gpid")
  [ "$bpid" = "-" ] || b0=$(ticks "$bpid")
  out=$(taskset -c "$LOADGEN_CPUS" "$@" 2>&1)
  [ "$gpid" = "-" ] || g1=$(ticks "$gpid")
  [ "$bpid" = "-" ] || b1=$(ticks "$bpid")
  if [[ $1 == wrk ]]; then
    rps=$(awk '/^Requests\/sec:/{printf "%.0f", $2}' <<<"$out")
    n=$(awk -F'[= ]' '/^lua: requests=/{print $3}' <<<"$out")
    local bad; bad=$(awk -F'[= ]' '/^lua: requests=/{print $5}' <<<"$out")
    p50=$(awk '/^lua: latency_us/{split($3,a,"="); printf "%.2f", a[2]/1000}' <<<"$out")
    p99=$(awk '/^lua: latency_us/{split($5,a,"="); printf "%.2f", a[2]/1000}' <<<"$out")
    [ "${bad:-0}" = 0 ] || echo "bench: $name had $bad non-2xx replies" >&2
  else
    rps=$(awk '/^finished in/{printf "%.0f", $4}' <<<"$out")
    n=$(awk '/^requests:/{print $8}' <<<"$out")
    p50=$(awk '/^time for request:/{print $6}' <<<"$out")  # h2load: mean (no percentiles)
    p99=$(awk '/^time for request:/{print $5}' <<<"$out")  # h2load: max
    local failed; failed=$(awk '/^requests:/{print $10}' <<<"$out")
    [ "${failed:-0}" = 0 ] || echo "bench: $name had $failed failed requests" >&2
  fi
  RPS[$name]=$rps
  local gus="-" bus="-" rss="-"
  [ "$gpid" = "-" ] || { gus=$(awk -v a="$g0" -v b="$g1" -v n="$n" -v hz="$hz" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}'); rss="$(( $(hwm "$gpid") / 1024 )) MB"; }
  [ "$bpid" = "-" ] || bus=$(awk -v a="$b0" -v b="$b1" -v n="$n" -v hz="$hz" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
  P50[$name]=$p50; P99[$name]=$p99; GUS[$name]=$gus
  rows+=("| $name | $rps | $p50 | $p99 | $gus | $bus | $rss |")
}

body_ours='{"updateMask":"name,labels","name":"n","labels":{"a":"b"},"minDiskSize":"4194304"}'
body_v1='{"name":"n","labels":{"a":"b"},"minDiskSize":"4194304"}'
lua="$anchor/patch.lua"
run_wrk() { # name gateway-pid backend-pid url method body
  WRK_METHOD=$5 WRK_BODY=$6 taskset -c "$LOADGEN_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$lua" "$4" >/dev/null
  WRK_METHOD=$5 WRK_BODY=$6 measure "$1" "$2" "$3" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$lua" "$4"
}
h2=(h2load -H 'content-type: application/grpc' -H 'te: trailers' -c "$CONNS" -m 1 -D "$DURATION")
# The shared machine drifts from minute to minute: with ROUNDS > 1 the pinned scenarios run
# round after round, so that each ratio compares neighbours in time, and the summary takes the
# median of the rounds.
for round in $(seq "$ROUNDS"); do
  r=""; [ "$ROUNDS" = 1 ] || r=" (round $round)"
  run_wrk "ours REST PATCH$r" "$ours_pid" "$backend_pid" "http://127.0.0.1:$ours_port/compute/v1/images/$image" PATCH "$body_ours"
  [ -z "$gw_pid" ] || run_wrk "grpc-gateway REST PATCH (no mask)$r" "$gw_pid" "$backend_pid" "http://127.0.0.1:$gw_port/compute/v1/images/$image" PATCH "$body_v1"
  run_wrk "ours REST GET$r" "$ours_pid" "$backend_pid" "http://127.0.0.1:$ours_port/compute/v1/images/$image" GET ""
  [ -z "$gw_pid" ] || run_wrk "grpc-gateway REST GET$r" "$gw_pid" "$backend_pid" "http://127.0.0.1:$gw_port/compute/v1/images/$image" GET ""
  measure "direct gRPC Update$r" - "$backend_pid" "${h2[@]}" -d "$work/update.grpc" "http://127.0.0.1:$backend_port/yandex.cloud.compute.v1.ImageService/Update"
  measure "direct gRPC Get$r" - "$backend_pid" "${h2[@]}" -d "$work/get.grpc" "http://127.0.0.1:$backend_port/yandex.cloud.compute.v1.ImageService/Get"
done

# The product as shipped: `serve` (gateway + backend in one process, not pinned: it may use
# every CPU), durable REST PATCH. Its CPU and RSS are in the gateway columns.
serve_http=$(free_port); serve_grpc=$(free_port)
$bin serve --grpc-listen "127.0.0.1:$serve_grpc" --http-listen "127.0.0.1:$serve_http" --data-dir "$work/serve" 2>"$work/serve.log" &
serve_pid=$!; pids+=($serve_pid)
wait_port "$serve_http"
serve_image=$(bench_image "$serve_http")
# More connections make bigger commit batches: SERVE_CONNS lists the concurrencies to run.
for c in ${SERVE_CONNS:-$CONNS 128}; do
  CONNS=$c run_wrk "ours serve REST PATCH (durable; one process, all CPUs), $c connections" "$serve_pid" - "http://127.0.0.1:$serve_http/compute/v1/images/$serve_image" PATCH "$body_ours"
done
batch=$(curl -sf "http://127.0.0.1:$serve_http/metrics" | awk '/^store_commit_batch_jobs_sum/{s=$2} /^store_commit_batch_jobs_count/{c=$2} END{if (c > 0) printf "%.1f", s/c; else print "-"}')

ratio() { awk -v a="${RPS[$1]:-0}" -v b="${RPS[$2]:-0}" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
cpu_ratio() { awk -v a="${GUS[$1]:-}" -v b="${GUS[$2]:-}" 'BEGIN{ if (a != "" && a != "-" && b > 0) printf "%.2f", a/b; else print "-" }'; }
p99_ratio() { awk -v a="${P99[$1]:-}" -v b="${P50[$2]:-}" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
median() { printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{v[NR]=$1} END{ if (NR == 0) print "-"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.2f", (v[NR/2]+v[NR/2+1])/2 }'; }
# ratio-row LABEL FUNCTION A B: the ratio in every round, then (with several rounds) the median.
ratio_row() {
  local label=$1 f=$2 a=$3 b=$4 vals=() round r
  for round in $(seq "$ROUNDS"); do
    r=""; [ "$ROUNDS" = 1 ] || r=" (round $round)"
    vals+=("$($f "$a$r" "$b$r")")
  done
  if [ "$ROUNDS" = 1 ]; then echo "| $label | ${vals[0]} |"; else echo "| $label | $(IFS='|'; echo "${vals[*]}" | sed 's/|/ | /g') | $(median "${vals[@]}") |"; fi
}
echo
echo "$(date -u +%FT%TZ), $(nproc) cores, ${DURATION}s per run, $CONNS connections; gateways on CPU $GW_CPUS, backend and load generator on CPU $BACKEND_CPUS/$LOADGEN_CPUS"
echo
echo "| scenario | req/s | p50 ms | p99 ms | gateway CPU-µs/req | backend CPU-µs/req | gateway peak RSS |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
if [ "$ROUNDS" = 1 ]; then
  echo "| ratio | value |"
  echo "|---|---|"
else
  echo "| ratio |$(for i in $(seq "$ROUNDS"); do printf ' round %s |' "$i"; done) median |"
  echo "|---|$(for i in $(seq "$ROUNDS"); do printf -- '---|'; done)---|"
fi
ratio_row "ours / grpc-gateway, REST PATCH req/s" ratio "ours REST PATCH" "grpc-gateway REST PATCH (no mask)"
ratio_row "ours / grpc-gateway, REST GET req/s" ratio "ours REST GET" "grpc-gateway REST GET"
ratio_row "ours REST PATCH / direct gRPC Update" ratio "ours REST PATCH" "direct gRPC Update"
ratio_row "ours REST GET / direct gRPC Get" ratio "ours REST GET" "direct gRPC Get"
ratio_row "gateway CPU per REST PATCH, ours / grpc-gateway" cpu_ratio "ours REST PATCH" "grpc-gateway REST PATCH (no mask)"
ratio_row "gateway CPU per REST GET, ours / grpc-gateway" cpu_ratio "ours REST GET" "grpc-gateway REST GET"
ratio_row "ours REST PATCH p99 / grpc-gateway REST PATCH p50" p99_ratio "ours REST PATCH" "grpc-gateway REST PATCH (no mask)"
echo
echo "Start to ready of \`serve\` (both ports accepting): ${ready_ms} ms. Backend peak RSS: $(( $(hwm "$backend_pid") / 1024 )) MB. \`serve\` under PATCH: ${batch} updates per durable commit on average."
echo "h2load rows: p50 column is the mean, p99 column the max (h2load reports no percentiles)."
