#!/usr/bin/env bash
# The official clients against the real binary: builds the release binary, starts it twice on
# free ports with temporary data dirs (plaintext, TLS with a certificate made here, and TLS with
# --auth iam and a service account key made by `iam create-key`), runs
#   - tests/sdk/python: the official Python SDK (stubs, the SDK's TLS create-and-wait path, a
#     grpcurl-style reflection client, and the REST reference with `requests`), under pytest;
#   - tests/sdk/node: the official Node.js SDK over TLS, and its serviceAccountJson sign-in,
#     under node's test runner;
# then stops the servers. Needs python3 and node; installs the pinned packages itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
. tests/lib.sh

cargo build --release --locked --quiet
venv=${CG_SDK_VENV:-$root/target/sdk-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
(cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)
"$venv/bin/python" tests/sdk/make_cert.py "$work"

# A server with --auth iam, and a service account key made for it the way a user makes one.
iam_store=$(store_flags iam)
for sa in ajesdkpython ajesdknode; do
  # shellcheck disable=SC2086 # the store's flag and its value
  target/release/compute-gateway iam create-key --service-account-id $sa \
    $iam_store --out "$work/$sa.json"
done
cat >"$work/iam.json" <<'JSON'
{"folderBindings": {
  "b1gsdkiam": [{"roleId": "editor", "subject": {"id": "ajesdkpython", "type": "serviceAccount"}}],
  "b1gsdkiamnode": [{"roleId": "compute.editor", "subject": {"id": "ajesdknode", "type": "serviceAccount"}}]}}
JSON

start_serve plain --create-delay-ms 300
start_serve tls --create-delay-ms 300 --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
export CG_GRPC=$(ready_addr plain grpc) CG_HTTP=$(ready_addr plain http)
export CG_TLS_GRPC=$(ready_addr tls grpc) CG_TLS_HTTP=$(ready_addr tls http)
export CG_TLS_CERT=$work/cert.pem
start_serve iam --create-delay-ms 100 --auth iam --iam-config "$work/iam.json" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
export CG_IAM_GRPC=$(ready_addr iam grpc) CG_IAM_KEY=$work/ajesdkpython.json CG_IAM_FOLDER=b1gsdkiam
export CG_IAM_NODE_KEY=$work/ajesdknode.json CG_IAM_NODE_FOLDER=b1gsdkiamnode

echo "== Python: official SDK, reflection, REST (plaintext $CG_GRPC / $CG_HTTP, TLS $CG_TLS_GRPC)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk/python
echo "== Node.js: official SDK over TLS ($CG_TLS_GRPC), and signing in with serviceAccountJson ($CG_IAM_GRPC)"
# --test-force-exit: a test file's process ends with its tests, even if an SDK channel is left
# open (the SDK has no way to close its session).
(cd tests/sdk/node && GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=$work/cert.pem node --test --test-force-exit --test-timeout=120000)
