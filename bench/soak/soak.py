#!/usr/bin/env python3
"""bench/soak/soak.py: the soak run behind bench/soak/run.sh.

Owns one soak: a private redis-server, the fake Heroku Platform API, three
`scalekiq run` agents, the driver that makes latency events and injects
faults, the invariant checker, and the report (text on stdout, JSON in a
file and as the last stdout line). Python 3 standard library only. Run it
through run.sh, which finds the binary and checks the tools.
"""

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

TOKEN = "soak-token-not-secret"
APP = "soak-app"
FORMATION = "worker"
NS = "amigo/autoscaler"
INITIAL_KEY = "amigo/autoscaler/heroku/worker/active_event_initial_workers"
# Marks an injected "apply, then lose the reply" in the fake's log: its
# error_id is logged, so the checker knows that PATCH took effect.
APPLIED_MARK = "soak_applied_reply_lost"
QUEUES = ["default", "critical", "mailers"]

# Level=error lines the agents are expected to log while faults are on;
# anything else at level error counts as an internal error.
EXPECTED_ERRORS = {"heroku_error", "scale_up", "restore", "redis_unavailable",
                   "state_save_failed", "store_load_failed"}
SUSPECT_TEXT = re.compile(r"nomem|out of memory|internal|assert|bug|overflow", re.I)

LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line):
    out = {}
    for k, v in LOGFMT.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[k] = v
    return out


class RedisError(Exception):
    pass


