#!/usr/bin/env bash
# tools/run_fuzz.sh — runs the libFuzzer targets built by `make fuzz-build` (`make fuzz` calls
# this), each for FUZZ_SECONDS, one after the other.
#
#   FUZZ_SECONDS=600 bash tools/run_fuzz.sh safetensors weights ...
#
# For each target T: seeds from fuzz/make_seeds, plus tests/fixtures for the
# two safetensors targets), the growing corpus in build/fuzz/corpus/T (kept between runs, never
# committed), a finding (crash, leak, timeout, an allocation over the limit) in
# build/fuzz/artifacts/T/, the log in build/fuzz/T.log. Prints one line per target with its
# executions; exits 1 when any target found something.
#
# The limits are the contract of docs/reliability.md: no single input may take FUZZ_TIMEOUT
# seconds, and no allocation may exceed FUZZ_MALLOC_MB (a reader that allocates what a header
# claims before checking it against the file is found here).
set -uo pipefail
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
cd "$(dirname "$0")/.."
: "${FUZZ_SECONDS:=60}" "${FUZZ_TIMEOUT:=10}" "${FUZZ_MALLOC_MB:=1024}" "${FUZZ_RSS_MB:=2048}"
# FUZZ_SEED=N makes a run repeatable (CI sets it, so a red CI is a finding anyone can replay).
SEED_FLAG=(); [ -n "${FUZZ_SEED:-}" ] && SEED_FLAG=(-seed="$FUZZ_SEED")
B=build/fuzz
[ $# -gt 0 ] || { echo "usage: FUZZ_SECONDS=N $0 TARGET..." >&2; exit 2; }

# Seeds are made afresh per run, in a folder of this run (two runs at once do not collide).
SEEDS=$(mktemp -d "$B/seeds.XXXXXX") || exit 1
trap 'rm -rf "$SEEDS"' EXIT
"$B/make_seeds" "$SEEDS" || { echo "run_fuzz: cannot write the seed corpus" >&2; exit 1; }
for t in safetensors weights; do cp tests/fixtures/*.safetensors "$SEEDS/$t/"; done

status=0
for t in "$@"; do
  bin="$B/fuzz_$t"
  [ -x "$bin" ] || { echo "run_fuzz: $bin is missing: make fuzz-build" >&2; exit 1; }
  mkdir -p "$B/corpus/$t" "$B/artifacts/$t"
  "$bin" -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" \
    -malloc_limit_mb="$FUZZ_MALLOC_MB" -max_len=262144 -print_final_stats=1 "${SEED_FLAG[@]}" \
    -artifact_prefix="$B/artifacts/$t/" "$B/corpus/$t" "$SEEDS/$t" >"$B/$t.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$B/$t.log" | tail -n1)
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: ok, ${execs:-?} executions in ${FUZZ_SECONDS} s, corpus $(ls "$B/corpus/$t" | wc -l) inputs"
  else
    status=1
    echo "fuzz $t: FINDING (exit $rc) after ${execs:-?} executions: $(ls "$B/artifacts/$t" | head -n3 | tr '\n' ' ')(see $B/$t.log)"
    grep -m3 -E 'ERROR: |runtime error|SUMMARY' "$B/$t.log" | sed 's/^/    /'
  fi
done
exit $status
