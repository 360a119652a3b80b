#!/usr/bin/env bash
# Runs one integration test binary N times in a row (built once) and counts the failures:
# the flake check, not part of CI.   bash tests/repeat.sh hostile 200
set -euo pipefail
cd "$(dirname "$0")/.."
test=${1:?test binary name, e.g. hostile}
runs=${2:-200}
bin=$(cargo test --no-run --message-format=json --test "$test" 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
failures=0
for i in $(seq 1 "$runs"); do
  if ! "$bin" -q >"/tmp/repeat-$test.log" 2>&1; then
    failures=$((failures + 1))
    echo "run $i failed:"
    grep -a -E "panicked|FAILED" "/tmp/repeat-$test.log" | head -5
  fi
done
echo "$test: $failures failures in $runs runs"
[ "$failures" -eq 0 ]