class Resp:
    """A minimal blocking RESP client: one connection, reconnects on use."""

    def __init__(self, port, timeout=5.0):
        self.port, self.timeout, self.sock, self.buf = port, timeout, None, b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.buf = None, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError("bad reply %r" % line[:40])

    def call(self, *args):
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
                self.sock.settimeout(self.timeout)
            out = [b"*%d\r\n" % len(args)]
            for a in args:
                b = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(b), b))
            self.sock.sendall(b"".join(out))
            r = self._reply()
        except (OSError, ValueError, RedisError) as e:
            self.close()
            raise RedisError(str(e) or type(e).__name__)
        if isinstance(r, RedisError):
            raise r
        return r


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    """(VmRSS, RssAnon) in KiB from /proc, or None once the process is gone."""
    vals = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    vals[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        return None
    if "VmRSS" not in vals:
        return None
    return vals["VmRSS"], vals.get("RssAnon")


class Incarnation:
    """One process of an agent slot, from start to exit."""

    def __init__(self, slot, n, proc, dyno, log_path):
        self.slot, self.n, self.proc, self.dyno = slot, n, proc, dyno
        self.log_path = log_path
        self.started = time.time()
        self.expect = None      # "kill", "term" once the driver ends it
        self.exited = None      # (time, returncode)
        self.rss_first = None
        self.rss_last = None
        self.rss_max = 0
        self.anon_first = None
        self.anon_last = None
        self.tail = []          # last lines, for evidence


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.fault_rng = random.Random(a.seed * 7919 + 1)
        self.tmp = a.tmp
        self.lock = threading.RLock()
        self.stop = threading.Event()        # the run's duration is over
        self.interrupted = False
        self.t0 = time.time()
        self.violations = []
        self.warnings = []
        self.slots = {1: [], 2: [], 3: []}   # slot -> [Incarnation]
        self.by_dyno = {}
        self.elections = []                  # (recv, dyno, token)
        self.tokens_seen = {}
        self.losses = []                     # (recv, dyno, event, token)
        self.faults = []
        self.events = []
        self.redis_proc = None
        self.fake_proc = None
        self.api = None
        self.req_offset = 0
        self.req_entries = 0
        self.patch_sent = 0
        self.patch_applied = 0
        self.gets = 0
        self.agent_events = 0
        self.formation_cur = a.initial
        self.last_applied = None
        self.max_token_patched = 0
        self.pending_patches = []
        self.resets = []                     # times the driver reset the formation
        self.kinds = a.faults.split(",") if a.faults else list(self.FAULTS)
        bad = [k for k in self.kinds if k not in self.FAULTS]
        if bad:
            raise SystemExit("soak: unknown fault kind(s) %s; known: %s"
                             % (",".join(bad), ",".join(self.FAULTS)))
        self.error_lines = 0
        self.actions_logged = {}

    # ---- bookkeeping ---------------------------------------------------

    def now(self):
        return time.time() - self.t0

    def say(self, msg):
        sys.stderr.write("[%7.1f] %s\n" % (self.now(), msg))
        sys.stderr.flush()

    def violate(self, kind, detail, evidence):
        with self.lock:
            v = {"at": round(self.now(), 3), "kind": kind, "detail": detail,
                 "evidence": evidence}
            self.violations.append(v)
        self.say("VIOLATION %s: %s" % (kind, detail))

    def warn(self, kind, detail, evidence):
        with self.lock:
            if len(self.warnings) < 200:
                self.warnings.append({"at": round(self.now(), 3), "kind": kind,
                                      "detail": detail, "evidence": evidence})

    # ---- redis ----------------------------------------------------------

    def start_redis(self):
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(self.a.redis_port), "--bind", "127.0.0.1",
             "--dir", self.tmp, "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--enable-debug-command", "local",
             "--logfile", os.path.join(self.tmp, "redis.log"), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = Resp(self.a.redis_port, 1.0)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if r.call("PING") == "PONG":
                    r.close()
                    return
            except RedisError:
                pass
            if self.redis_proc.poll() is not None:
                break
            time.sleep(0.05)
        # RuntimeError, not SystemExit: a restart that fails inside the fault
        # thread must be reported as a harness error, not end it silently.
        raise RuntimeError("redis-server did not start on port %d; see redis.log"
                           % self.a.redis_port)

    def rcall(self, conn, *args, deadline=30.0):
        """A Redis call that waits out a restart or a DEBUG SLEEP."""
        end = time.time() + deadline
        while True:
            try:
                return conn.call(*args)
            except RedisError as e:
                if time.time() > end or str(e).startswith("ERR") or str(e).startswith("WRONG"):
                    raise
                time.sleep(0.1)

    # ---- fake Platform API ---------------------------------------------

    def start_fake(self):
        self.req_file = os.path.join(self.tmp, "requests.jsonl")
        fake = os.path.join(self.a.root, "tests", "fakes", "fake_heroku.py")
        self.fake_proc = subprocess.Popen(
            [sys.executable, fake, "--port", "0", "--token", TOKEN, "--app", APP,
             "--formation", "%s=%d" % (FORMATION, self.a.initial),
             "--state-file", self.req_file, "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.tmp, "fake.log"), "w"), text=True)
        line = self.fake_proc.stdout.readline()
        if not line.startswith("listening "):
            raise SystemExit("soak: the fake Platform API did not start; see fake.log")
        self.api = "http://" + line.split()[1]

    def fake(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode() or "null")

    def formation_now(self):
        return int(self.fake("GET", "/__fake/formation/" + FORMATION)["quantity"])

    # ---- agents ----------------------------------------------------------

    def agent_env(self, slot, dyno):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SCALEKIQ_", "HEROKU_", "REDIS_"))}
        a = self.a
        env.update({
            "SCALEKIQ_REDIS_URL": "redis://127.0.0.1:%d/0" % a.redis_port,
            "HEROKU_API_URL": self.api,
            "HEROKU_API_KEY": TOKEN,
            "HEROKU_APP_NAME": APP,
            "SCALEKIQ_POLL_INTERVAL": str(a.poll),
            "SCALEKIQ_ALERT_INTERVAL": str(a.alert),
            "SCALEKIQ_LATENCY_THRESHOLD": str(a.threshold),
            "SCALEKIQ_LATENCY_RESTORED_THRESHOLD": str(a.restored),
            "SCALEKIQ_MAX_ADDITIONAL_WORKERS": str(a.max_add),
            "SCALEKIQ_LOCK_TTL": str(a.ttl),
            "SCALEKIQ_REQUEST_TIMEOUT": str(a.timeout),
            "SCALEKIQ_SOCKET": os.path.join(self.tmp, "agent%d.sock" % slot),
            # The agent's identity is DYNO (config.c); one per process, so
            # the User-Agent names the very process that sent a request.
            "DYNO": dyno,
        })
        return env

    def start_agent(self, slot):
        with self.lock:
            n = len(self.slots[slot]) + 1
        dyno = "soak.%d.r%d" % (slot, n)
        log_path = os.path.join(self.tmp, "agent-%s.log" % dyno)
        proc = subprocess.Popen([self.a.scalekiq, "run"], env=self.agent_env(slot, dyno),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        inc = Incarnation(slot, n, proc, dyno, log_path)
        with self.lock:
            self.slots[slot].append(inc)
            self.by_dyno[dyno] = inc
        threading.Thread(target=self.read_stdout, args=(inc,), daemon=True).start()
        threading.Thread(target=self.read_stderr, args=(inc,), daemon=True).start()
        return inc

    def current(self, slot):
        with self.lock:
            return self.slots[slot][-1]

    def read_stderr(self, inc):
        for raw in inc.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.violate("agent_stderr", "%s wrote on stderr (agents log on stdout only)"
                         % inc.dyno, line[:300])

    def read_stdout(self, inc):
        with open(inc.log_path, "w") as logf:
            for raw in inc.proc.stdout:
                recv = time.time()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                logf.write("%.6f %s\n" % (recv, line))
                logf.flush()
                self.on_line(inc, recv, line)
        rc = inc.proc.wait()
        inc.exited = (time.time(), rc)
        self.on_exit(inc, rc)

    def on_line(self, inc, recv, line):
        inc.tail.append(line)
        if len(inc.tail) > 12:
            del inc.tail[0]
        if not line.startswith("level="):
            self.violate("agent_bad_log_line", "%s printed a line that is not logfmt"
                         % inc.dyno, line[:300])
            return
        f = logfmt(line)
        ev, level = f.get("event", ""), f.get("level", "")
        if ev in ("scale_up", "restore"):
            key = "%s/%s" % (ev, f.get("result", "?"))
            with self.lock:
                self.actions_logged[key] = self.actions_logged.get(key, 0) + 1
        if level == "error":
            with self.lock:
                self.error_lines += 1
            if ev not in EXPECTED_ERRORS or SUSPECT_TEXT.search(line):
                self.violate("agent_internal_error", "%s logged an unexpected error"
                             % inc.dyno, line[:400])
        if ev == "leader_elected":
            token = int(f.get("token", "0") or 0)
            with self.lock:
                self.elections.append((recv, inc.dyno, token))
                other = self.tokens_seen.get(token)
                self.tokens_seen[token] = inc.dyno
            if other is not None and other != inc.dyno:
                self.violate("fence_token_reused", "token %d was given to %s and %s"
                             % (token, other, inc.dyno), line)
            if not f.get("id", "").startswith(inc.dyno + ":"):
                self.violate("leader_id_mismatch", "%s elected under another id"
                             % inc.dyno, line)
        elif ev in ("leader_lost", "leader_released", "leader_releasing",
                    "leader_abandoned"):
            with self.lock:
                self.losses.append((recv, inc.dyno, ev, int(f.get("token", "0") or 0)))

    def on_exit(self, inc, rc):
        if inc.expect == "kill" and rc == -signal.SIGKILL:
            return
        if inc.expect == "term" and rc == 0:
            return
        self.violate("agent_crashed",
                     "%s exited with status %s (expected %s)"
                     % (inc.dyno, rc, {"kill": "SIGKILL", "term": "0"}.get(inc.expect,
                                                                           "to keep running")),
                     inc.tail[-8:])

    def stop_agent(self, inc, how):
        """Ends one incarnation the way a fault asks: 'kill' or 'term'."""
        inc.expect = how
        if how == "kill":
            inc.proc.send_signal(signal.SIGKILL)
        else:
            inc.proc.send_signal(signal.SIGTERM)
        # SIGTERM: a request in flight may take up to twice the timeout.
        limit = 2 * self.a.timeout + 1 + 5
        end = time.time() + limit
        while inc.exited is None and time.time() < end:
            time.sleep(0.02)
        if inc.exited is None:
            self.violate("graceful_exit_slow", "%s did not exit %.0f s after SIGTERM"
                         % (inc.dyno, limit), inc.tail[-8:])
            inc.expect = "kill"
            inc.proc.send_signal(signal.SIGKILL)
            while inc.exited is None:
                time.sleep(0.02)
        return time.time()

    def leader_dyno(self, conn):
        try:
            v = conn.call("GET", NS + "/leader")
        except RedisError:
            return None
        if not v:
            return None
        return v.split(":", 1)[0]

    def live(self, inc):
        return inc.exited is None and inc.proc.poll() is None

    # ---- the request log: the checks on every PATCH -----------------------

    def read_requests(self):
        # The fake creates the file at start: missing later means the run's
        # scratch directory went away, and every PATCH check with it.
        with open(self.req_file, "rb") as f:
            f.seek(self.req_offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.req_offset += end + 1
        for line in data[:end].split(b"\n"):
            if line.strip():
                e = json.loads(line)
                self.req_entries += 1
                if e["method"] == "PATCH":
                    self.pending_patches.append(e)
                elif e["method"] == "GET":
                    self.gets += 1

    def check_requests(self, final=False):
        """PATCHes are judged once the agents' lines around them are in."""
        self.read_requests()
        # In the log's order (the order the fake applied them), and only a
        # second after it logged them.
        cut = time.time() - 1.0
        n = 0
        for e in self.pending_patches:
            if not final and e["time"] + e.get("duration", 0) >= cut:
                break
            n += 1
        ready, self.pending_patches = self.pending_patches[:n], self.pending_patches[n:]
        for e in ready:
            self.check_patch(e)

    def check_patch(self, e):
        self.patch_sent += 1
        ua = e.get("headers", {}).get("user-agent", "")
        m = re.search(r"\(([^)]*)\)", ua)
        dyno = m.group(1) if m else None
        t = e["time"]
        ev = {"seq": e["seq"], "time": round(t, 3), "at": round(t - self.t0, 3),
              "user_agent": ua, "body": e.get("body"), "status": e["status"],
              "injected": e["injected"], "error_id": e.get("error_id"),
              "stalled": e.get("stalled", 0), "closed": e.get("closed"),
              # The fake applies a PATCH after its stall, when it logs it.
              "applied_at": round(t + e.get("duration", 0), 3)}
        with self.lock:
            inc = self.by_dyno.get(dyno)
            mine = [x for x in self.elections if x[1] == dyno and x[0] <= t + self.a.slack]
            elected = mine[-1] if mine else None
        if inc is None:
            self.violate("patch_from_unknown", "a PATCH came from no agent of this run", ev)
        elif elected is None:
            self.violate("patch_without_lock", "%s sent a PATCH but had never been elected"
                         % dyno, ev)
        else:
            el_recv, _, token = elected
            with self.lock:
                newer = [x for x in self.elections
                         if x[1] != dyno and x[2] > token and x[0] < t]
                lost = [x for x in self.losses
                        if x[1] == dyno and el_recv <= x[0] < t and x[3] == token]
            if newer:
                self.violate("patch_by_deposed_leader",
                             "%s (token %d) sent a PATCH after %s won the lock (token %d)"
                             % (dyno, token, newer[0][1], newer[0][2]),
                             {"patch": ev, "elected_at": round(newer[0][0] - self.t0, 3)})
            elif token < self.max_token_patched:
                self.violate("patch_by_stale_token",
                             "%s (token %d) sent a PATCH after a leader with token %d did"
                             % (dyno, token, self.max_token_patched), ev)
            elif lost:
                self.warn("patch_after_own_lease_end",
                          "%s's PATCH reached the API %.3f s after it logged %s"
                          % (dyno, t - lost[0][0], lost[0][2]), ev)
            self.max_token_patched = max(self.max_token_patched, token)

        if "applied" in e:      # newer fakes say so themselves
            applied = bool(e["applied"])
        else:
            applied = (e["status"] == 200 and not e["injected"]) or \
                e.get("error_id") == APPLIED_MARK
        if not applied:
            return
        self.patch_applied += 1
        body = e.get("body") or {}
        try:
            q = int(body.get("quantity"))
        except (TypeError, ValueError):
            self.violate("patch_bad_body", "an applied PATCH without a quantity", ev)
            return
        with self.lock:
            reset = [x for x in self.resets if x < t]
            self.resets = [x for x in self.resets if x >= t]
        if reset:
            self.formation_cur = self.a.initial
        cur, init, top = self.formation_cur, self.a.initial, self.a.initial + self.a.max_add
        prev = self.last_applied
        self.last_applied = ev
        evidence = {"patch": ev, "formation_before": cur, "previous_applied": prev}
        if q != cur and prev is not None and t < prev["time"]:
            # Overtaken: this attempt arrived before the previous applied
            # PATCH but was held at the server past the client's timeout,
            # so it took effect late, behind the agent's back. The agent
            # cannot undo that; lasting harm shows as an event that does
            # not end restored. The agent's own sequence goes on from cur.
            self.last_applied = prev
            self.warn("stale_attempt_applied_late",
                      "PATCH quantity=%d arrived %.3f s before the previous applied PATCH "
                      "and took effect after it (held %.3f s at the server)"
                      % (q, prev["time"] - t, ev["stalled"]), evidence)
        elif q == cur and prev is not None and t < prev["applied_at"]:
            # The earlier attempt was still held at the server (a stall past
            # the client's timeout) when this one arrived: the agent could
            # not know it would take effect. Same target, so no harm done.
            self.warn("change_overlapped",
                      "PATCH quantity=%d arrived while an earlier PATCH %d was still held "
                      "at the server (it took effect %.3f s later)"
                      % (q, q, prev["applied_at"] - t), evidence)
        elif q == cur:
            gap = "" if prev is None else " %.0f ms after the previous one took effect (%s)" % (
                (t - prev["applied_at"]) * 1000, prev["error_id"] or prev["status"])
            self.violate("change_repeated", "PATCH quantity=%d applied again (already %d)%s"
                         % (q, cur, gap), evidence)
        elif cur == init and q == init + 1:
            self.agent_events += 1
            self.formation_cur = q
        elif cur != init and q == cur + 1 and q <= top:
            self.formation_cur = q
        elif cur != init and q == init:
            self.formation_cur = q
        else:
            self.violate("change_skipped_or_wrong",
                         "PATCH quantity=%d applied with the formation at %d (initial %d, max %d)"
                         % (q, cur, init, top), evidence)
            self.formation_cur = q

    # ---- latency events ----------------------------------------------------

    def job(self, queue, age):
        now = time.time()
        style = self.rng.choice(["float", "ms", "created"])
        j = {"class": "SoakWorker", "args": [self.rng.randrange(1 << 30)], "retry": True,
             "queue": queue, "jid": "%024x" % self.rng.getrandbits(96)}
        if style == "float":
            j["created_at"] = now - age
            j["enqueued_at"] = now - age
        elif style == "ms":
            j["created_at"] = int((now - age) * 1000)
            j["enqueued_at"] = int((now - age) * 1000)
        else:
            j["created_at"] = now - age
        return json.dumps(j)

    def run_event(self, r, k):
        ev = {"n": k, "start": round(self.now(), 3)}
        queues = self.rng.sample(QUEUES, self.rng.randint(1, len(QUEUES)))
        jobs = self.rng.randint(3, 30)
        hold = self.rng.uniform(0.5, self.a.hold_max)
        ev.update({"queues": queues, "jobs": jobs, "hold": round(hold, 2)})
        try:
            self.rcall(r, "SADD", "queues", *QUEUES)
            for q in queues:
                for _ in range(jobs):
                    self.rcall(r, "LPUSH", "queue:" + q, self.job(q, self.rng.uniform(5, 60)))
        except RedisError as e:
            self.violate("driver_redis", "could not push the event's jobs", str(e))
        self.sleep(hold)
        try:
            self.rcall(r, "DEL", *["queue:" + q for q in QUEUES])
        except RedisError as e:
            self.violate("driver_redis", "could not drain the event's jobs", str(e))
        ev["drained"] = round(self.now(), 3)
        # Recovery: formation back to its count, the event over in Redis.
        end = time.time() + self.a.restore_deadline
        last = None
        while time.time() < end:
            try:
                q = self.formation_now()
                st = r.call("MGET", NS + "/depth", INITIAL_KEY)
                last = {"formation": q, "depth": st[0], "initial_workers": st[1]}
                if q == self.a.initial and st[0] in (None, "0") and st[1] is None:
                    ev["restored"] = round(self.now(), 3)
                    ev["recovery_s"] = round(ev["restored"] - ev["drained"], 3)
                    break
            except (RedisError, OSError, ValueError):
                pass
            time.sleep(0.1)
        else:
            ev["restored"] = None
            self.violate("event_not_restored",
                         "event %d: not back to %d workers with depth 0 %.0f s after the drain"
                         % (k, self.a.initial, self.a.restore_deadline),
                         {"last_seen": last,
                          "agents": {i.dyno: i.tail[-6:] for i in
                                     (self.current(s) for s in self.slots)}})
            # Put the run back on its feet so the next events mean something.
            self.recover_state(r)
        with self.lock:
            self.events.append(ev)

    def recover_state(self, r):
        try:
            self.fake("POST", "/__fake/formation", {"type": FORMATION,
                                                   "quantity": self.a.initial})
            with self.lock:
                self.resets.append(time.time())
            r.call("DEL", NS + "/depth", INITIAL_KEY, NS + "/latency_event_started")
        except (RedisError, OSError):
            pass

    def sleep(self, s):
        end = time.time() + s
        while time.time() < end:
            time.sleep(min(0.05, max(0.0, end - time.time())))

    # ---- faults -------------------------------------------------------------

    FAULTS = ["kill9_leader", "kill9_follower", "sigstop_leader", "redis_restart",
              "redis_debug_sleep", "api_503_burst", "api_429", "api_stall",
              "api_close_mid_reply", "api_apply_lost_reply", "api_non_json_200",
              "sigterm_restart"]

    def pick_slot(self, r, leader):
        ld = self.leader_dyno(r)
        slots = list(self.slots)
        lead = [s for s in slots if self.current(s).dyno == ld]
        if leader:
            return lead[0] if lead else None
        rest = [s for s in slots if s not in lead]
        return self.fault_rng.choice(rest) if rest else None

    def watch_takeover(self, r, dyno, limit):
        """Seconds until another agent holds the lock, or None."""
        t0 = time.time()
        while time.time() < t0 + limit:
            ld = self.leader_dyno(r)
            if ld and ld != dyno:
                return round(time.time() - t0, 3)
            time.sleep(0.02)
        return None

    def inject(self, r, kind):
        frng = self.fault_rng
        info = {"kind": kind, "at": round(self.now(), 3)}
        t = self.a.timeout
        if kind in ("kill9_leader", "kill9_follower"):
            slot = self.pick_slot(r, kind == "kill9_leader")
            if slot is None:
                return None
            inc = self.current(slot)
            info["target"] = inc.dyno
            delay = frng.uniform(0, 2)
            t0 = self.stop_agent(inc, "kill")
            if kind == "kill9_leader":
                info["takeover_s"] = self.watch_takeover(r, inc.dyno, 10.0)
            self.sleep(t0 + delay - time.time())
            info["restarted"] = self.start_agent(slot).dyno
        elif kind == "sigterm_restart":
            slot = self.pick_slot(r, frng.random() < 0.5)
            if slot is None:
                slot = frng.choice(list(self.slots))
            inc = self.current(slot)
            info["target"] = inc.dyno
            t0 = time.time()
            self.stop_agent(inc, "term")
            info["exit_s"] = round(time.time() - t0, 3)
            self.sleep(frng.uniform(0, 1))
            info["restarted"] = self.start_agent(slot).dyno
        elif kind == "sigstop_leader":
            slot = self.pick_slot(r, True)
            if slot is None:
                return None
            inc = self.current(slot)
            info["target"] = inc.dyno
            stop_for = self.a.ttl * 2 + frng.uniform(0, 3)
            info["stopped_s"] = round(stop_for, 2)
            inc.proc.send_signal(signal.SIGSTOP)
            t0 = time.time()
            taken = None
            while time.time() < t0 + stop_for:
                ld = self.leader_dyno(r)
                if taken is None and ld and ld != inc.dyno:
                    taken = time.time() - t0
                time.sleep(0.05)
            inc.proc.send_signal(signal.SIGCONT)
            info["takeover_s"] = None if taken is None else round(taken, 3)
        elif kind == "redis_restart":
            how = frng.choice(["kill", "shutdown"])
            info["how"] = how
            if how == "kill":
                self.redis_proc.kill()
            else:
                try:
                    Resp(self.a.redis_port, 5).call("SHUTDOWN")
                except RedisError:
                    pass      # the connection drops as it shuts down
            self.redis_proc.wait()
            down = frng.uniform(0.2, 3)
            info["down_s"] = round(down, 2)
            self.sleep(down)
            r.close()
            self.start_redis()
        elif kind == "redis_debug_sleep":
            s = t + frng.uniform(0.3, 1.5)
            info["sleep_s"] = round(s, 2)
            try:
                Resp(self.a.redis_port, s + 10).call("DEBUG", "SLEEP", "%.2f" % s)
            except RedisError as e:
                info["error"] = str(e)
        elif kind == "api_503_burst":
            n = frng.randint(2, 7)
            info["count"] = n
            self.fake("POST", "/__fake/fail", {"count": n, "status": 503})
        elif kind == "api_429":
            n = frng.randint(1, 3)
            info["count"] = n
            self.fake("POST", "/__fake/fail", {"count": n, "status": 429,
                                                "headers": {"RateLimit-Remaining": "0"}})
        elif kind == "api_stall":
            n = frng.randint(1, 2)
            s = t + frng.uniform(0.2, 1.5)
            # "reply": handled at once, the reply held (a newer fake's rule).
            phase = frng.choice(["before", "reply"])
            info.update({"count": n, "seconds": round(s, 2), "phase": phase})
            try:
                self.fake("POST", "/__fake/stall", {"count": n, "seconds": s, "phase": phase})
            except urllib.error.HTTPError:
                info["phase"] = "before (the fake has no reply phase)"
                self.fake("POST", "/__fake/stall", {"count": n, "seconds": s})
        elif kind == "api_close_mid_reply":
            how = frng.choice(["mid", "immediate"])
            info["close"] = how
            self.fake("POST", "/__fake/fail", {"count": 1, "status": 200, "close": how})
        elif kind == "api_apply_lost_reply":
            self.fake("POST", "/__fake/fail", {"count": 1, "status": 503, "method": "PATCH",
                                                "apply": True, "close": "immediate",
                                                "id": APPLIED_MARK})
        elif kind == "api_non_json_200":
            self.fake("POST", "/__fake/fail",
                      {"count": 1, "status": 200, "body": "<html><body>oops</body></html>",
                       "headers": {"Content-Type": "text/html"}})
        return info

    def recovered(self, r):
        """Three agents run, and the lock is held by one of them."""
        end = time.time() + self.a.recover_deadline
        t0 = time.time()
        while time.time() < end:
            alive = all(self.live(self.current(s)) for s in self.slots)
            ld = self.leader_dyno(r)
            if alive and ld and any(self.current(s).dyno == ld for s in self.slots):
                return time.time() - t0
            time.sleep(0.05)
        return None

    def fault_loop(self):
        r = Resp(self.a.redis_port)
        while not self.stop.is_set():
            wait = min(max(self.fault_rng.expovariate(1.0 / self.a.fault_mean), 1.0),
                       4 * self.a.fault_mean)
            if self.stop.wait(wait):
                break
            kind = self.fault_rng.choice(self.kinds)
            nviol = len(self.violations)
            try:
                info = self.inject(r, kind)
            except Exception as e:    # a fault that could not be set up is a harness error
                self.violate("harness_error", "injecting %s failed" % kind, repr(e))
                continue
            if info is None:
                continue
            rec = self.recovered(r)
            info["recovered_s"] = None if rec is None else round(rec, 3)
            if rec is None:
                self.violate("not_recovered",
                             "%s: no live agent held the lock %.0f s after the fault"
                             % (kind, self.a.recover_deadline), info)
            info["survived"] = rec is not None and len(self.violations) == nviol
            with self.lock:
                self.faults.append(info)
            self.say("fault %s %s" % (kind, "survived" if info["survived"] else "NOT survived"))
        r.close()

    # ---- the run -------------------------------------------------------------

    def sample_rss(self):
        with self.lock:
            incs = [i for s in self.slots.values() for i in s if i.exited is None]
        for inc in incs:
            got = rss_kib(inc.proc.pid)
            if got is None:
                continue
            kib, anon = got
            if inc.rss_first is None and time.time() - inc.started >= 2:
                inc.rss_first, inc.anon_first = kib, anon
            if inc.rss_first is not None:
                inc.rss_last, inc.anon_last = kib, anon
                inc.rss_max = max(inc.rss_max, kib)

    def monitor_loop(self):
        last_progress = time.time()
        reported = False
        while not self.done_monitoring.is_set():
            try:
                self.check_requests()
            except Exception as e:
                if not reported:     # once: it would repeat every half second
                    self.violate("harness_error", "reading the request log failed", repr(e))
                reported = True
            self.sample_rss()
            if time.time() - last_progress >= self.a.progress:
                last_progress = time.time()
                self.say("progress: %d events, %d faults, %d PATCHes sent, %d applied, "
                         "%d violations" % (len(self.events), len(self.faults),
                                            self.patch_sent, self.patch_applied,
                                            len(self.violations)))
            self.done_monitoring.wait(0.5)

    def final_checks(self, r):
        fin = {}
        try:
            fin["formation"] = self.formation_now()
        except (OSError, ValueError) as e:
            fin["formation"] = repr(e)
        keys = [NS + "/depth", NS + "/latency_event_started", INITIAL_KEY, NS + "/paused",
                NS + "/leader"]
        vals = self.rcall(r, "MGET", *keys)
        fin["redis_running"] = dict(zip(keys, vals))
        if fin["formation"] != self.a.initial:
            self.violate("final_formation", "the formation ends at %s, not %d"
                         % (fin["formation"], self.a.initial), fin)
        if vals[0] not in (None, "0") or vals[2] is not None or vals[3] is not None \
                or vals[1] not in (None, "0", "0.0"):
            self.violate("final_state_dirty", "the shared state is not idle at the end", fin)
        # Graceful stop of every agent: exit 0, and the lock released.
        for s in self.slots:
            inc = self.current(s)
            if self.live(inc):
                self.stop_agent(inc, "term")
        vals = self.rcall(r, "MGET", *keys)
        fin["redis_after_stop"] = dict(zip(keys, vals))
        if vals[4] is not None:
            self.violate("final_lock_left", "the lock is still held after every agent stopped",
                         fin["redis_after_stop"])
        left = [q for q in QUEUES if r.call("LLEN", "queue:" + q)]
        if left:
            self.violate("final_queues_left", "queues not empty at the end", left)
        return fin

    def run(self):
        a = self.a
        self.say("soak: seed %d, %.0f s, agents %s" % (a.seed, a.duration, a.scalekiq))
        try:
            self.start_redis()
        except RuntimeError as e:
            raise SystemExit("soak: %s" % e)
        self.start_fake()
        for s in self.slots:
            self.start_agent(s)
        r = Resp(a.redis_port)
        if self.recovered(r) is None:
            raise SystemExit("soak: no agent took the lock at start; logs in " + self.tmp)
        self.done_monitoring = threading.Event()
        mon = threading.Thread(target=self.monitor_loop, daemon=True)
        mon.start()
        ft = threading.Thread(target=self.fault_loop, daemon=True)
        ft.start()
        k = 0
        end = self.t0 + a.duration
        while time.time() < end and not self.interrupted:
            k += 1
            try:
                self.fake("POST", "/__fake/ratelimit", {"remaining": 4500})
            except OSError:
                pass
            self.run_event(r, k)
            self.sleep(self.rng.uniform(0.3, 2.5))
        self.stop.set()
        ft.join()
        # The last fault may have hit the last event's tail: settle once more.
        self.run_event_settle(r)
        self.sample_rss()
        rss_end = {s: (self.current(s).rss_last, self.current(s).anon_last)
                   for s in self.slots}
        fin = self.final_checks(r)
        self.done_monitoring.set()
        mon.join()
        time.sleep(1.0)
        try:
            self.check_requests(final=True)
        except Exception as e:
            self.violate("harness_error", "reading the request log failed", repr(e))
        self.elapsed = self.now()
        return self.report(fin, rss_end)

    def run_event_settle(self, r):
        end = time.time() + self.a.restore_deadline
        while time.time() < end:
            try:
                if self.formation_now() == self.a.initial and \
                        r.call("GET", NS + "/depth") in (None, "0"):
                    return
            except (RedisError, OSError):
                pass
            time.sleep(0.1)

    # ---- the report -------------------------------------------------------------

    def report(self, fin, rss_end):
        a = self.a
        by_kind = {}
        for f in self.faults:
            d = by_kind.setdefault(f["kind"], {"injected": 0, "survived": 0})
            d["injected"] += 1
            d["survived"] += 1 if f["survived"] else 0
        slots = {}
        for s, incs in self.slots.items():
            slots["agent%d" % s] = {
                "processes": len(incs), "restarts": len(incs) - 1,
                "rss_start_kib": next((i.rss_first for i in incs if i.rss_first), None),
                "rss_anon_start_kib": next((i.anon_first for i in incs if i.rss_first), None),
                "rss_start_process": next((i.dyno for i in incs if i.rss_first), None),
                "rss_end_kib": rss_end[s][0], "rss_anon_end_kib": rss_end[s][1],
                "rss_max_kib": max(i.rss_max for i in incs),
                "end_process": incs[-1].dyno}
        restored = [e for e in self.events if e.get("restored") is not None]
        rec = sorted(e["recovery_s"] for e in restored)
        def spread(vals):
            vals = sorted(x for x in vals if x is not None)
            if not vals:
                return None
            return {"n": len(vals), "median": vals[len(vals) // 2], "max": vals[-1]}
        timing = {
            "takeover_after_kill9_s": spread(f.get("takeover_s") for f in self.faults
                                             if f["kind"] == "kill9_leader"),
            "takeover_during_sigstop_s": spread(f.get("takeover_s") for f in self.faults
                                                if f["kind"] == "sigstop_leader"),
            "exit_after_sigterm_s": spread(f.get("exit_s") for f in self.faults
                                           if f["kind"] == "sigterm_restart"),
        }
        missed = [f for f in self.faults if f["kind"] in ("kill9_leader", "sigstop_leader")
                  and f.get("takeover_s") is None]
        kinds = {}
        for v in self.violations:
            kinds[v["kind"]] = kinds.get(v["kind"], 0) + 1
        out = {
            "benchmark": "soak", "partial": self.interrupted,
            "seed": a.seed, "duration_s": round(self.elapsed, 1),
            "duration_asked_s": a.duration,
            "settings": {"poll": a.poll, "alert_interval": a.alert,
                         "threshold": a.threshold, "restored_threshold": a.restored,
                         "max_additional": a.max_add, "lock_ttl": a.ttl,
                         "request_timeout": a.timeout, "initial_workers": a.initial,
                         "agents": 3, "fault_mean_s": a.fault_mean,
                         "fault_kinds": self.kinds},
            "events": len(self.events), "events_restored": len(restored),
            "agent_events_seen_by_api": self.agent_events,
            "restore_after_drain_s": {"median": rec[len(rec) // 2] if rec else None,
                                      "max": rec[-1] if rec else None},
            "api_requests": self.req_entries, "gets": self.gets,
            "patches_sent": self.patch_sent, "patches_applied": self.patch_applied,
            "agent_actions_logged": self.actions_logged,
            "agent_error_lines": self.error_lines,
            "faults": {"total": len(self.faults),
                       "survived": sum(1 for f in self.faults if f["survived"]),
                       "by_kind": by_kind},
            "timing": timing, "takeovers_missed": len(missed),
            "agents": slots, "final": fin,
            "violations": len(self.violations), "violations_by_kind": kinds,
            "violation_list": self.violations,
            "warnings": self.warnings,
            "fault_list": self.faults,
        }
        return out


def print_summary(o):
    w = sys.stdout.write
    w("\n== scalekiq soak%s ==\n" % (" (PARTIAL: stopped early)" if o["partial"] else ""))
    s = o["settings"]
    w("duration %.0f s (asked %.0f), seed %d; 3 agents, poll %g s, alert %g s, threshold "
      "%g/%g s, max +%d, lock TTL %g s, request timeout %g s, initial workers %d\n"
      % (o["duration_s"], o["duration_asked_s"], o["seed"], s["poll"], s["alert_interval"],
         s["threshold"], s["restored_threshold"], s["max_additional"], s["lock_ttl"],
         s["request_timeout"], s["initial_workers"]))
    r = o["restore_after_drain_s"]
    w("latency events: %d driven, %d restored (drain -> restored: median %s s, max %s s); "
      "%d seen by the API\n" % (o["events"], o["events_restored"], r["median"], r["max"],
                                o["agent_events_seen_by_api"]))
    w("API: %d requests, %d GET, %d PATCH sent, %d applied\n"
      % (o["api_requests"], o["gets"], o["patches_sent"], o["patches_applied"]))
    w("agent action lines: %s\n" % ", ".join("%s %d" % kv for kv in
                                             sorted(o["agent_actions_logged"].items())))
    f = o["faults"]
    w("faults: %d injected, %d survived\n" % (f["total"], f["survived"]))
    for k, d in sorted(f["by_kind"].items()):
        w("  %-22s %4d injected %4d survived\n" % (k, d["injected"], d["survived"]))
    for k, d in sorted(o["timing"].items()):
        if d:
            w("%s: median %.3f, max %.3f (n=%d)\n" % (k, d["median"], d["max"], d["n"]))
    w("agents (VmRSS KiB at start of the first process / at end of the last):\n")
    for name, d in sorted(o["agents"].items()):
        w("  %s: %s -> %s (max %s; anonymous %s -> %s), %d restarts, first sampled %s, "
          "last %s\n"
          % (name, d["rss_start_kib"], d["rss_end_kib"], d["rss_max_kib"],
             d["rss_anon_start_kib"], d["rss_anon_end_kib"], d["restarts"],
             d["rss_start_process"], d["end_process"]))
    w("final: formation %s; state %s\n" % (o["final"].get("formation"),
                                           json.dumps(o["final"].get("redis_after_stop"))))
    w("warnings: %d (%s)\n" % (len(o["warnings"]), ", ".join(sorted(
        {x["kind"] for x in o["warnings"]})) or "none"))
    w("violations: %d\n" % o["violations"])
    for v in o["violation_list"]:
        w("  [%8.1f s] %s: %s\n      evidence: %s\n"
          % (v["at"], v["kind"], v["detail"], json.dumps(v["evidence"])[:1500]))
    w("result: %s\n" % ("PASS" if o["violations"] == 0 else "FAIL"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scalekiq", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--duration", type=float, default=3600)
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--poll", type=float, default=0.2)
    p.add_argument("--alert", type=float, default=1)
    p.add_argument("--threshold", type=float, default=1.5)
    p.add_argument("--restored", type=float, default=1.0)
    p.add_argument("--max-add", type=int, default=2)
    p.add_argument("--ttl", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--initial", type=int, default=2)
    p.add_argument("--hold-max", type=float, default=6.0)
    p.add_argument("--fault-mean", type=float, default=6.0)
    p.add_argument("--restore-deadline", type=float, default=60.0)
    p.add_argument("--recover-deadline", type=float, default=20.0)
    p.add_argument("--slack", type=float, default=0.5)
    p.add_argument("--progress", type=float, default=60.0)
    p.add_argument("--faults", default="", help="comma list of fault kinds (default all)")
    a = p.parse_args()
    a.redis_port = free_port()
    soak = Soak(a)

    def on_signal(signum, frame):
        soak.interrupted = True
        soak.say("signal %d: ending the run early (partial)" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        out = soak.run()
    finally:
        for incs in soak.slots.values():
            for inc in incs:
                if inc.proc.poll() is None:
                    inc.proc.send_signal(signal.SIGCONT)
                    inc.proc.kill()
                    inc.proc.wait()
        for proc in (soak.fake_proc, soak.redis_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print_summary(out)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items()
                      if k not in ("violation_list", "warnings", "fault_list")}))
    return 0 if out["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
