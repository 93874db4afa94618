#!/bin/sh
# Builds the libFuzzer harnesses (fuzz/) and runs each for SECONDS seconds (default 60) from the
# committed seed corpora; any crash, leak or sanitizer report fails. New inputs go to
# build/fuzz/corpus/, crashes to build/fuzz/artifacts/. Usage: scripts/fuzz.sh [SECONDS [HARNESS...]]
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh fuzz
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
seconds="${1:-60}"
[ $# -gt 0 ] && shift
harnesses="${*:-npy safetensors cli}"
for h in $harnesses; do
  corpus="build/fuzz/corpus/$h"
  mkdir -p "$corpus" build/fuzz/artifacts
  cp -n fuzz/corpus/"$h"/* "$corpus"/ 2>/dev/null || true
  echo "fuzz_$h: $seconds s"
  "build/fuzz/fuzz/fuzz_$h" -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
    -artifact_prefix=build/fuzz/artifacts/"$h"- "$corpus" 2>&1 | grep -E "^(stat::|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|INFO: Running)" || true
  # libFuzzer's exit status is lost in the pipe above: a crash leaves an artifact.
  if ls build/fuzz/artifacts/"$h"-* >/dev/null 2>&1; then
    echo "fuzz_$h: crash artifacts in build/fuzz/artifacts/" >&2
    exit 1
  fi
done
