# Shared by the scripts that drive the release binary (sourced after `set -euo pipefail` and a
# `cd` to the repository): a scratch directory and the processes to stop on exit, starting
# `serve` on free ports, and reading the addresses it bound.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start_serve NAME [FLAG...]: starts `serve` on port 0 with its data in $work/NAME and its log
# in $work/NAME.log, and waits for its ready file $work/NAME.json (30 s at most).
start_serve() {
  local name=$1; shift
  target/release/compute-gateway serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --data-dir "$work/$name" --ready-file "$work/$name.json" "$@" >"$work/$name.log" 2>&1 &
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
