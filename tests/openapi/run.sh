#!/usr/bin/env bash
# The OpenAPI document against real validators: builds the release binary, starts it on free
# ports, validates /openapi.json with openapi-spec-validator, then runs schemathesis over every
# operation (bounded examples): no 5xx, every status, content type and body matches the schema.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked --quiet --bin compute-gateway
venv=${CG_OPENAPI_VENV:-$root/target/openapi-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/openapi/requirements.txt

target/release/compute-gateway serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --data-dir "$work/data" --ready-file "$work/ready.json" --create-delay-ms 20 2>"$work/server.log" &
pid=$!
for _ in $(seq 300); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
http=$("$venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$work/ready.json")

curl -sf "http://$http/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
# The served document is the one `compute-gateway openapi` prints.
target/release/compute-gateway openapi | cmp - "$work/openapi.json"

"$venv/bin/schemathesis" run "http://$http/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "${CG_SCHEMATHESIS_EXAMPLES:-25}" \
  --workers 2 --seed 20261128 --warnings off
