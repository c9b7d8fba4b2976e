#!/usr/bin/env python3
"""Leader election benchmark: failover, graceful handover, idle followers.

Run by bench/failover/run.sh, which starts a private redis-server, writes
the machine description, and kills whatever is left on exit. This script
starts the agents itself (`scalekiq run`, dry run, no Heroku API), records
the pid of each one in --pidfile (one per line, appended before anything
else happens to it) so that run.sh's trap can kill it, and kills every
agent it started before it returns, also on an error or SIGTERM.

Three parts (see bench/README.md, "Failover and idle cost"):
  kill   3 agents; kill -9 the leader; time until another agent holds
         N/leader and until it logs its first poll; replace it; repeat.
  term   the same with SIGTERM (the leader releases the lock on exit).
  idle   N idle followers plus a leader; Redis' own command counts (INFO
         commandstats) over a window; RSS and CPU of the agents.
Standard library only.
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

LOCK_KEY_SUFFIX = "/leader"
# Commands the agents only ever run inside their Lua scripts (leader.c's
# acquire/renew/release, store.c's save): Redis counts them in
# commandstats besides the EVAL that ran them. Everything else an idle
# agent sends (EVAL, SMEMBERS, MGET) is a request of its own.
SCRIPT_INTERNAL = {"get", "set", "pexpire", "incr", "del", "hset", "hdel",
                   "expire", "rpush", "ltrim", "lpush", "mset"}
HARNESS = {"config|resetstat", "info"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- a minimal Redis client (RESP2) -----------------------------------------

class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sent_bytes = 0

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("redis-server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("redis-server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise BenchError("redis error: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise BenchError("unexpected reply from redis: %r" % line)

    def cmd(self, *args):
        data = self.encode(*args)
        self.sent_bytes += len(data)
        self.sock.sendall(data)
        return self._reply()

    def close(self):
        self.sock.close()


def parse_info(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        out[k] = v
    return out


def commandstats(info):
    """{command: (calls, usec)} from INFO commandstats."""
    calls = {}
    for k, v in info.items():
        if k.startswith("cmdstat_"):
            fields = dict(f.split("=", 1) for f in v.split(","))
            calls[k[len("cmdstat_"):]] = (int(fields["calls"]), int(fields["usec"]))
    return calls


# --- agents -----------------------------------------------------------------

class Agent:
    """One `scalekiq run`. With capture, a thread reads its stdout and
    timestamps each line (time.monotonic()) as it arrives: the agent's
    logfmt lines carry no time of their own."""

    def __init__(self, h, slot, env, capture):
        self.slot = slot
        self.capture = capture
        self.lines = []  # (monotonic time, line)
        self.cond = threading.Condition()
        self.eof_at = None
        seq = h.next_seq()
        self.logfile = os.path.join(h.workdir, "agent-%04d-slot%d.log" % (seq, slot))
        full_env = dict(h.base_env)
        full_env.update(env)
        full_env["DYNO"] = "bench.%d" % slot
        full_env["SCALEKIQ_SOCKET"] = os.path.join(h.workdir, "s%04d.sock" % seq)
        self.logfh = open(self.logfile, "w")
        if capture:
            self.proc = subprocess.Popen([h.scalekiq, "run"], env=full_env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen([h.scalekiq, "run"], env=full_env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=self.logfh,
                                         stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        h.register(self)
        if capture:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            t = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            self.logfh.write(line + "\n")
            with self.cond:
                self.lines.append((t, line))
                self.cond.notify_all()
        with self.cond:
            self.eof_at = time.monotonic()
            self.cond.notify_all()
        self.logfh.flush()

    def wait_line(self, needle, after, timeout):
        """Time of the first line holding needle received at or after
        `after`, or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        i = 0
        with self.cond:
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    i += 1
                    if t >= after and needle in line:
                        return t
                if self.eof_at is not None:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def file_has(self, needle):
        self.logfh.flush()
        with open(self.logfile, errors="replace") as f:
            return any(needle in line for line in f)

    def tail(self, n=15):
        self.logfh.flush()
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self.capture:
            self.reader.join(timeout=2)
        self.logfh.close()

    def cpu_seconds(self):
        """CPU time so far: the scheduler's own count in nanoseconds
        (/proc/PID/schedstat), else utime + stime in clock ticks."""
        try:
            with open("/proc/%d/schedstat" % self.pid) as f:
                return int(f.read().split()[0]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def memory_kib(self):
        """{'rss', 'anon', 'pss'} in KiB: VmRSS and RssAnon of
        /proc/PID/status, Pss of /proc/PID/smaps_rollup (the shared
        libraries' pages divided among the processes that map them)."""
        m = {}
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        m["rss"] = int(line.split()[1])
                    elif line.startswith("RssAnon:"):
                        m["anon"] = int(line.split()[1])
            with open("/proc/%d/smaps_rollup" % self.pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        m["pss"] = int(line.split()[1])
        except OSError:
            return None
        return m if len(m) == 3 else None


class Harness:
    def __init__(self, args):
        self.scalekiq = args.scalekiq
        self.port = args.port
        self.workdir = args.workdir
        self.pidfile = args.pidfile
        self.key = args.namespace + LOCK_KEY_SUFFIX
        self.agents = []
        self.seq = 0
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith(("SCALEKIQ_", "HEROKU_")) and k != "DYNO"}
        self.base_env.update({
            "SCALEKIQ_REDIS_URL": "redis://127.0.0.1:%d/0" % self.port,
            "SCALEKIQ_DRY_RUN": "1",
            "SCALEKIQ_NAMESPACE": args.namespace,
        })
        os.makedirs(self.workdir, exist_ok=True)
        self.r = Redis(self.port)

    def next_seq(self):
        self.seq += 1
        return self.seq

    def register(self, agent):
        self.agents.append(agent)
        with open(self.pidfile, "a") as f:
            f.write("%d\n" % agent.pid)

    def kill_all(self):
        for a in self.agents:
            a.kill()
        self.agents = []

    def holder(self):
        return self.r.cmd("GET", self.key)


def parse_holder(value):
    """'bench.K:PID:HEX' -> (K, PID), or None."""
    m = re.fullmatch(r"bench\.(\d+):(\d+):[0-9a-f]{16}", value or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def timing_env(poll, ttl, tick):
    env = {}
    if poll is not None:
        env["SCALEKIQ_POLL_INTERVAL"] = repr(poll)
    if ttl is not None:
        env["SCALEKIQ_LOCK_TTL"] = repr(ttl)
    if tick is not None:
        env["SCALEKIQ_LOCK_TICK"] = repr(tick)
    return env


# --- parts 1 and 2: failover and handover ------------------------------------

def handover_trials(h, kind, trials, poll, ttl, tick, check_every):
    """kind 'kill' (SIGKILL) or 'term' (SIGTERM). Returns per-trial dicts."""
    env = timing_env(poll, ttl, tick)
    env["SCALEKIQ_LOG_LEVEL"] = "debug"
    slots = {}

    def start(slot):
        a = Agent(h, slot, env, capture=True)
        slots[slot] = a
        return a

    def settled(a, since, timeout):
        # its first lock tick has been answered: it knows the holder
        if a.wait_line("event=leader_seen", since, timeout) is None:
            raise BenchError("agent bench.%d (pid %d) did not make a lock attempt "
                             "within %.1f s; its log:\n%s" % (a.slot, a.pid, timeout, a.tail()))

    h.r.cmd("FLUSHALL")
    t = time.monotonic()
    # Each agent's lock tick keeps the phase of its start. Dynos start at
    # unrelated moments; agents started together (or a replacement started
    # right when the new leader won) would tick in step with the leader and
    # take an expired key at once, or a whole tick late: random phases.
    for s in (1, 2, 3):
        start(s)
        time.sleep(random.uniform(0, tick))
    for s in (1, 2, 3):
        settled(slots[s], t, 10)
    results = []
    sig = signal.SIGKILL if kind == "kill" else signal.SIGTERM
    timeout = ttl + 3 * tick + 5
    for trial in range(1, trials + 1):
        # A random moment in the leader's renewal cycle.
        time.sleep(random.uniform(tick, 2 * tick))
        value = h.holder()
        parsed = parse_holder(value)
        if parsed is None:
            raise BenchError("trial %d: %s holds %r, not a bench agent's id"
                             % (trial, h.key, value))
        slot, pid = parsed
        old = slots.get(slot)
        if old is None or old.pid != pid or not old.alive():
            raise BenchError("trial %d: %s names bench.%d pid %d, which is not a live "
                             "agent of this run" % (trial, h.key, slot, pid))
        pttl = h.r.cmd("PTTL", h.key) if kind == "kill" else None
        t0 = time.monotonic()
        os.kill(pid, sig)
        t_gone = None
        new_value = None
        checks = 0
        while True:
            v = h.holder()
            t = time.monotonic()
            checks += 1
            if v is None and t_gone is None:
                t_gone = t
            if v is not None and v != value:
                new_value, t_new = v, t
                break
            if t - t0 > timeout:
                raise BenchError("trial %d: no other agent took %s within %.1f s after "
                                 "%s of bench.%d (pid %d)" % (trial, h.key, timeout,
                                                             sig.name, slot, pid))
            time.sleep(check_every)
        check_gap = (t_new - t0) / checks
        if t_gone is None:
            t_gone = t_new  # deleted/expired and retaken between two checks
        nparsed = parse_holder(new_value)
        new = slots.get(nparsed[0]) if nparsed else None
        if new is None or new.pid != nparsed[1] or new is old:
            raise BenchError("trial %d: new holder %r is not another live agent"
                             % (trial, new_value))
        t_elected = new.wait_line("event=leader_elected", t0, timeout)
        t_poll = new.wait_line("event=poll ", t0, timeout) if t_elected else None
        if t_elected is None or t_poll is None:
            raise BenchError("trial %d: the new leader bench.%d (pid %d) logged no %s "
                             "after taking the key; its log:\n%s"
                             % (trial, new.slot, new.pid,
                                "leader_elected" if t_elected is None else "poll",
                                new.tail()))
        # the old agent's end
        try:
            rc = old.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise BenchError("trial %d: bench.%d (pid %d) still runs 10 s after %s"
                             % (trial, slot, pid, sig.name))
        old.reader.join(timeout=5)
        row = {
            "trial": trial, "old": "bench.%d" % slot, "new": "bench.%d" % new.slot,
            "to_other_holder": t_new - t0,
            "to_key_gone": t_gone - t0,
            "to_elected_log": t_elected - t0,
            "to_first_poll": t_poll - t0,
            "check_gap": check_gap,
        }
        if kind == "kill":
            row["pttl_at_kill"] = pttl / 1000.0
            # The key expired pttl after the PTTL call, which came just
            # before the kill: expiry -> new holder is what the followers'
            # tick phase adds.
            row["expiry_to_holder"] = row["to_other_holder"] - row["pttl_at_kill"]
            row["exit_status"] = rc
        else:
            row["to_exit"] = (old.eof_at or time.monotonic()) - t0
            row["exit_status"] = rc
            row["released"] = old.file_has("event=leader_released") and \
                old.file_has("deleted=1")
        results.append(row)
        log("  %s trial %2d: bench.%d -> bench.%d, other holder %.3f s, first poll %.3f s"
            % (kind, trial, slot, new.slot, row["to_other_holder"], row["to_first_poll"]))
        # a replacement dyno, so that 3 agents compete again
        old.kill()
        h.agents.remove(old)
        time.sleep(random.uniform(0, tick))
        tr = time.monotonic()
        settled(start(slot), tr, 10)
    for a in list(slots.values()):
        a.kill()
        if a in h.agents:
            h.agents.remove(a)
    return results


# --- part 3: idle followers ----------------------------------------------------

def idle_run(h, followers, poll, ttl, tick, window):
    """followers idle agents plus a leader; followers = None: no agent at
    all (Redis' own baseline)."""
    env = timing_env(poll, ttl, tick)
    env["SCALEKIQ_LOG_LEVEL"] = "info"
    h.r.cmd("FLUSHALL")
    n_agents = 0 if followers is None else followers + 1
    agents = [Agent(h, k, env, capture=False) for k in range(1, n_agents + 1)]
    deadline = time.monotonic() + 30
    while agents:
        pending = [a for a in agents if not a.file_has("event=redis_connected")]
        dead = [a for a in agents if not a.alive()]
        if dead:
            raise BenchError("agent bench.%d (pid %d) exited at start-up; its log:\n%s"
                             % (dead[0].slot, dead[0].pid, dead[0].tail()))
        if not pending and h.holder() is not None:
            break
        if time.monotonic() > deadline:
            raise BenchError("%d of %d agents not connected (or no leader) after 30 s"
                             % (len(pending), len(agents)))
        time.sleep(0.1)
    time.sleep(1.0)  # every agent past its first lock attempt
    leader_before = h.holder()
    cpu0 = [a.cpu_seconds() for a in agents]
    h.r.cmd("CONFIG", "RESETSTAT")
    sent0 = h.r.sent_bytes
    c0 = parse_info(h.r.cmd("INFO", "cpu"))
    t0 = time.monotonic()
    time.sleep(window)
    sent1 = h.r.sent_bytes
    info = parse_info(h.r.cmd("INFO", "commandstats", "stats", "cpu"))
    elapsed = time.monotonic() - t0
    cpu1 = [a.cpu_seconds() for a in agents]
    leader_after = h.holder()
    mem = [a.memory_kib() for a in agents]
    dead = [a for a in agents if not a.alive() or mem[agents.index(a)] is None]
    if dead:
        raise BenchError("agent bench.%d (pid %d) died during the window; its log:\n%s"
                         % (dead[0].slot, dead[0].pid, dead[0].tail()))
    calls = commandstats(info)
    agent_calls = {k: v for k, v in calls.items() if k not in HARNESS}
    executed = sum(c for c, _ in agent_calls.values())
    requests = sum(c for k, (c, _) in agent_calls.items() if k not in SCRIPT_INTERNAL)
    # The harness's own INFO requests are in total_net_input_bytes.
    net_in = int(info["total_net_input_bytes"]) - (sent1 - sent0) - \
        len(Redis.encode("INFO", "commandstats", "stats", "cpu"))
    redis_cpu = (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) - \
        (float(c0["used_cpu_user"]) + float(c0["used_cpu_sys"]))
    agent_cpu = sum(b - a for a, b in zip(cpu0, cpu1) if a is not None and b is not None)
    elected = sum(1 for a in agents if a.file_has("event=leader_elected"))
    for a in agents:
        a.kill()
        h.agents.remove(a)
    return {
        "followers": followers, "agents": len(agents), "window": elapsed,
        "calls": agent_calls, "executed": executed, "requests": requests,
        "net_in": net_in, "redis_cpu": redis_cpu, "agent_cpu": agent_cpu,
        "rss_kib": sum(m["rss"] for m in mem), "anon_kib": sum(m["anon"] for m in mem),
        "pss_kib": sum(m["pss"] for m in mem),
        "rss_max_kib": max((m["rss"] for m in mem), default=0),
        "leader_changed": leader_before != leader_after, "elected_agents": elected,
    }


# --- report --------------------------------------------------------------------

def fmt_s(x):
    return "%.3f" % x


def quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stat_row(name, xs, bound_label, bound):
    within = sum(1 for x in xs if x <= bound) if bound is not None else None
    return "| %s | %s | %s | %s | %s | %s | %s |" % (
        name, fmt_s(min(xs)), fmt_s(statistics.median(xs)), fmt_s(quantile(xs, 0.9)),
        fmt_s(max(xs)), bound_label,
        "%d/%d" % (within, len(xs)) if within is not None else "")


def report(data, machine):
    cfg = data["config"]
    poll, ttl, tick = cfg["poll"], cfg["ttl"], cfg["tick"]
    out = []
    w = out.append
    w("# Failover and idle cost (leader election)")
    w("")
    w(machine.strip())
    w("")
    kill = data.get("kill")
    term = data.get("term")
    if kill:
        n = len(kill)
        acts = [r["to_first_poll"] for r in kill]
        target = ttl + poll
        met = sum(1 for x in acts if x <= target)
        w("## 1. Failover after `kill -9` of the leader")
        w("")
        w("3 agents (dry run), poll %g s, lock TTL %g s, lock tick %g s; %d trials; "
          "times in seconds from the kill. The key was checked every %.1f ms on average."
          % (poll, ttl, tick, n, 1000 * statistics.mean(r["check_gap"] for r in kill)))
        w("")
        w("| interval | min | median | p90 | max | bound | trials within |")
        w("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
        w(stat_row("kill → key expires (its PTTL at the kill)",
                   [r["pttl_at_kill"] for r in kill], "≤ TTL %g" % ttl, ttl))
        w(stat_row("key expires → another agent holds it",
                   [r["expiry_to_holder"] for r in kill], "≤ tick %g" % tick, tick))
        w(stat_row("kill → another agent holds the key",
                   [r["to_other_holder"] for r in kill],
                   "≤ TTL + tick = %g" % (ttl + tick), ttl + tick))
        w(stat_row("kill → new leader logs `leader_elected`",
                   [r["to_elected_log"] for r in kill], "", None))
        w(stat_row("**kill → new leader's first poll (acts)**", acts,
                   "**≤ TTL + poll = %g** (target)" % target, target))
        w("")
        w("Target \"new leader acts within lock TTL + one poll\" (%g s): %s (%d/%d trials)."
          % (target, "met in every trial" if met == n else "MISSED in %d trial(s)" % (n - met),
             met, n))
        w("")
    if term:
        n = len(term)
        hand = [r["to_other_holder"] for r in term]
        met = sum(1 for x in hand if x <= tick)
        w("## 2. Graceful handover after SIGTERM of the leader")
        w("")
        w("Same 3 agents and settings; %d trials; times in seconds from the SIGTERM."
          % n)
        w("")
        w("| interval | min | median | p90 | max | bound | trials within |")
        w("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
        w(stat_row("SIGTERM → key deleted (released)", [r["to_key_gone"] for r in term],
                   "", None))
        w(stat_row("**SIGTERM → another agent holds the key**", hand,
                   "**≤ tick %g** (target)" % tick, tick))
        w(stat_row("SIGTERM → new leader's first poll", [r["to_first_poll"] for r in term],
                   "", None))
        w(stat_row("SIGTERM → old agent exited", [r["to_exit"] for r in term], "", None))
        w("")
        released = sum(1 for r in term if r["released"])
        clean = sum(1 for r in term if r["exit_status"] == 0)
        w("Target \"graceful handover within one lock tick\" (%g s): %s (%d/%d trials). "
          "The old leader logged `leader_released ... deleted=1` in %d/%d trials and "
          "exited with status 0 in %d/%d."
          % (tick, "met in every trial" if met == n else "MISSED in %d trial(s)" % (n - met),
             met, n, released, n, clean, n))
        w("")
    if data.get("idle"):
        w("## 3. Cost of idle followers")
        w("")
        base = data.get("redis_alone")
        w("N idle followers plus one leader, dry run, empty Redis (no Sidekiq queues), "
          "one window per row. Redis' own counts, from `CONFIG RESETSTAT` to "
          "`INFO commandstats`. *Requests*: the commands the agents send (one `EVAL` "
          "per follower per lock tick; the leader's renewal `EVAL` each tick and its "
          "poll's `SMEMBERS` ×2 + `MGET`); *executed*: as Redis counts them, with the "
          "commands run inside those scripts (`get`, `pexpire`, …). Per follower: "
          "(row − row with N = 0) / N. *Bytes in*: `total_net_input_bytes`, less the "
          "harness's own requests.")
        w("")
        w("| settings | N | window s | requests/s | executed/s | per follower req/s | "
          "per follower exec/s | bytes in/s | per follower B/s | Redis CPU ms/s |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        if base:
            w("| Redis alone, no agent | — | %.1f | %.2f | %.2f | | | %.0f | | %.2f |"
              % (base["window"], base["requests"] / base["window"],
                 base["executed"] / base["window"], base["net_in"] / base["window"],
                 1000 * base["redis_cpu"] / base["window"]))
        notes = []
        for setting in data["idle"]:
            zero = None
            for r in setting["runs"]:
                win = r["window"]
                req, exe, net = r["requests"] / win, r["executed"] / win, r["net_in"] / win
                if r["followers"] == 0:
                    zero = (req, exe, net)
                    pf = ("—", "—", "—")
                elif zero is not None:
                    nf = r["followers"]
                    pf = ("%.3f" % ((req - zero[0]) / nf), "%.3f" % ((exe - zero[1]) / nf),
                          "%.0f" % ((net - zero[2]) / nf))
                else:
                    pf = ("?", "?", "?")
                w("| %s | %d | %.1f | %.2f | %.2f | %s | %s | %.0f | %s | %.2f |"
                  % (setting["label"], r["followers"], win, req, exe, pf[0], pf[1], net,
                     pf[2], 1000 * r["redis_cpu"] / win))
                if r["leader_changed"] or r["elected_agents"] != 1:
                    notes.append("%s, N = %d: leadership changed during the run (%d agents "
                                 "were elected)" % (setting["label"], r["followers"],
                                                    r["elected_agents"]))
        w("")
        w("The agents themselves, measured at the end of each window: RSS (`VmRSS`), "
          "its anonymous part (`RssAnon`: heap, stacks, data), and PSS (`Pss` of "
          "`smaps_rollup`: shared library pages divided among the processes mapping "
          "them, so the PSS total is what the N + 1 agents really occupy on one "
          "machine). CPU: the time every agent ran on a CPU during the window, "
          "from the scheduler (`/proc/PID/schedstat`, in ns).")
        w("")
        w("| settings | agents | RSS per agent MiB (max) | anonymous per agent MiB | "
          "RSS total MiB | PSS total MiB | agents' CPU ms/s |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for setting in data["idle"]:
            for r in setting["runs"]:
                n = r["agents"]
                w("| %s | %d | %.2f (%.2f) | %.2f | %.1f | %.1f | %.2f |"
                  % (setting["label"], n, r["rss_kib"] / 1024 / n, r["rss_max_kib"] / 1024,
                     r["anon_kib"] / 1024 / n, r["rss_kib"] / 1024, r["pss_kib"] / 1024,
                     1000 * r["agent_cpu"] / r["window"]))
        w("")
        w("Commands counted by Redis per run, with Redis' own time per call "
          "(`usec_per_call`; an `EVAL`'s includes the commands its script runs):")
        w("")
        for setting in data["idle"]:
            for r in setting["runs"]:
                w("- %s, N = %d: %s" % (setting["label"], r["followers"], ", ".join(
                    "%s %d (%.1f µs)" % (k, c, u / c if c else 0.0)
                    for k, (c, u) in sorted(r["calls"].items()))))
        w("")
        if notes:
            w("Anomalies: " + "; ".join(notes) + ".")
        else:
            w("In every run exactly one agent was elected and the leader did not change.")
        w("")
    for label, rows in (("kill -9", kill), ("SIGTERM", term)):
        if not rows:
            continue
        w("## Per trial: %s" % label)
        w("")
        if label == "kill -9":
            w("| trial | old → new | PTTL at kill | expiry → holder | other holder | elected log | first poll |")
            w("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
            for r in rows:
                w("| %d | %s → %s | %.3f | %.3f | %.3f | %.3f | %.3f |" % (
                    r["trial"], r["old"], r["new"], r["pttl_at_kill"], r["expiry_to_holder"],
                    r["to_other_holder"], r["to_elected_log"], r["to_first_poll"]))
        else:
            w("| trial | old → new | key deleted | other holder | first poll | old exited |")
            w("| ---: | --- | ---: | ---: | ---: | ---: |")
            for r in rows:
                w("| %d | %s → %s | %.3f | %.3f | %.3f | %.3f |" % (
                    r["trial"], r["old"], r["new"], r["to_key_gone"], r["to_other_holder"],
                    r["to_first_poll"], r["to_exit"]))
        w("")
    return "\n".join(out) + "\n"


# --- main ----------------------------------------------------------------------

def on_term(signum, frame):
    raise SystemExit(128 + signum)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scalekiq", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--namespace", default="amigo/autoscaler")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--poll", type=float, default=0.5)
    p.add_argument("--ttl", type=float, default=1.5)
    p.add_argument("--tick", type=float, default=0.5)
    p.add_argument("--check-every", type=float, default=0.005)
    p.add_argument("--followers", default="0 1 10 100")
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--parts", default="kill term idle")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    random.seed()

    h = Harness(args)
    parts = args.parts.split()
    data = {"config": {"poll": args.poll, "ttl": args.ttl, "tick": args.tick,
                       "trials": args.trials}}
    try:
        if "kill" in parts:
            log("== 1. failover after kill -9 (%d trials)" % args.trials)
            data["kill"] = handover_trials(h, "kill", args.trials, args.poll, args.ttl,
                                           args.tick, args.check_every)
        if "term" in parts:
            log("== 2. graceful handover after SIGTERM (%d trials)" % args.trials)
            data["term"] = handover_trials(h, "term", args.trials, args.poll, args.ttl,
                                           args.tick, args.check_every)
        if "idle" in parts:
            followers = [int(x) for x in args.followers.split()]
            if 0 not in followers:
                followers = [0] + followers
            data["idle"] = []
            log("== 3. Redis alone, no agent, %.0f s window" % args.window)
            data["redis_alone"] = idle_run(h, None, None, None, None, args.window)
            settings = [
                ("default (poll 5 s, TTL 15 s, tick 5 s)", None, None, None,
                 max(args.window, 20.0)),
                ("test (poll %g s, TTL %g s, tick %g s)" % (args.poll, args.ttl, args.tick),
                 args.poll, args.ttl, args.tick, args.window),
            ]
            for label, poll, ttl, tick, window in settings:
                runs = []
                for n in followers:
                    log("== 3. idle followers: %s, N = %d, %.0f s window" % (label, n, window))
                    runs.append(idle_run(h, n, poll, ttl, tick, window))
                data["idle"].append({"label": label, "runs": runs})
    finally:
        h.kill_all()
    with open(args.json, "w") as f:
        json.dump(data, f, indent=1)
    with open(args.machine) as f:
        machine = f.read()
    text = report(data, machine)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        log("bench.py: " + str(e))
        sys.exit(1)
