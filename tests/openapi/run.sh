#!/usr/bin/env bash
# The OpenAPI document against real validators: builds the release binary, starts it on free
# ports, validates /openapi.json with openapi-spec-validator, then runs schemathesis over every
# operation (bounded examples): no 5xx, every status, content type and body matches the schema.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
. tests/lib.sh

cargo build --release --locked --quiet --bin compute-gateway
venv=${CG_OPENAPI_VENV:-$root/target/openapi-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/openapi/requirements.txt

start_serve server --create-delay-ms 20
http=$(ready_addr server http)

curl -sf "http://$http/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
# The served document is the one `compute-gateway openapi` prints.
target/release/compute-gateway openapi | cmp - "$work/openapi.json"

"$venv/bin/schemathesis" run "http://$http/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "${CG_SCHEMATHESIS_EXAMPLES:-25}" \
  --workers 2 --seed 20261128 --warnings off
