# Shared by the bench scripts (sourced, after `set -euo pipefail` and `cd` to the repository):
# tests/lib.sh (scratch directory, processes stopped on exit), free ports, waiting for a port,
# and the image every scenario reads and updates.
. tests/lib.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }

# bench_image HTTP_PORT: creates an image through the gateway on HTTP_PORT, waits until it is
# READY, and prints its id.
bench_image() {
  local op image
  op=$(curl -sf -X POST "http://127.0.0.1:$1/compute/v1/images" -d '{"folderId":"b1gbench","name":"bench","diskId":"d"}')
  image=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metadata"]["imageId"])' "$op")
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$1/compute/v1/images/$image" | grep -q READY && break; sleep 0.05
  done
  echo "$image"
}
