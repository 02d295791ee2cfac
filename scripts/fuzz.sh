#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/, the `fuzz` preset: clang++, ASan + UBSan, build-fuzz/)
# and runs each for a given time, or replays the saved inputs.
#
#   scripts/fuzz.sh [--time=SECONDS] [--replay] [--ci] [TARGET...]    TARGET: npy desc post_ops api (default: all)
#
# --ci: the form .ci/run uses: the replay, then a fixed number of inputs per target from a fixed
# seed (-runs, -seed=1), so a run gives the same inputs on every machine and CI cannot turn red on
# a finding that depends on luck; open-ended runs (--time) are for finding new bugs by hand.
#
# A run first replays fuzz/regressions/TARGET/ (every crash found so far, named after its finding
# in docs/robustness.md; CONVKIT_FUZZ_STRICT=1, so the harnesses do not skip it): one that fails
# fails the run, unless its finding is listed in fuzz/regressions/OPEN (not fixed yet). Then it fuzzes from the seeds in
# fuzz/corpus/TARGET/ plus build-fuzz/corpus/TARGET/ (what earlier runs found; the tree is never
# written). Crashes land in build-fuzz/artifacts/TARGET/, the log in build-fuzz/logs/TARGET.log,
# and one summary line per target gives the executions. Exit status: 0 clean, 1 a new crash or a
# regression input failing.
#
# Long runs: nice -n 19, and each waits while /tmp/convkit_quiet exists (someone is measuring).
# An input counts as a hang after 60 s: under nice 19 on a loaded 2-core machine a 20 s limit
# flagged a starved .npy read (0.1 s when replayed).
set -euo pipefail
cd "$(dirname "$0")/.."

time_s=60
replay_only=0
ci=0
targets=()
for a in "$@"; do
  case "$a" in
    --time=*) time_s="${a#--time=}" ;;
    --replay) replay_only=1 ;;
    --ci) ci=1 ;;
    npy|desc|post_ops|api) targets+=("$a") ;;
    *) echo "fuzz.sh: unknown argument '$a' (see the header of scripts/fuzz.sh)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(npy desc post_ops api)

wait_quiet() { while [ -e /tmp/convkit_quiet ]; do sleep 60; done; }

wait_quiet
cmake --preset fuzz -G Ninja >/dev/null
nice -n 10 cmake --build --preset fuzz -j"$(nproc)"

B=build-fuzz
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# One OpenMP thread: reproducible runs, and the second core stays with the machine's other work.
export OMP_NUM_THREADS=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "$B/corpus/$t" "$B/artifacts/$t" "$B/logs"
  bin="$B/fuzz/fuzz_$t"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  # Replay: every saved regression input must now pass.
  if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    for f in fuzz/regressions/"$t"/*; do
      name=$(basename "$f")
      id=${name%%_*}
      open_=0
      grep -qx "$id" fuzz/regressions/OPEN 2>/dev/null && open_=1
      if CONVKIT_FUZZ_STRICT=1 "$bin" "$f" >"$B/logs/$t.replay.log" 2>&1; then
        if [ "$open_" = 1 ]; then
          echo "fuzz $t: regression $name: passes now: remove $id from fuzz/regressions/OPEN"
        else
          echo "fuzz $t: regression $name: passes"
        fi
      else
        why=$(grep -m1 -E 'convkit fuzz finding|ERROR:|runtime error' "$B/logs/$t.replay.log" | cut -c1-200)
        if [ "$open_" = 1 ]; then
          echo "fuzz $t: regression $name: still open ($id, docs/robustness.md)"
        else
          echo "fuzz $t: regression $name: FAILS ($why)"
          status=1
        fi
      fi
    done
  fi
  [ "$replay_only" = 1 ] && continue
  wait_quiet
  before=$(ls "$B/artifacts/$t" | wc -l)
  span="in ${time_s} s"
  set +e
  if [ "$ci" = 1 ]; then
    # Fixed inputs: the seeds, then -runs mutations from seed 1 (the API harness is slow: every new
    # problem builds primitives). Nothing is added to a corpus folder, so every run is the same.
    runs=200000
    [ "$t" = api ] && runs=1000
    limit=(-runs="$runs" -seed=1)
    # libFuzzer writes what it finds into its first corpus folder: an empty scratch one, not the tree.
    rm -rf "$B/ci-corpus/$t" && mkdir -p "$B/ci-corpus/$t"
    corpora=("$B/ci-corpus/$t" "fuzz/corpus/$t")
    span="(-runs=$runs -seed=1)"
  else
    limit=(-max_total_time="$time_s")
    corpora=("$B/corpus/$t" "fuzz/corpus/$t")
  fi
  nice -n 19 "$bin" "${limit[@]}" -timeout=60 -rss_limit_mb=3072 -max_len=4096 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$B/artifacts/$t/" "${corpora[@]}" >"$B/logs/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$B/logs/$t.log" | grep -o '[0-9]*$' || true)
  after=$(ls "$B/artifacts/$t" | wc -l)
  corpus=$(ls "$B/corpus/$t" | wc -l)
  if [ "$rc" -ne 0 ] || [ "$after" -ne "$before" ]; then
    echo "fuzz $t: ${execs:-?} executions $span, CRASH (exit $rc): $B/artifacts/$t/, log $B/logs/$t.log"
    grep -m3 -E 'convkit fuzz finding|ERROR: |runtime error' "$B/logs/$t.log" | cut -c1-300 || true
    status=1
  else
    echo "fuzz $t: ${execs:-?} executions $span, no crash (corpus $corpus inputs)"
  fi
done
exit $status
