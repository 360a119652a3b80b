#!/usr/bin/env bash
# Where the tail of durable PATCH comes from (issue 15): `serve` (release) on a fresh data
# directory, REST PATCH from CONNS connections (default 32) for DURATION seconds (default 60),
# then, side by side, the request latency wrk saw and the distribution of the store's group
# commits (`store_commit_duration_seconds`: the write transaction and its fsync) and of their
# batch sizes, from /metrics. When the slowest commits are as slow as the slowest requests, the
# tail is the disk's.
#   bash bench/patch_tail.sh           DURATION=120 CONNS=128 bash bench/patch_tail.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
anchor=${ANCHOR_DIR:-$PWD/../shared/anchors/grpc-gateway}
cargo build --release --locked --quiet --bin compute-gateway
start_serve tail
http=$(ready_addr tail http)
image=$(bench_image "${http##*:}")
body='{"updateMask":"name,labels","name":"n","labels":{"a":"b"},"minDiskSize":"4194304"}'
WRK_METHOD=PATCH WRK_BODY=$body wrk -t1 -c"${CONNS:-32}" -d"${DURATION:-60}s" --latency \
  -s "$anchor/patch.lua" "http://$http/compute/v1/images/$image" | grep -E '^lua:|Requests/sec'
curl -sf "http://$http/metrics" | python3 -c '
import re, sys
def hist(name):
    buckets, count = [], 0
    for line in sys.stdin_lines:
        m = re.match(name + r"_bucket\{le=\"([^\"]+)\"\} (\S+)", line)
        if m and m.group(1) != "+Inf":
            buckets.append((float(m.group(1)), float(m.group(2))))
        m = re.match(name + r"_count (\S+)", line)
        if m:
            count = float(m.group(1))
    return buckets, count
sys.stdin_lines = sys.stdin.read().splitlines()
for name, unit, scale in (("store_commit_duration_seconds", "ms", 1000), ("store_commit_batch_jobs", "jobs", 1)):
    buckets, count = hist(name)
    print(f"{name}: {count:.0f} commits")
    for q in (0.5, 0.9, 0.99, 0.999):
        bound = next((le for le, n in buckets if n >= q * count), float("inf"))
        print(f"  p{q * 100:g} <= {bound * scale:g} {unit}")
    slow = [(le, count - n) for le, n in buckets if le >= 0.025 and "seconds" in name]
    for le, n in slow:
        print(f"  over {le * scale:g} {unit}: {n:.0f}")
'
