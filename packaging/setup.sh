#!/usr/bin/env bash
# scalekiq's set-up script: installs what is missing (Debian 12, as root,
# with apt-get), builds, and runs the demo or the test suite.
#
#   packaging/setup.sh demo    build, then a latency event scaled end to end
#                              (throwaway Redis, fake Platform API)
#   packaging/setup.sh test    build with -Werror, then the whole test suite
#   packaging/setup.sh build   just build (./build/scalekiq)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${SCALEKIQ_BUILD_DIR:-$ROOT/build}

BUILD_DEPS=(gcc make cmake pkg-config libuv1-dev libhiredis-dev libcjson-dev
            libcurl4-openssl-dev libssl-dev)
TEST_DEPS=(libcriterion-dev redis-server redis-tools ruby-sidekiq python3 valgrind dpkg-dev
           faketime clang)

say() { printf '==> %s\n' "$*"; }

install_missing() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "scalekiq setup: missing packages: ${missing[*]}" >&2
    echo "scalekiq setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build DIR WERROR TYPE [CMAKE_ARGS...]
build() {
  local dir=$1 werror=$2 type=$3
  shift 3
  say "building in $dir"
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DSCALEKIQ_WERROR="$werror" "$@" >/dev/null
  local log="$dir/build.log"
  if ! cmake --build "$dir" -j"$(nproc)" >"$log" 2>&1; then
    cat "$log" >&2
    echo "scalekiq setup: the build failed (log above, also in $log)" >&2
    exit 1
  fi
}

