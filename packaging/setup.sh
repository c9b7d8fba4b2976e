#!/usr/bin/env bash
# scalekiq's set-up script: installs what is missing (Debian 12, as root,
# with apt-get), builds, and runs the demo or the test suite.
#
#   packaging/setup.sh demo    build, then a throwaway Redis with Sidekiq jobs
#   packaging/setup.sh test    build with -Werror, then the whole test suite
#   packaging/setup.sh build   just build (./build/scalekiq)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${SCALEKIQ_BUILD_DIR:-$ROOT/build}

BUILD_DEPS=(gcc make cmake pkg-config libuv1-dev libhiredis-dev libcjson-dev
            libcurl4-openssl-dev libssl-dev)
TEST_DEPS=(libcriterion-dev redis-server redis-tools ruby-sidekiq python3 valgrind)

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

build() {
  local werror=${1:-OFF} type=${2:-RelWithDebInfo}
  say "building in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE="$type" -DSCALEKIQ_WERROR="$werror" >/dev/null
  local log="$BUILD/build.log"
  if ! cmake --build "$BUILD" -j"$(nproc)" >"$log" 2>&1; then
    cat "$log" >&2
    echo "scalekiq setup: the build failed (log above, also in $log)" >&2
    exit 1
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

DEMO_DIR= DEMO_PID=
demo_cleanup() {
  [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null
  [ -n "$DEMO_DIR" ] && rm -rf "$DEMO_DIR"
  return 0
}

demo() {
  local dir port
  dir=$(mktemp -d /tmp/scalekiq-demo-XXXXXX)
  DEMO_DIR=$dir
  port=$(free_port)
  say "starting a throwaway redis-server on 127.0.0.1:$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" --daemonize no >/dev/null 2>&1 &
  DEMO_PID=$!
  trap demo_cleanup EXIT
  local cli=(redis-cli -p "$port")
  for _ in $(seq 50); do "${cli[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done

  say "pushing jobs the way Sidekiq's client does (SADD queues, LPUSH queue:NAME)"
  local now
  now=$(date +%s.%N)
  job() { # queue, age in seconds, Sidekiq 8 milliseconds (1) or 7 float seconds (0)
    local ts
    if [ "$3" = 1 ]; then ts=$(awk -v n="$now" -v a="$2" 'BEGIN{printf "%.0f", (n-a)*1000}')
    else ts=$(awk -v n="$now" -v a="$2" 'BEGIN{printf "%.6f", n-a}'); fi
    "${cli[@]}" sadd queues "$1" >/dev/null
    "${cli[@]}" lpush "queue:$1" "{\"class\":\"HardWorker\",\"args\":[1],\"retry\":true,\"queue\":\"$1\",\"jid\":\"$(openssl rand -hex 12)\",\"created_at\":$ts,\"enqueued_at\":$ts}" >/dev/null
  }
  job default 42.5 0
  job default 3 0
  job critical 7.25 1
  job mailers 0.5 0
  "${cli[@]}" sadd queues low >/dev/null
  "${cli[@]}" sadd processes demo.1:4242:0f1e2d >/dev/null
  "${cli[@]}" hset demo.1:4242:0f1e2d busy 3 info '{"hostname":"demo.1","concurrency":5}' >/dev/null

  export SCALEKIQ_REDIS_URL="redis://127.0.0.1:$port/0"
  say "scalekiq queues"
  "$BUILD/scalekiq" queues
  say "scalekiq queues --json"
  "$BUILD/scalekiq" queues --json
}

case "${1:-}" in
  build)
    install_missing "${BUILD_DEPS[@]}"
    build OFF
    ;;
  demo)
    install_missing "${BUILD_DEPS[@]}" redis-server redis-tools python3 openssl
    build OFF
    demo
    ;;
  test)
    install_missing "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    build ON Debug
    say "running the test suite"
    cd "$BUILD"
    ctest --output-on-failure
    ;;
  *)
    echo "usage: packaging/setup.sh demo|test|build" >&2
    exit 2
    ;;
esac
