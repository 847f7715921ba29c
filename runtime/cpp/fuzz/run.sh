#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time (make cpp-fuzz):
#   run.sh BUILD_DIR SEEDS_DIR [SECONDS_PER_TARGET]
# Each target starts from its seeds plus the corpus it grew in earlier runs (BUILD_DIR/fuzz-corpus);
# a crash, leak, sanitizer report or timeout leaves its input in BUILD_DIR/fuzz-crashes and fails.
set -uo pipefail
build=$1 seeds=$2 per=${3:-8}
mkdir -p "$build/fuzz-crashes"
failed=() total=0
for bin in "$build"/fuzz/fuzz_*; do
  [[ -x $bin ]] || continue
  name=${bin##*/fuzz_}
  corpus="$build/fuzz-corpus/$name" log="$build/fuzz-$name.log"
  mkdir -p "$corpus"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-crashes/$name-" "$corpus" "$seeds/$name" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  total=$((total + ${execs:-0}))
  if ((rc == 0)); then
    echo "[fuzz] $name: ${execs:-0} executions, $(ls "$corpus" | wc -l) corpus inputs, no findings"
  else
    echo "[fuzz] $name: FAILED (rc $rc) after ${execs:-0} executions; log $log:"
    grep -E 'ERROR|SUMMARY|==[0-9]+==|Test unit written' "$log" | head -20
    failed+=("$name")
  fi
done
echo "[fuzz] $total executions in all"
if ((${#failed[@]})); then echo "[fuzz] findings in: ${failed[*]}"; exit 1; fi
