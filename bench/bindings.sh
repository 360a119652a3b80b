#!/usr/bin/env bash
# Write latency of an unrelated client during a burst of access-binding updates (issue 15,
# finding 2): `serve` (release) on a fresh data directory; examples/bindbench.rs measures one
# client's Updates alone and while ATTACKERS clients (default 8) send the largest binding
# updates the API allows to another image, and prints both and their ratio.
#   bash bench/bindings.sh             ATTACKERS=24 bash bench/bindings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --locked --quiet --bin compute-gateway --example bindbench
start_serve bind --create-delay-ms 0
target/release/examples/bindbench --grpc "$(ready_addr bind grpc)" --attackers "${ATTACKERS:-8}"
