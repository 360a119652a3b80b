#!/usr/bin/env bash
# Soak: a mixed load of every RPC, half REST and half gRPC, against the release binary for
# DURATION seconds (default 600; CI runs 30). Reports requests, outcomes by protocol and code,
# p50/p99 and the server's RSS over time, and fails if RSS after warm-up grows by more than
# half or any request ends in a 5xx or an unexpected gRPC error.
#   bash tests/soak/soak.sh [DURATION] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-600}
concurrency=${2:-32}
. tests/lib.sh

cargo build --release --locked --quiet --bin compute-gateway --example loadgen
start_serve server --create-delay-ms 50
pid=${pids[-1]}
grpc=$(ready_addr server grpc)
http=$(ready_addr server http)
sample=$(( duration >= 300 ? 30 : 5 ))
target/release/examples/loadgen --http "$http" --grpc "$grpc" --duration "$duration" \
  --concurrency "$concurrency" --pid "$pid" --sample "$sample" | tee "$work/report"

python3 - "$work/report" <<'PY'
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
print(f"soak: {summary['requests']} requests, p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
      f"RSS start {summary['rss_start_kib']} KiB, after warm-up {warm} KiB, end {end} KiB, failures {sum(bad.values())}")
ok = not bad and summary["requests"] > 0 and warm is not None and end and end <= warm * 1.5
if bad:
    print("unexpected outcomes:", bad)
if warm is None or not end:
    print("no RSS samples: the memory check could not run")
elif end > warm * 1.5:
    print(f"RSS grew from {warm} to {end} KiB after warm-up")
sys.exit(0 if ok else 1)
PY
