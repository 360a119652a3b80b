#!/usr/bin/env bash
# What `--auth iam` costs a durable REST PATCH: two `backend`s, one with `--auth none` and one
# with `--auth iam` (a service account key made by `iam create-key`, an editor binding in the
# config), each behind its own `gateway`; the same PATCH goes to both, rounds interleaved, the
# iam one with `Authorization: Bearer <token>` (a token from the JWT exchange), the none one
# without. Prints req/s and the CPU-µs per request of each gateway and each backend, and the
# ratios iam / none per round with their median. Authentication sits in the backend (one layer
# for both ports), so the gateway only carries the header.
#
#   bash bench/auth.sh                     # DURATION=10 WARMUP=2 ROUNDS=3 CONNS=32
#
# Needs wrk and the Python SDK's venv (made as tests/sdk/run.sh makes it) for signing the JWT.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
anchor=${ANCHOR_DIR:-$root/../shared/anchors/grpc-gateway}
. bench/lib.sh
command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
venv=${CG_SDK_VENV:-$root/target/sdk-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

cargo build --release --locked --quiet --bin compute-gateway
bin=target/release/compute-gateway
$bin iam create-key --service-account-id ajebench --data-dir "$work/iam" --out "$work/key.json" 2>/dev/null
echo '{"folderBindings": {"b1gbench": [{"roleId": "editor", "subject": {"id": "ajebench", "type": "serviceAccount"}}]}}' >"$work/iam.json"

declare -A gw_port gw_pid be_pid
for mode in none iam; do
  be=$(free_port); gp=$(free_port)
  taskset -c 1 $bin backend --grpc-listen "127.0.0.1:$be" --data-dir "$work/$mode" --auth "$mode" \
    --iam-config "$work/iam.json" 2>"$work/backend-$mode.log" &
  be_pid[$mode]=$!; pids+=($!)
  taskset -c 0 $bin gateway --http-listen "127.0.0.1:$gp" --backend "http://127.0.0.1:$be" 2>"$work/gateway-$mode.log" &
  gw_pid[$mode]=$!; pids+=($!)
  gw_port[$mode]=$gp
  wait_port "$be"; wait_port "$gp"
done

# A token for the iam pair: a PS256 JWT as the SDKs sign it, exchanged over REST.
jwt=$("$venv/bin/python" - "$work/key.json" <<'PY'
import json, sys, time, jwt
key = json.load(open(sys.argv[1]))
now = int(time.time())
print(jwt.encode({"iss": key["service_account_id"], "aud": "https://iam.api.cloud.yandex.net/iam/v1/tokens",
                  "iat": now, "exp": now + 3600}, key["private_key"], algorithm="PS256",
                 headers={"kid": key["id"]}))
PY
)
token=$(curl -sf -X POST "http://127.0.0.1:${gw_port[iam]}/iam/v1/tokens" -d "{\"jwt\":\"$jwt\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["iamToken"])')
declare -A header image
header[none]=""; header[iam]="Authorization: Bearer $token"
for mode in none iam; do
  op=$(curl -sf -X POST "http://127.0.0.1:${gw_port[$mode]}/compute/v1/images" ${header[$mode]:+-H "${header[$mode]}"} \
    -d '{"folderId":"b1gbench","name":"bench","diskId":"d"}')
  image[$mode]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metadata"]["imageId"])' "$op")
done
sleep 1 # the creates complete (create delay 200 ms)

ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
body='{"updateMask":"name,labels","name":"n","labels":{"a":"b"}}'
declare -A result
echo "| scenario | req/s | gateway CPU-µs/req | backend CPU-µs/req |"
echo "|---|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
  for mode in none iam; do
    url="http://127.0.0.1:${gw_port[$mode]}/compute/v1/images/${image[$mode]}"
    args=(-t1 -c"$CONNS" -s "$anchor/patch.lua")
    [ -z "${header[$mode]}" ] || args+=(-H "${header[$mode]}")
    WRK_METHOD=PATCH WRK_BODY=$body taskset -c 1 wrk "${args[@]}" -d"${WARMUP}s" "$url" >/dev/null
    g0=$(ticks "${gw_pid[$mode]}"); b0=$(ticks "${be_pid[$mode]}")
    out=$(WRK_METHOD=PATCH WRK_BODY=$body taskset -c 1 wrk "${args[@]}" -d"${DURATION}s" "$url")
    g1=$(ticks "${gw_pid[$mode]}"); b1=$(ticks "${be_pid[$mode]}")
    n=$(awk -F'[= ]' '/^lua: requests=/{print $3}' <<<"$out")
    bad=$(awk -F'[= ]' '/^lua: requests=/{print $5}' <<<"$out")
    [ "$bad" = 0 ] || { echo "bench: $bad failed requests ($mode)" >&2; cat "$work/backend-$mode.log" | tail -5 >&2; exit 1; }
    gcpu=$(python3 -c "print(f'{($g1-$g0)/$hz*1e6/$n:.1f}')"); bcpu=$(python3 -c "print(f'{($b1-$b0)/$hz*1e6/$n:.1f}')")
    echo "| --auth $mode (round $r) | $((n / DURATION)) | $gcpu | $bcpu |"
    result[$mode,$r]="$gcpu $bcpu"
  done
done
echo
echo "| iam / none | $(for r in $(seq "$ROUNDS"); do printf 'round %s | ' "$r"; done)median |"
echo "|---|$(for r in $(seq "$ROUNDS"); do printf -- '---|'; done)---|"
for i in 1 2; do
  what=$([ $i = 1 ] && echo "gateway CPU per PATCH" || echo "backend CPU per PATCH")
  ratios=$(for r in $(seq "$ROUNDS"); do
    python3 -c "a='${result[iam,$r]}'.split(); b='${result[none,$r]}'.split(); print(f'{float(a[$i-1])/float(b[$i-1]):.2f}')"
  done)
  median=$(sort -n <<<"$ratios" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  echo "| $what | $(tr '\n' '|' <<<"$ratios" | sed 's/|/ | /g')$median |"
done
