#!/usr/bin/env bash
# bench/queues/run.sh [path/to/scalekiq]
#
# Compares one read of every Sidekiq queue's size and latency by
# `scalekiq queues --json` and by Sidekiq's own Ruby API
# (Sidekiq::Queue.all.map { |q| [q.name, q.size, q.latency] }), at 1, 100,
# 1,000 and 10,000 queues, on a private redis-server. Prints a markdown report
# and writes it to bench/out/queues.md. See bench/README.md.
#
# Environment:
#   RUNS=9              measured reads per tool and queue count (median kept)
#   QUEUE_COUNTS="1 100 1000 10000"
#   PROCESSES=3         process heartbeats seeded
#   TLS=1               both tools read over rediss:// (a TLS port of the same
#                       redis-server, certificate from a CA made by openssl);
#                       default 0: plain redis://
#   OUT=bench/out/queues.md (bench/out/queues-tls.md with TLS=1)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

runs="${RUNS:-9}"
queue_counts="${QUEUE_COUNTS:-1 100 1000 10000}"
processes="${PROCESSES:-3}"
tls="${TLS:-0}"
[[ "$tls" == "0" || "$tls" == "1" ]] || { echo "run.sh: TLS must be 0 or 1" >&2; exit 1; }
if [[ "$tls" == "1" ]]; then
  out="${OUT:-$root/bench/out/queues-tls.md}"
else
  out="${OUT:-$root/bench/out/queues.md}"
fi

# shellcheck source=../common.sh
. "$root/bench/common.sh"
find_scalekiq "bash bench/queues/run.sh" "$@"

# --- tools -----------------------------------------------------------------
need redis-server "install it: apt-get install redis-server"
need redis-cli "install it: apt-get install redis-tools"
need ruby "install it: apt-get install ruby"
need python3 "install it: apt-get install python3"
need cc "a C compiler is needed for the small rusage_run launcher: apt-get install gcc"
if [[ "$tls" == "1" ]]; then
  need openssl "install it: apt-get install openssl"
fi
ruby -e 'require "sidekiq/api"' 2>/dev/null ||
  die "Ruby cannot load sidekiq/api; install it: apt-get install ruby-sidekiq"
ruby -e 'require "redis"; exit(Redis::VERSION.start_with?("4.") ? 0 : 1)' ||
  die "sidekiq_read.rb counts round trips through the redis gem 4.x's Redis::Client#process; found $(ruby -e 'require "redis"; print Redis::VERSION')"

# --- scratch dir, launcher, Redis ------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/scalekiq-bench.XXXXXX")"
redis_pid=""
cleanup() {
  if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cc -O2 -Wall -o "$tmp/rusage_run" "$here/rusage_run.c" ||
  die "cannot compile $here/rusage_run.c"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# TLS: a throwaway CA and a server certificate for 127.0.0.1 signed by it,
# so that both tools verify the server as they would in production. The
# plain port stays open for the harness's own redis-cli commands only.
tls_args=()
tls_port=0
if [[ "$tls" == "1" ]]; then
  ossl() { openssl "$@" 2>"$tmp/openssl.log" || die "openssl $1 failed: $(cat "$tmp/openssl.log")"; }
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -days 2 -subj /CN=scalekiq-bench-ca
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/server.key" -out "$tmp/server.csr" -subj /CN=scalekiq-bench-redis
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tmp/server.ext"
  ossl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial 2 -days 2 -out "$tmp/server.crt" -extfile "$tmp/server.ext"
fi

port=""
for _attempt in 1 2 3 4 5; do
  port="$(free_port)"
  if [[ "$tls" == "1" ]]; then
    tls_port="$(free_port)"
    tls_args=(--tls-port "$tls_port" --tls-cert-file "$tmp/server.crt"
      --tls-key-file "$tmp/server.key" --tls-ca-cert-file "$tmp/ca.crt"
      --tls-auth-clients no)
  fi
  redis-server --port "$port" "${tls_args[@]}" --bind 127.0.0.1 --save "" --appendonly no \
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
rcli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# --- the machine -------------------------------------------------------------
cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
[[ -n "$cpu_model" ]] || cpu_model="unknown"
{
  echo "Machine: $(nproc) CPUs ($cpu_model), Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d" " -f1-3 /proc/loadavg) at start."
  echo "Versions: $("$scalekiq" --version 2>/dev/null | head -n 1) ($build_type build);" \
    "$(redis-server --version | sed -E 's/^Redis server v=([^ ]+).*/redis-server \1/');" \
    "$(ruby -e 'print RUBY_DESCRIPTION.split(" ")[0, 2].join(" ")');" \
    "$(ruby -e 'require "sidekiq"; require "redis"; print "sidekiq #{Sidekiq::VERSION}, redis gem #{Redis::VERSION}"')."
  echo "Data: each queue count seeded afresh; queue i holds i % 5 jobs (queue 0 \"default\" holds 3), plus $processes process heartbeats. $runs measured reads per tool after one warm-up, alternating which tool goes first."
  if [[ "$tls" == "1" ]]; then
    echo "Transport: both tools read over rediss://127.0.0.1 (redis-server's TLS port; $(openssl version | cut -d" " -f1-2)), each verifying the server's certificate against the CA the harness made (P-256 keys); the harness's own commands (seeding, CONFIG RESETSTAT, INFO) go to a plain port of the same server."
  else
    echo "Transport: plain redis:// over loopback TCP."
  fi
} >"$tmp/machine.md"

# --- measure ------------------------------------------------------------------
results="$tmp/results.jsonl"
: >"$results"
echo "scalekiq: $scalekiq ($build_type); redis-server on 127.0.0.1:$port$([[ "$tls" == "1" ]] && echo ", TLS on $tls_port")" >&2
echo "== baselines" >&2
python3 "$here/bench.py" baseline --runs "$runs" --launcher "$tmp/rusage_run" \
  --workdir "$tmp/work" --results "$results"
for n in $queue_counts; do
  echo "== $n queues" >&2
  rcli FLUSHALL >/dev/null
  seeded="$(ruby "$here/seed.rb" "$n" "$processes" | rcli --pipe)"
  grep -q 'errors: 0,' <<<"$seeded" || die "seeding $n queues failed: $seeded"
  got="$(rcli SCARD queues)"
  [[ "$got" == "$n" ]] || die "seeded $n queues but the queues set holds $got"
  tls_measure=()
  [[ "$tls" == "1" ]] && tls_measure=(--tls-port "$tls_port" --ca-file "$tmp/ca.crt")
  python3 "$here/bench.py" measure --n "$n" --runs "$runs" --port "$port" \
    --scalekiq "$scalekiq" --ruby-script "$here/sidekiq_read.rb" \
    --launcher "$tmp/rusage_run" --workdir "$tmp/work" --results "$results" \
    "${tls_measure[@]}"
done

echo "Load average at the end: $(cut -d" " -f1-3 /proc/loadavg) (this run's own load included)." >>"$tmp/machine.md"
echo >&2
title="scalekiq queues vs Sidekiq's Ruby API"
[[ "$tls" == "1" ]] && title="$title, over TLS"
python3 "$here/bench.py" report --results "$results" --machine "$tmp/machine.md" --out "$out" \
  --title "$title"
echo >&2
echo "run.sh: report written to $out" >&2
