#!/usr/bin/env bash
# Soak: a mixed load of every RPC, half REST and half gRPC, against the release binary for
# DURATION seconds (default 600; CI runs 30). Reports requests, outcomes by protocol and code,
# p50/p99 and the server's RSS over time, and fails if RSS after warm-up grows by more than
# half or any request ends in a 5xx or an unexpected gRPC error.
#   bash tests/soak/soak.sh [DURATION] [CONCURRENCY]
# With RETENTION set (a duration such as 2m), the server keeps done Operations and idempotency
# keys that long, and the soak also fails if the data file grows by more than a tenth (and
# 512 KiB) over the second half of the run: under retention a steady workload's file is flat.
#   RETENTION=2m bash tests/soak/soak.sh 900
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-600}
concurrency=${2:-32}
. tests/lib.sh

cargo build --release --locked --quiet --bin compute-gateway --example loadgen
flags=(--create-delay-ms 50)
if [ -n "${RETENTION:-}" ]; then
  flags+=(--operation-retention "$RETENTION" --idempotency-key-retention "$RETENTION")
fi
start_serve server "${flags[@]}"
pid=${pids[-1]}
grpc=$(ready_addr server grpc)
http=$(ready_addr server http)
sample=$(( duration >= 300 ? 30 : 5 ))
target/release/examples/loadgen --http "$http" --grpc "$grpc" --duration "$duration" \
  --concurrency "$concurrency" --pid "$pid" --data-dir "$work/server" --sample "$sample" \
  | tee "$work/report"

RETENTION=${RETENTION:-} python3 - "$work/report" <<'PY'
import os
import json, sys
summary = json.loads(next(l for l in open(sys.argv[1]) if l.startswith("SUMMARY "))[8:])
# The outcomes the mix can rightly produce, the same over both protocols: success, NOT_FOUND
# (the latest of a family not made yet) and FAILED_PRECONDITION (cancelling a finished
# Operation: HTTP 400 with code 9). Anything else, a REST 4xx included, is a failure.
expected = {"grpc OK", "grpc FailedPrecondition", "grpc NotFound",
            "rest 200", "rest 404 code 5", "rest 400 code 9"}
bad = {k: v for k, v in summary["outcomes"].items() if k not in expected}
samples = [s["rss_kib"] for s in summary["samples"] if s["rss_kib"]]
warm = samples[len(samples) // 2] if samples else None
end = summary["rss_end_kib"]
data = [s["data_kib"] for s in summary["samples"] if s.get("data_kib") is not None]
half = data[len(data) // 2] if data else None
print(f"data file: {data[0] if data else None} KiB at the first sample, {half} KiB at half time, "
      f"{data[-1] if data else None} KiB at the end, largest {max(data) if data else None} KiB")
print(f"soak: {summary['requests']} requests, p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
      f"RSS start {summary['rss_start_kib']} KiB, after warm-up {warm} KiB, end {end} KiB, failures {sum(bad.values())}")
ok = not bad and summary["requests"] > 0 and warm is not None and end and end <= warm * 1.5
if os.environ["RETENTION"]:
    if half is None:
        print("no data-file samples: the retention check could not run")
        ok = False
    elif data[-1] > half * 1.1 + 512:
        print(f"under retention the data file grew from {half} to {data[-1]} KiB over the second half")
        ok = False
if bad:
    print("unexpected outcomes:", bad)
if warm is None or not end:
    print("no RSS samples: the memory check could not run")
elif end > warm * 1.5:
    print(f"RSS grew from {warm} to {end} KiB after warm-up")
sys.exit(0 if ok else 1)
PY
