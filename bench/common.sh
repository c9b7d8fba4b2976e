# Sourced by the bench/*/run.sh scripts: finding the binary under test and
# checking tools. Expects $root (the repository) to be set.

die() { echo "run.sh: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found; $2"
}

# find_scalekiq USAGE [PATH]: sets $scalekiq (absolute) and $build_type,
# from PATH or else build-bench/ then build/; warns about a Debug build.
find_scalekiq() {
  local usage="$1"
  shift
  if [[ $# -gt 1 ]]; then
    die "usage: $usage [path/to/scalekiq]"
  elif [[ $# -eq 1 ]]; then
    scalekiq="$1"
  else
    scalekiq=""
    local candidate
    for candidate in "$root/build-bench/scalekiq" "$root/build/scalekiq"; do
      if [[ -x "$candidate" ]]; then scalekiq="$candidate"; break; fi
    done
    [[ -n "$scalekiq" ]] || die "no scalekiq binary in build-bench/ or build/; build one:
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build-bench -j2 --target scalekiq
or pass its path: $usage path/to/scalekiq"
  fi
  [[ -x "$scalekiq" ]] || die "$scalekiq is not an executable file"
  scalekiq="$(cd "$(dirname "$scalekiq")" && pwd)/$(basename "$scalekiq")"

  build_type="unknown"
  local cache
  cache="$(dirname "$scalekiq")/CMakeCache.txt"
  if [[ -f "$cache" ]]; then
    build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$cache")"
    [[ -n "$build_type" ]] || build_type="unknown"
  fi
  if [[ "$build_type" == "Debug" ]]; then
    echo "run.sh: warning: $scalekiq is a Debug build; figures will not be representative" >&2
  fi
}
