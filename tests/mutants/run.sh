#!/usr/bin/env bash
# Mutation testing of the core with cargo-mutants (not in CI: it takes hours on 2 cores).
# Each group mutates its files one change at a time and runs the tests that guard them;
# a mutant no test fails is "missed". Results: target/mutants/<group>/mutants.out, and a
# table per file (caught / missed / unviable / timeout) from summary.py.
#   bash tests/mutants/run.sh [GROUP...]      groups: transcoding backend store (default all)
#   ITERATE=1 bash tests/mutants/run.sh backend  (after new tests: only the mutants missed
#                                                 last time, against the current HEAD)
#   FILES="src/json/timestamp.rs src/gateway/query.rs" bash tests/mutants/run.sh transcoding
#                                                (only these files of the group)
# It mutates copies of a clone of HEAD (target/mutants/work), JOBS (default 2) at a time, so
# the checkout you work in is never touched. Debug info is off: it halves the link time, and
# a mutant's build is most of its cost.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(transcoding backend store)

# The files of each group, and the tests that run against each of its mutants (the slow
# kill9 and soak runs are left out: the unit tests and these suites cover the same code).
files_transcoding=(src/json/any.rs src/json/field_mask.rs src/json/timestamp.rs
  src/gateway/template.rs src/gateway/matcher.rs src/gateway/query.rs
  src/gateway/request.rs src/gateway/response.rs src/gateway/error.rs src/gateway/value.rs)
tests_transcoding=(--lib --test=json_golden --test=rest_golden --test=rest_bad_input
  --test=rest_update --test=properties --test=hostile)
files_backend=(src/backend/images.rs src/backend/state.rs src/backend/validate.rs
  src/backend/access.rs src/backend/operations.rs src/backend/page.rs src/backend/filter.rs)
tests_backend=(--lib --test=grpc_images --test=concurrency --test=rest_update --test=rest_golden)
files_store=(src/store/embedded/writer.rs src/store/embedded/overlay.rs
  src/store/embedded/layout.rs src/store/embedded/mod.rs)
tests_store=(--lib --test=grpc_images --test=concurrency --test=faults)

work=target/mutants/work${ITERATE:+-iterate}
rm -rf "$work"
git clone --quiet --no-hardlinks . "$work"
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
for group in "${groups[@]}"; do
  files_var="files_${group}[@]"
  tests_var="tests_${group}[@]"
  args=()
  files=("${!files_var}")
  [ -z "${FILES:-}" ] || read -ra files <<<"$FILES"
  for f in "${files[@]}"; do args+=(--file "$f"); done
  # The test targets go to every cargo call, so that a mutant's build makes only them.
  for t in "${!tests_var}"; do args+=("--cargo-arg=$t"); done
  out="$root/target/mutants/$group"
  iterate=()
  if [ -n "${ITERATE:-}" ]; then
    iterate=(--iterate)
  else
    rm -rf "$out"
  fi
  mkdir -p "$out"
  (cd "$work" && nice cargo mutants --jobs "${JOBS:-2}" --no-shuffle "${iterate[@]}" \
     --minimum-test-timeout 60 --output "$out" "${args[@]}") || true
  python3 "$root/tests/mutants/summary.py" "$out/mutants.out/outcomes.json" || true
done
