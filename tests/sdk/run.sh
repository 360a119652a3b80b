#!/usr/bin/env bash
# The official clients against the real binary: builds the release binary, starts it twice on
# free ports with temporary data dirs (plaintext, and TLS with a certificate made here), runs
#   - tests/sdk/python: the official Python SDK (stubs, the SDK's TLS create-and-wait path, a
#     grpcurl-style reflection client, and the REST reference with `requests`), under pytest;
#   - tests/sdk/node: the official Node.js SDK over TLS, under node's test runner;
# then stops both servers. Needs python3 and node; installs the pinned packages itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked --quiet
venv=${CG_SDK_VENV:-$root/target/sdk-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
(cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)
"$venv/bin/python" tests/sdk/make_cert.py "$work"

# Starts `serve` on port 0 and waits for its --ready-file; prints "GRPC HTTP".
start() {
  local name=$1; shift
  target/release/compute-gateway serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --data-dir "$work/$name" --ready-file "$work/$name.json" --create-delay-ms 300 "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    [ -s "$work/$name.json" ] && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/$name.log" >&2; echo "$name did not start" >&2; exit 1; }
    sleep 0.1
  done
  [ -s "$work/$name.json" ] || { echo "$name not ready in 30 s" >&2; exit 1; }
}
addr() { "$venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

start plain
start tls --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
export CG_GRPC=$(addr "$work/plain.json" grpc) CG_HTTP=$(addr "$work/plain.json" http)
export CG_TLS_GRPC=$(addr "$work/tls.json" grpc) CG_TLS_HTTP=$(addr "$work/tls.json" http)
export CG_TLS_CERT=$work/cert.pem

echo "== Python: official SDK, reflection, REST (plaintext $CG_GRPC / $CG_HTTP, TLS $CG_TLS_GRPC)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk/python
echo "== Node.js: official SDK over TLS ($CG_TLS_GRPC)"
(cd tests/sdk/node && node --test)
