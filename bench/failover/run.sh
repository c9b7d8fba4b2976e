#!/usr/bin/env bash
# bench/failover/run.sh [path/to/scalekiq]
#
# Leader election, measured on a private redis-server with real
# `scalekiq run` processes (dry run, no Heroku API):
#   1. failover after kill -9 of the leader: time until another agent holds
#      N/leader, and until the new leader acts (its first poll);
#   2. graceful handover after SIGTERM of the leader;
#   3. Redis commands per second, RSS and CPU of N idle followers
#      (N = 1, 10, 100), with the default timing and the test timing.
# Prints a markdown report and writes it to bench/out/failover.md.
# See bench/README.md, "Failover and idle cost (leader election)".
#
# Environment:
#   TRIALS=30                 trials of parts 1 and 2 each
#   POLL=0.5 TTL=1.5 TICK=0.5 timing of parts 1, 2 and of part 3's test settings
#   FOLLOWERS="0 1 10 100"    part 3's follower counts (0, the leader alone, is
#                             always run: it is subtracted)
#   WINDOW=10                 part 3's window in seconds (at least 20 with the
#                             default 5 s tick)
#   PARTS="kill term idle"    which parts to run
#   OUT=bench/out/failover.md
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

trials="${TRIALS:-30}"
poll="${POLL:-0.5}"
ttl="${TTL:-1.5}"
tick="${TICK:-0.5}"
followers="${FOLLOWERS:-0 1 10 100}"
window="${WINDOW:-10}"
parts="${PARTS:-kill term idle}"
out="${OUT:-$root/bench/out/failover.md}"

# shellcheck source=../common.sh
. "$root/bench/common.sh"
find_scalekiq "bash bench/failover/run.sh" "$@"

# --- tools -----------------------------------------------------------------
need redis-server "install it: apt-get install redis-server"
need redis-cli "install it: apt-get install redis-tools"
need python3 "install it: apt-get install python3"

for n in $followers; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "FOLLOWERS must be whole numbers, got '$n'"
done

# --- scratch dir, Redis, and the cleanup of everything started ---------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/scalekiq-failover.XXXXXX")"
pidfile="$tmp/agents.pids"
: >"$pidfile"
redis_pid=""
py_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$py_pid" ]] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$py_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$py_pid" 2>/dev/null || true
    wait "$py_pid" 2>/dev/null || true
  fi
  # Every agent the harness started, by pid, if it still runs this binary.
  local pid left=0
  while read -r pid; do
    [[ -n "$pid" ]] || continue
    if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$scalekiq" ]]; then
      kill -KILL "$pid" 2>/dev/null || true
      left=$((left + 1))
    fi
  done <"$pidfile"
  (( left == 0 )) || echo "run.sh: killed $left agent(s) left running" >&2
  if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if (( rc != 0 )) && [[ -z "${KEEP_TMP:-}" ]]; then
    echo "run.sh: failed (status $rc); to keep the agents' logs for a look, run again with KEEP_TMP=1" >&2
  fi
  if [[ -n "${KEEP_TMP:-}" ]]; then
    echo "run.sh: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port=""
for _attempt in 1 2 3 4 5; do
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
  redis_pid=$!
  for _ in $(seq 1 50); do
    if [[ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" == "PONG" ]]; then
      break 2
    fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
done
[[ -n "$redis_pid" ]] || die "redis-server did not start; its log:
$(cat "$tmp/redis.log" 2>/dev/null)"

# --- the machine -------------------------------------------------------------
cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
[[ -n "$cpu_model" ]] || cpu_model="unknown"
{
  echo "Machine: $(nproc) CPUs ($cpu_model), Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d" " -f1-3 /proc/loadavg) at start."
  echo "Versions: $("$scalekiq" --version 2>/dev/null | head -n 1) ($build_type build);" \
    "$(redis-server --version | sed -E 's/^Redis server v=([^ ]+).*/redis-server \1/');" \
    "$(python3 --version)."
} >"$tmp/machine.md"

# --- measure ------------------------------------------------------------------
echo "scalekiq: $scalekiq ($build_type); redis-server on 127.0.0.1:$port; scratch $tmp" >&2
start_s=$SECONDS
# In the background, so that a signal to this script runs its trap at once
# (bash runs traps only between foreground commands).
python3 "$here/bench.py" --scalekiq "$scalekiq" --port "$port" \
  --workdir "$tmp/agents" --pidfile "$pidfile" --machine "$tmp/machine.md" \
  --out "$tmp/report.md" --json "$tmp/results.json" \
  --trials "$trials" --poll "$poll" --ttl "$ttl" --tick "$tick" \
  --followers "$followers" --window "$window" --parts "$parts" >"$tmp/stdout.md" &
py_pid=$!
wait "$py_pid" || die "the harness failed (status $?); see the messages above"
py_pid=""

mkdir -p "$(dirname "$out")"
{
  cat "$tmp/report.md"
  echo "Run time: $((SECONDS - start_s)) s. Load average at the end: $(cut -d" " -f1-3 /proc/loadavg) (this run's own load included)."
} >"$out"
cp "$tmp/results.json" "${out%.md}.json"
cat "$out"
echo >&2
echo "run.sh: report written to $out (raw figures: ${out%.md}.json)" >&2
