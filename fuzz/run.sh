#!/usr/bin/env bash
# fuzz/run.sh [RUNS]: builds the libFuzzer targets with clang (ASan, UBSan,
# -Werror) and runs each one RUNS times (default 20000) from a copy of its
# seed corpus, so the repository is never written to. One line per target;
# exits non-zero, naming the reproducer, on any crash, leak, UBSan report
# or failed check. Installs nothing.
#
#   SCALEKIQ_FUZZ_BUILD_DIR   build directory (default build-fuzz, relative
#                             to the repository)
#   SCALEKIQ_FUZZ_JOBS        parallel build jobs (default 2)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-20000}
BUILD=${SCALEKIQ_FUZZ_BUILD_DIR:-build-fuzz}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
JOBS=${SCALEKIQ_FUZZ_JOBS:-2}
SEED=1 # fixed: the same inputs on every run, so a failure reproduces

if ! [[ $RUNS =~ ^[0-9]+$ ]]; then
  echo "fuzz/run.sh: RUNS must be a whole number, not '$RUNS'" >&2
  exit 2
fi
if ! command -v clang >/dev/null 2>&1; then
  echo "fuzz/run.sh: clang is not installed; the fuzz targets need clang's libFuzzer" >&2
  echo "fuzz/run.sh: on Debian 12: apt-get install clang" >&2
  exit 1
fi

echo "==> building the fuzz targets in $BUILD"
mkdir -p "$BUILD"
log=$BUILD/fuzz-build.log
if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
         -DSCALEKIQ_FUZZ=ON -DSCALEKIQ_TESTS=OFF -DSCALEKIQ_WERROR=ON &&
       cmake --build "$BUILD" --target fuzz -j"$JOBS"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "fuzz/run.sh: the fuzz build failed (log above, also in $log)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/scalekiq-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT
# Reproducers outlive the temporary directory, in the (git-ignored) build.
artifacts=$BUILD/fuzz/artifacts
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

failed=0
for src in "$ROOT"/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  name=${name#fuzz_}
  corpus=$work/corpus-$name
  mkdir -p "$corpus"
  if [ -d "$ROOT/fuzz/corpus/$name" ]; then cp -r "$ROOT/fuzz/corpus/$name/." "$corpus/"; fi
  mkdir -p "$artifacts/$name"
  out=$work/$name.log
  start=$(date +%s.%N)
  status=0
  "$BUILD/fuzz/fuzz_$name" -runs="$RUNS" -max_len=65536 -timeout=10 -seed="$SEED" \
    -print_final_stats=1 -artifact_prefix="$artifacts/$name/" "$corpus" >"$out" 2>&1 ||
    status=$?
  secs=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n1)
  reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out" | tail -n1)
  crashes=0
  if [ "$status" -ne 0 ] || [ -n "$reproducer" ]; then crashes=1; fi
  printf '%-14s runs=%-8s time=%5ss corpus=%-4s crashes=%d\n' "$name" "${runs:-?}" \
    "$secs" "$(find "$corpus" -type f | wc -l)" "$crashes"
  if [ "$crashes" -ne 0 ]; then
    failed=1
    grep -E 'ERROR:|runtime error:|fuzz check failed|SUMMARY:' "$out" | head -n 20 >&2 || true
    echo "fuzz/run.sh: $name failed (exit $status); reproducer: ${reproducer:-none written}" >&2
    echo "fuzz/run.sh: replay with: $BUILD/fuzz/fuzz_$name ${reproducer:-}" >&2
    cp "$out" "$artifacts/$name/last.log"
    echo "fuzz/run.sh: full output: $artifacts/$name/last.log" >&2
  fi
done
exit $failed