# The whole suite again, built with AddressSanitizer and
# UndefinedBehaviorSanitizer (every finding fatal). Reports from any
# process, the test or a scalekiq it started, land in one folder: any
# report there fails the run, even when the test itself passed. The
# valgrind test is left out (memcheck cannot run a sanitized binary) and so
# is packaging (it does not depend on how the code was built).
sanitized_tests() {
  local dir="$BUILD-sanitize" reports
  build "$dir" ON Debug -DSCALEKIQ_SANITIZE=address,undefined
  reports=$(mktemp -d /tmp/scalekiq-sanitizer-XXXXXX)
  say "running the test suite under AddressSanitizer and UndefinedBehaviorSanitizer"
  local rc=0
  (cd "$dir" &&
    ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1" \
    UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1" \
    ctest --output-on-failure -E 'valgrind' -LE packaging) || rc=$?
  if compgen -G "$reports/*" >/dev/null; then
    cat "$reports"/* >&2
    echo "scalekiq setup: the sanitizers reported the findings above" >&2
    rc=1
  fi
  rm -rf "$reports"
  return $rc
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

DEMO_DIR= DEMO_PIDS=()
demo_cleanup() {
  local pid
  for pid in "${DEMO_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${DEMO_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$DEMO_DIR" ] && rm -rf "$DEMO_DIR"
  return 0
}

# Waits up to $1 seconds for the command after it to succeed.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

demo() {
  DEMO_DIR=$(mktemp -d /tmp/scalekiq-demo-XXXXXX)
  trap demo_cleanup EXIT
  local dir=$DEMO_DIR port token=demo-token-not-secret
  port=$(free_port)
  say "starting a throwaway redis-server on 127.0.0.1:$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" --daemonize no >/dev/null 2>&1 &
  DEMO_PIDS+=($!)
  local cli=(redis-cli -p "$port")
  wait_until 10 "${cli[@]}" ping >/dev/null 2>&1 || { echo "redis-server did not start" >&2; exit 1; }

  say "starting the fake Heroku Platform API (formation worker=1)"
  python3 "$ROOT/tests/fakes/fake_heroku.py" --port 0 --token "$token" --app demo-app \
    --formation worker=1 --quiet >"$dir/fake.out" 2>"$dir/fake.log" &
  DEMO_PIDS+=($!)
  wait_until 10 grep -q listening "$dir/fake.out" || { cat "$dir/fake.log" >&2; exit 1; }
  local api
  api="http://$(awk '{print $2}' "$dir/fake.out")"

  say "a latency spike: 20 jobs waiting for 30 s in queue default, pushed as Sidekiq's client does"
  local now i
  now=$(date +%s.%N)
  "${cli[@]}" sadd queues default critical >/dev/null
  for i in $(seq 20); do
    "${cli[@]}" lpush queue:default "{\"class\":\"HardWorker\",\"args\":[$i],\"retry\":true,\"queue\":\"default\",\"jid\":\"$(openssl rand -hex 12)\",\"created_at\":$(awk -v n="$now" 'BEGIN{printf "%.6f", n-30}'),\"enqueued_at\":$(awk -v n="$now" 'BEGIN{printf "%.6f", n-30}')}" >/dev/null
  done

  say "scalekiq queues"
  SCALEKIQ_REDIS_URL="redis://127.0.0.1:$port/0" "$BUILD/scalekiq" queues

  say "scalekiq run (poll every 0.5 s, alert interval 2 s, threshold 5 s, at most 2 more workers)"
  SCALEKIQ_REDIS_URL="redis://127.0.0.1:$port/0" HEROKU_API_URL="$api" \
  HEROKU_API_KEY="$token" HEROKU_APP_NAME=demo-app \
  SCALEKIQ_POLL_INTERVAL=0.5 SCALEKIQ_ALERT_INTERVAL=2 SCALEKIQ_LATENCY_THRESHOLD=5 \
  SCALEKIQ_MAX_ADDITIONAL_WORKERS=2 SCALEKIQ_SOCKET="$dir/scalekiq.sock" \
    "$BUILD/scalekiq" run > >(tee "$dir/agent.log") &
  local agent=$!
  DEMO_PIDS+=($agent)
  wait_until 60 grep -q "result=maxscale" "$dir/agent.log" ||
    { echo "the agent never reached its maximum" >&2; exit 1; }

  say "the workers catch up: the queue drains"
  while [ "$("${cli[@]}" llen queue:default)" -gt 0 ]; do
    "${cli[@]}" rpop queue:default >/dev/null
    sleep 0.05
  done
  wait_until 60 grep -q "event=restore" "$dir/agent.log" ||
    { echo "the agent never restored the formation" >&2; exit 1; }

  say "scalekiq status (asks the running agent through its socket)"
  SCALEKIQ_SOCKET="$dir/scalekiq.sock" "$BUILD/scalekiq" status
  say "scalekiq history (the shared event history, newest first)"
  SCALEKIQ_REDIS_URL="redis://127.0.0.1:$port/0" "$BUILD/scalekiq" history -n 8
  kill -TERM "$agent"
  wait "$agent" || true

  say "what the Platform API received, in order"
  python3 - "$api" <<'PY'
import json, sys, urllib.request
reqs = json.load(urllib.request.urlopen(sys.argv[1] + "/__fake/requests"))
for r in reqs:
    body = r.get("body")
    print("  %-5s %s %s -> %s" % (r["method"], r["path"], json.dumps(body) if body else "", r["status"]))
PY
  say "shared state left in Redis (the gem's keys)"
  "${cli[@]}" --no-raw mget amigo/autoscaler/depth amigo/autoscaler/last_alerted \
    amigo/autoscaler/latency_event_started amigo/autoscaler/heroku/worker/active_event_initial_workers
}

case "${1:-}" in
  build)
    install_missing "${BUILD_DEPS[@]}"
    build "$BUILD" OFF RelWithDebInfo
    ;;
  demo)
    install_missing "${BUILD_DEPS[@]}" redis-server redis-tools python3 openssl
    build "$BUILD" OFF RelWithDebInfo
    demo
    ;;
  test)
    install_missing "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    build "$BUILD" ON Debug
    say "running the test suite"
    (cd "$BUILD" && ctest --output-on-failure)
    sanitized_tests
    say "fuzzing every parser from its seed corpus"
    SCALEKIQ_FUZZ_BUILD_DIR="$BUILD-fuzz" bash "$ROOT/fuzz/run.sh"
    ;;
  *)
    echo "usage: packaging/setup.sh demo|test|build" >&2
    exit 2
    ;;
esac
