#!/usr/bin/env bash
# List cost as a folder grows (issue 15, finding 9): `serve` (release) on a fresh data
# directory, filled to 1,000, 10,000 and 100,000 images by examples/listbench.rs, which prints a
# page of 1 and of 100 at each size, and an unrelated Get's latency while 16 clients list; then
# the ratios of the largest folder to the smallest (near 1 when a page costs O(page)).
#   bash bench/list.sh                 SIZES=1000,10000 bash bench/list.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --locked --quiet --bin compute-gateway --example listbench
start_serve list --create-delay-ms 0
target/release/examples/listbench --grpc "$(ready_addr list grpc)" --sizes "${SIZES:-1000,10000,100000}"
