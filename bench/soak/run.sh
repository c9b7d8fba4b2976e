#!/usr/bin/env bash
# bench/soak/run.sh [path/to/scalekiq]
#
# The soak: three `scalekiq run` agents against one private redis-server and
# the fake Heroku Platform API for DURATION seconds of latency events, with
# faults injected at random times (kill -9, SIGSTOP past the lock TTL, Redis
# restarts and DEBUG SLEEP, API 503/429/stalls/cut replies/lost replies,
# SIGTERM + restart), checking the invariants as it goes and at the end.
# The work is in soak.py; this finds the binary, checks the tools and keeps
# the scratch directory's lifetime. See bench/README.md, "Soak".
# Never run in CI: it takes DURATION seconds (an hour by default).
#
# Environment:
#   DURATION=3600   seconds of events and faults
#   SEED=20261130   the run's random seed (events and faults repeat with it)
#   FAULTS=a,b,...  only these fault kinds (default: all; soak.py lists them)
#   OUT=bench/out/soak.json   the figures and every violation, as JSON
#   KEEP_TMP=1      keep the agents' logs and the API's request log
# Exit status: 0 when no invariant was violated, 1 otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

duration="${DURATION:-3600}"
seed="${SEED:-20261130}"
out="${OUT:-$root/bench/out/soak.json}"

# shellcheck source=../common.sh
. "$root/bench/common.sh"
find_scalekiq "bash bench/soak/run.sh" "$@"

need redis-server "install it: apt-get install redis-server"
need python3 "install it: apt-get install python3"
[[ "$duration" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be seconds, got '$duration'"
[[ "$seed" =~ ^[0-9]+$ ]] || die "SEED must be a whole number, got '$seed'"
mkdir -p "$(dirname "$out")"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/scalekiq-soak.XXXXXX")"
py_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # soak.py stops its own children; a signal here only asks it to finish early.
  if [[ -n "$py_pid" ]] && kill -0 "$py_pid" 2>/dev/null; then
    wait "$py_pid" 2>/dev/null || true
  fi
  if [[ -n "${KEEP_TMP:-}" ]] || (( rc != 0 )); then
    echo "run.sh: logs kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
# Passed on to soak.py, which then ends the run early and reports it as partial.
trap '[[ -n "$py_pid" ]] && kill -TERM "$py_pid" 2>/dev/null' INT TERM

echo "run.sh: $scalekiq ($build_type build), DURATION=$duration SEED=$seed, scratch $tmp" >&2
python3 "$here/soak.py" --scalekiq "$scalekiq" --root "$root" --tmp "$tmp" \
  --out "$out" --duration "$duration" --seed "$seed" --faults "${FAULTS:-}" &
py_pid=$!
rc=0
while true; do
  wait "$py_pid" && rc=0 || rc=$?
  # wait returns early (status > 128) when a trapped signal arrives
  kill -0 "$py_pid" 2>/dev/null || break
done
py_pid=""
echo "run.sh: figures in $out" >&2
exit "$rc"
