#!/usr/bin/env python3
"""A fake Heroku Platform API (formation endpoints only) for scalekiq's tests.

Python 3 standard library only. See tests/fakes/README.md for the flags and
the control API. Summary:

    fake_heroku.py --port 0 --token T [--app APP] [--formation worker=1 ...]
                   [--state-file F] [--max-quantity N] [--rate-limit N]

prints "listening 127.0.0.1:PORT" once ready, serves until SIGTERM/SIGINT
(exit 0). Logs go to stderr only; stdout carries that one line.

API (needs Accept: application/vnd.heroku+json; version=3 and
Authorization: Bearer T):
    GET   /apps/{app}/formation             list
    PATCH /apps/{app}/formation             batch update {"updates": [...]}
    GET   /apps/{app}/formation/{type}      info
    PATCH /apps/{app}/formation/{type}      update {"quantity": N, ...}
Control (no auth), under /__fake/: requests, reset, fail, stall, stalled,
ratelimit, formation.
"""

import argparse
import json
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

ACCEPT_MEDIA_TYPE = "application/vnd.heroku+json"
ACCEPT_VERSION = "3"
DEFAULT_RATE_LIMIT = 4500
DEFAULT_MAX_QUANTITY = 100
DEFAULT_APP = "scalekiq-fake"
DEFAULT_SIZE = "Standard-1X"
MAX_BODY = 1 << 20          # bodies above this get 413
MAX_DRAIN = 16 << 20        # ... and are read and discarded up to this size
LOG_RAW_BODY_LIMIT = 4096
IDLE_TIMEOUT = 60           # seconds a keep-alive connection may sit idle

# Namespace for the deterministic ids (uuid5) of apps, formations and sizes.
FAKE_NS = uuid.UUID("5d0f3a52-8e0b-4c6e-9a52-0c1f6a7e2b11")

# From the schema: definitions.app.definitions.name.pattern and
# definitions.formation.definitions.type.pattern (\w is ASCII in ECMA-262).
APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
TYPE_RE = re.compile(r"^[-\w]{1,128}$", re.ASCII)
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DIGITS_RE = re.compile(r"^[0-9]{1,18}$")

DYNO_SIZES = ["Eco", "Basic", "Standard-1X", "Standard-2X", "Performance-M",
              "Performance-L", "Performance-L-RAM", "Performance-XL",
              "Performance-2XL", "Private-S", "Private-M", "Private-L",
              "Shield-S", "Shield-M", "Shield-L"]

# Default error ids per status, as in Heroku's Platform API reference.
STATUS_IDS = {
    400: "bad_request", 401: "unauthorized", 402: "delinquent",
    403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 410: "gone",
    411: "length_required", 413: "request_too_large",
    416: "requested_range_not_satisfiable", 422: "invalid_params",
    429: "rate_limit", 431: "bad_request", 500: "internal_server_error",
    501: "not_implemented", 502: "bad_gateway", 503: "service_unavailable",
    504: "gateway_timeout", 505: "bad_request",
}

# Request headers copied (lower-cased) into each request-log entry.
LOGGED_HEADERS = ("accept", "authorization", "content-type", "content-length",
                  "user-agent", "request-id", "x-request-id", "range",
                  "if-none-match", "connection", "transfer-encoding")


def iso8601(t):
    """Epoch seconds -> "2012-01-01T12:00:00Z" (the schema's example style)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def dyno_size_id(name):
    return str(uuid.uuid5(FAKE_NS, "dyno-size:" + name.lower()))


def canonical_size(name):
    if not isinstance(name, str):
        return None
    for s in DYNO_SIZES:
        if s.lower() == name.strip().lower():
            return s
    return None


def parse_quantity(value):
    """A JSON integer or a string of ASCII digits, >= 0; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and DIGITS_RE.match(value):
        return int(value)
    return None


def _reject_constant(name):
    raise ValueError("invalid JSON constant " + name)


class ApiError(Exception):
    def __init__(self, status, error_id, message, headers=None):
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = headers or {}


def parse_json(raw, empty=None):
    """Parse a request body; garbage -> ApiError 400 bad_request."""
    if raw is None or not raw.strip():
        return empty
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "Request body is not valid UTF-8.")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_request", "Request body is not valid JSON.")


def parse_json_object(raw):
    obj = parse_json(raw, empty={})
    if not isinstance(obj, dict):
        raise ApiError(422, "invalid_params",
                       "Request body must be a JSON object.")
    return obj


class Fake:
    """All mutable state, guarded by one lock."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.token = args.token
        self.app_name = args.app
        self.app_id = args.app_id or str(uuid.uuid5(FAKE_NS, "app:" + args.app))
        self.max_quantity = args.max_quantity
        self.require_accept = not args.lax_accept
        self.default_size = args.size
        self.rate_limit_initial = args.rate_limit
        self.remaining = args.rate_limit
        self.quiet = args.quiet
        self.formations = {}      # type -> record
        self.initial_formation = list(args.formation or [("worker", 1)])
        self._restore_formation()
        self.requests = []
        self.seq = 0
        self.fails = []           # FIFO of {"left": n, ...}
        self.stalls = []
        self.holding = {}         # id -> request held by a stall rule right now
        self.hold_seq = 0
        self.state_path = args.state_file
        self.state_fh = None
        if self.state_path:
            self.state_fh = open(self.state_path, "w", encoding="utf-8")

    # -- formation records ------------------------------------------------

    def _put_formation(self, ftype, quantity, size, now):
        rec = self.formations.get(ftype)
        if rec is None:
            rec = {
                "id": str(uuid.uuid5(FAKE_NS, "formation:%s:%s"
                                     % (self.app_id, ftype))),
                "type": ftype,
                "quantity": 0,
                "size": self.default_size,
                "command": ("bundle exec puma -C config/puma.rb" if ftype == "web"
                            else "bundle exec sidekiq -C config/sidekiq.yml"),
                "created_at": now,
                "updated_at": now,
            }
            self.formations[ftype] = rec
        rec["quantity"] = quantity
        if size is not None:
            rec["size"] = size
        rec["updated_at"] = now
        return rec

    def _restore_formation(self):
        """Back to the process types and quantities given at start-up."""
        self.formations = {}
        now = time.time()
        for ftype, qty in self.initial_formation:
            self._put_formation(ftype, qty, None, now)

    def formation_json(self, rec):
        return {
            "app": {"id": self.app_id, "name": self.app_name},
            "command": rec["command"],
            "created_at": iso8601(rec["created_at"]),
            "dyno_size": {"id": dyno_size_id(rec["size"]), "name": rec["size"]},
            "id": rec["id"],
            "quantity": rec["quantity"],
            "size": rec["size"],
            "type": rec["type"],
            "updated_at": iso8601(rec["updated_at"]),
        }

    def _find_app(self, ident):
        return ident == self.app_name or ident.lower() == self.app_id.lower()

    def _find_formation(self, ident):
        rec = self.formations.get(ident)
        if rec is not None:
            return rec
        for r in self.formations.values():
            if r["id"].lower() == ident.lower():
                return r
        return None

    # -- injections --------------------------------------------------------

    def _take(self, queue, method=None):
        """The first rule that applies to method (a rule without "method"
        applies to every request), used up one request at a time; a rule
        with a duration applies to every request until it lapses."""
        now = time.monotonic()
        with self.lock:
            queue[:] = [r for r in queue if r.get("until") is None or r["until"] > now]
            for i, rule in enumerate(queue):
                if rule.get("method") not in (None, method):
                    continue
                if rule.get("until") is None:
                    rule["left"] -= 1
                    if rule["left"] <= 0:
                        queue.pop(i)
                return dict(rule)
            return None

    def take_stall(self, method=None):
        return self._take(self.stalls, method)

    def hold_begin(self, info):
        with self.lock:
            self.hold_seq += 1
            self.holding[self.hold_seq] = info
            return self.hold_seq

    def hold_end(self, key):
        with self.lock:
            self.holding.pop(key, None)

    def take_fail(self, method=None):
        return self._take(self.fails, method)

    def consume_token(self):
        """Spend one rate-limit token: (remaining after, exhausted before)."""
        with self.lock:
            if self.remaining <= 0:
                return 0, True
            self.remaining -= 1
            return self.remaining, False

    # -- request log -------------------------------------------------------

    def record(self, entry):
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.requests.append(entry)
            if self.state_fh is not None:
                try:
                    self.state_fh.write(json.dumps(entry, sort_keys=True) + "\n")
                    self.state_fh.flush()
                except OSError as e:
                    sys.stderr.write("fake_heroku: state file: %s\n" % e)

    def reset(self, formation=False):
        with self.lock:
            if formation:
                self._restore_formation()
            self.requests = []
            self.seq = 0
            self.fails = []
            self.stalls = []
            self.remaining = self.rate_limit_initial
            if self.state_fh is not None:
                self.state_fh.seek(0)
                self.state_fh.truncate()
                self.state_fh.flush()

    # -- the API -----------------------------------------------------------

    def handle_api(self, method, path, headers, raw, read_error, exhausted):
        """Returns (status, JSON-able payload); raises ApiError."""
        if read_error is not None:
            raise read_error
        if self.require_accept and not accept_ok(headers.get("Accept")):
            raise ApiError(406, "not_acceptable",
                           "Set the Accept header to \"%s; version=%s\" and "
                           "try again." % (ACCEPT_MEDIA_TYPE, ACCEPT_VERSION))
        if not self.auth_ok(headers.get("Authorization")):
            raise ApiError(401, "unauthorized", "Invalid credentials provided.")
        if exhausted:
            raise ApiError(429, "rate_limit",
                           "Your account reached the API rate limit. "
                           "Wait a few minutes before making new requests.")
        segs = [unquote(s) for s in path.split("/")[1:]]
        if (len(segs) not in (3, 4) or segs[0] != "apps" or segs[2] != "formation"
                or not segs[1] or (len(segs) == 4 and not segs[3])
                or method not in ("GET", "PATCH")):
            raise ApiError(404, "not_found",
                           "No such API endpoint: check the path, the HTTP "
                           "method and the Accept header's version.")
        if not self._find_app(segs[1]):
            raise ApiError(404, "not_found", "Couldn't find that app.")
        if len(segs) == 3:
            if method == "GET":
                with self.lock:
                    recs = sorted(self.formations.values(), key=lambda r: r["type"])
                    return 200, [self.formation_json(r) for r in recs]
            return self._batch_update(raw)
        with self.lock:
            rec = self._find_formation(segs[3])
            if rec is None:
                raise ApiError(404, "not_found",
                               "Couldn't find that process type (%s)." % segs[3])
            if method == "GET":
                return 200, self.formation_json(rec)
        body = parse_json_object(raw)
        with self.lock:
            rec = self._find_formation(segs[3])
            if rec is None:
                raise ApiError(404, "not_found",
                               "Couldn't find that process type (%s)." % segs[3])
            quantity, size = self._check_update(rec, body)
            self._put_formation(rec["type"], quantity, size, time.time())
            return 200, self.formation_json(rec)

    def _check_update(self, rec, upd):
        """Validate one update against rec; returns (quantity, size)."""
        size = rec["size"]
        if "size" in upd:
            size = canonical_size(upd["size"])
            if size is None:
                raise ApiError(422, "invalid_params",
                               "Invalid size: %s." % json.dumps(upd["size"]))
        if "dyno_size" in upd:
            ds = upd["dyno_size"]
            size = None
            if isinstance(ds, dict) and isinstance(ds.get("name"), str):
                size = canonical_size(ds["name"])
            elif isinstance(ds, dict) and isinstance(ds.get("id"), str):
                size = next((s for s in DYNO_SIZES
                             if dyno_size_id(s) == ds["id"].lower()), None)
            if size is None:
                raise ApiError(422, "invalid_params", "Invalid dyno_size.")
        quantity = rec["quantity"]
        if "quantity" in upd:
            quantity = parse_quantity(upd["quantity"])
            if quantity is None:
                raise ApiError(422, "invalid_params",
                               "Invalid quantity: %s is not a non-negative "
                               "integer." % json.dumps(upd["quantity"]))
            if quantity > self.max_quantity:
                raise ApiError(422, "cannot_run_above_limit",
                               "Cannot run more than %d %s dynos of process "
                               "type %s." % (self.max_quantity, size, rec["type"]))
        return quantity, size

    def _batch_update(self, raw):
        body = parse_json_object(raw)
        updates = body.get("updates")
        if not isinstance(updates, list) or not updates:
            raise ApiError(422, "invalid_params",
                           "\"updates\" must be a non-empty array.")
        with self.lock:
            planned = []
            for upd in updates:
                if not isinstance(upd, dict) or not isinstance(upd.get("type"), str):
                    raise ApiError(422, "invalid_params",
                                   "Each update needs a \"type\".")
                rec = self._find_formation(upd["type"])
                if rec is None:
                    raise ApiError(404, "not_found",
                                   "Couldn't find that process type (%s)."
                                   % upd["type"])
                planned.append((rec, self._check_update(rec, upd)))
            now = time.time()
            for rec, (quantity, size) in planned:
                self._put_formation(rec["type"], quantity, size, now)
            return 200, [self.formation_json(rec) for rec, _ in planned]

    def auth_ok(self, value):
        if not value:
            return False
        parts = value.strip().split(None, 1)
        return (len(parts) == 2 and parts[0].lower() == "bearer"
                and parts[1].strip() == self.token)

    # -- the control API -----------------------------------------------------

    def handle_control(self, method, path, raw):
        segs = [unquote(s) for s in path.split("/")[2:]]
        name = segs[0] if segs else ""
        if name == "requests" and len(segs) == 1 and method == "GET":
            with self.lock:
                return 200, list(self.requests)
        if name == "reset" and len(segs) == 1 and method == "POST":
            body = parse_json_object(raw)
            if not isinstance(body.get("formation", False), bool):
                raise ApiError(422, "invalid_params", "\"formation\" must be a boolean.")
            self.reset(formation=body.get("formation", False))
            return 200, {"ok": True}
        if name == "fail" and len(segs) == 1 and method == "POST":
            rule = self._fail_rule(parse_json_object(raw))
            with self.lock:
                self.fails.append(rule)
            return 200, {"ok": True, "queued": rule}
        if name == "stalled" and len(segs) == 1 and method == "GET":
            with self.lock:
                return 200, [dict(v) for _, v in sorted(self.holding.items())]
        if name == "stall" and len(segs) == 1 and method == "POST":
            rule = self._stall_rule(parse_json_object(raw))
            with self.lock:
                self.stalls.append(rule)
            return 200, {"ok": True, "queued": rule}
        if name == "ratelimit" and len(segs) == 1:
            if method == "POST":
                body = parse_json_object(raw)
                n = body.get("remaining")
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ApiError(422, "invalid_params",
                                   "\"remaining\" must be an integer >= 0.")
                with self.lock:
                    self.remaining = n
            if method in ("GET", "POST"):
                with self.lock:
                    return 200, {"remaining": self.remaining}
        if name == "formation" and method == "GET":
            with self.lock:
                if len(segs) == 1:
                    recs = sorted(self.formations.values(), key=lambda r: r["type"])
                    return 200, [self.formation_json(r) for r in recs]
                if len(segs) == 2:
                    rec = self.formations.get(segs[1])
                    if rec is None:
                        raise ApiError(404, "not_found",
                                       "No formation of type %s." % segs[1])
                    return 200, self.formation_json(rec)
        if name == "formation" and len(segs) == 1 and method == "POST":
            body = parse_json_object(raw)
            ftype = body.get("type")
            if not isinstance(ftype, str) or not TYPE_RE.match(ftype):
                raise ApiError(422, "invalid_params",
                               "\"type\" must match ^[-\\w]{1,128}$.")
            quantity = parse_quantity(body.get("quantity"))
            if quantity is None:
                raise ApiError(422, "invalid_params",
                               "\"quantity\" must be an integer >= 0.")
            size = None
            if "size" in body:
                size = canonical_size(body["size"])
                if size is None:
                    raise ApiError(422, "invalid_params", "Unknown size.")
            with self.lock:
                rec = self._put_formation(ftype, quantity, size, time.time())
                return 200, self.formation_json(rec)
        raise ApiError(404, "not_found", "No such control endpoint: %s %s"
                       % (method, path))

    @staticmethod
    def _count(body):
        n = body.get("count", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ApiError(422, "invalid_params", "\"count\" must be an integer >= 0.")
        return n

    def _fail_rule(self, body):
        rule = {"left": self._count(body)}
        status = body.get("status", 503)
        if (isinstance(status, bool) or not isinstance(status, int)
                or not 200 <= status <= 599 or status in (204, 304)):
            raise ApiError(422, "invalid_params",
                           "\"status\" must be an integer in 200..599 "
                           "(not 204 or 304).")
        rule["status"] = status
        if body.get("duration") is not None:
            d = body["duration"]
            if (isinstance(d, bool) or not isinstance(d, (int, float))
                    or not 0 < d <= 3600):
                raise ApiError(422, "invalid_params",
                               "\"duration\" must be a number of seconds in (0, 3600].")
            rule["duration"] = float(d)
            rule["until"] = time.monotonic() + d
        if body.get("method") is not None:
            if body["method"] not in ("GET", "PATCH"):
                raise ApiError(422, "invalid_params",
                               "\"method\" must be \"GET\" or \"PATCH\".")
            rule["method"] = body["method"]
        for key in ("id", "message", "body"):
            if key in body and body[key] is not None:
                if not isinstance(body[key], str):
                    raise ApiError(422, "invalid_params",
                                   "\"%s\" must be a string." % key)
                rule[key] = body[key]
        hdrs = body.get("headers") or {}
        if not isinstance(hdrs, dict):
            raise ApiError(422, "invalid_params", "\"headers\" must be an object.")
        clean = {}
        for k, v in hdrs.items():
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ApiError(422, "invalid_params",
                               "header values must be strings or numbers.")
            v = str(v)
            if (not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", k)
                    or "\r" in v or "\n" in v):
                raise ApiError(422, "invalid_params", "bad header %r." % k)
            clean[k] = v
        rule["headers"] = clean
        close = body.get("close", False)
        if close is True or close == "mid":
            rule["close"] = "mid"
        elif close == "immediate":
            rule["close"] = "immediate"
        elif close is False or close is None:
            rule["close"] = None
        else:
            raise ApiError(422, "invalid_params",
                           "\"close\" must be true, false, \"mid\" or \"immediate\".")
        apply = body.get("apply", False)
        if not isinstance(apply, bool):
            raise ApiError(422, "invalid_params", "\"apply\" must be a boolean.")
        rule["apply"] = apply
        return rule

    def _stall_rule(self, body):
        rule = {"left": self._count(body)}
        secs = body.get("seconds", 1)
        if (isinstance(secs, bool) or not isinstance(secs, (int, float))
                or not 0 <= secs <= 3600):
            raise ApiError(422, "invalid_params",
                           "\"seconds\" must be a number in 0..3600.")
        rule["seconds"] = float(secs)
        if body.get("method") is not None:
            if body["method"] not in ("GET", "PATCH"):
                raise ApiError(422, "invalid_params",
                               "\"method\" must be \"GET\" or \"PATCH\".")
            rule["method"] = body["method"]
        phase = body.get("phase", "before")
        if phase not in ("before", "reply"):
            raise ApiError(422, "invalid_params",
                           "\"phase\" must be \"before\" or \"reply\".")
        rule["phase"] = phase
        drop = body.get("drop", False)
        if not isinstance(drop, bool) or (drop and phase != "before"):
            raise ApiError(422, "invalid_params",
                           "\"drop\" must be a boolean, and only with phase \"before\".")
        rule["drop"] = drop
        return rule


def accept_ok(value):
    """True when Accept lists application/vnd.heroku+json with version=3."""
    if not value:
        return False
    for item in value.split(","):
        parts = [p.strip() for p in item.split(";")]
        if parts[0].lower() != ACCEPT_MEDIA_TYPE:
            continue
        for p in parts[1:]:
            k, _, v = p.partition("=")
            if k.strip().lower() == "version" and v.strip().strip('"') == ACCEPT_VERSION:
                return True
    return False


def error_payload(status, error_id, message):
    return {"id": error_id or STATUS_IDS.get(status, "error"), "message": message}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-heroku/1.0"
    timeout = IDLE_TIMEOUT

    def version_string(self):
        return self.server_version

    @property
    def fake(self):
        return self.server.fake

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    # -- plumbing ------------------------------------------------------------

    def log_message(self, fmt, *args):
        if not self.fake.quiet:
            sys.stderr.write("fake_heroku: %s %s\n" % (self.address_string(), fmt % args))

    def send_error(self, code, message=None, explain=None):
        """Malformed HTTP (bad request line, huge headers...): JSON error."""
        short = self.responses.get(code, ("Error", ""))[0]
        self.log_error("code %d, message %s", code, message or short)
        self.close_connection = True
        # The stdlib answers garbage request lines the HTTP/0.9 way (a body
        # without a status line); always send a real status line instead.
        self.request_version = "HTTP/1.1"
        body = json.dumps(error_payload(code, None, message or short)).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Request-Id", str(uuid.uuid4()))
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    def _read_body(self):
        """(bytes, ApiError or None). Never raises."""
        te = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        try:
            if te == "chunked":
                return self._read_chunked()
            if te:
                self.close_connection = True
                return b"", ApiError(400, "bad_request",
                                     "Unsupported Transfer-Encoding.")
            cl = self.headers.get("Content-Length")
            if cl is None:
                return b"", None
            if not cl.strip().isdigit():
                self.close_connection = True
                return b"", ApiError(400, "bad_request", "Invalid Content-Length.")
            n = int(cl)
            if n > MAX_BODY:
                if n <= MAX_DRAIN:
                    left = n
                    while left > 0:
                        chunk = self.rfile.read(min(left, 65536))
                        if not chunk:
                            break
                        left -= len(chunk)
                self.close_connection = True
                return b"", ApiError(413, "request_too_large",
                                     "Request body larger than %d bytes." % MAX_BODY)
            data = self.rfile.read(n)
            if len(data) != n:
                self.close_connection = True
                return data, ApiError(400, "bad_request", "Truncated request body.")
            return data, None
        except (OSError, ValueError) as e:
            self.close_connection = True
            return b"", ApiError(400, "bad_request", "Could not read body: %s" % e)

    def _read_chunked(self):
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return bytes(data), ApiError(400, "bad_request", "Bad chunk size.")
            if size == 0:
                while self.rfile.readline(1024).strip():   # trailers
                    pass
                return bytes(data), None
            if len(data) + size > MAX_BODY:
                self.close_connection = True
                return b"", ApiError(413, "request_too_large", "Request body too large.")
            chunk = self.rfile.read(size)
            self.rfile.readline(1024)
            if len(chunk) != size:
                self.close_connection = True
                return bytes(data), ApiError(400, "bad_request", "Truncated chunk.")
            data += chunk

    def _send(self, status, body, headers, close=None):
        """Write the reply. headers: list of (name, value), in order."""
        try:
            if close == "immediate":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if close == "mid":
                self.close_connection = True
                if not body:
                    body = json.dumps(error_payload(status, None, "x")).encode()
                reason = self.responses.get(status, ("Unknown", ""))[0]
                head = "HTTP/1.1 %d %s\r\n" % (status, reason)
                for k, v in headers:
                    head += "%s: %s\r\n" % (k, v)
                head += "Content-Length: %d\r\n\r\n" % len(body)
                self.log_request(status, len(body))
                self.wfile.write(head.encode("latin-1") + body[:len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError as e:
            self.close_connection = True
            self.log_message("reply not delivered: %s", e)

    @staticmethod
    def _merge(headers, extra):
        """Override/add headers case-insensitively."""
        for k, v in extra.items():
            headers = [(hk, hv) for hk, hv in headers if hk.lower() != k.lower()]
            headers.append((k, v))
        return headers

    def _dispatch(self):
        t0 = time.time()
        method = self.command
        split = urlsplit(self.path)
        path = split.path
        raw, read_error = self._read_body()
        try:
            if path == "/__fake" or path.startswith("/__fake/"):
                self._control(method, path, raw, read_error)
            else:
                self._api(method, path, raw, read_error, t0)
        except Exception:                     # never let a request kill us
            sys.stderr.write("fake_heroku: internal error on %s %s\n%s"
                             % (method, self.path, traceback.format_exc()))
            self.close_connection = True
            body = json.dumps(error_payload(500, None, "fake internal error")).encode()
            self._send(500, body, [("Content-Type", "application/json"),
                                   ("Request-Id", str(uuid.uuid4()))])

    def _control(self, method, path, raw, read_error):
        fake = self.fake
        try:
            if read_error is not None:
                raise read_error
            status, payload = fake.handle_control(method, path, raw)
        except ApiError as e:
            status, payload = e.status, error_payload(e.status, e.error_id, e.message)
        with fake.lock:
            remaining = fake.remaining
        headers = [("Content-Type", "application/json"),
                   ("Request-Id", str(uuid.uuid4())),
                   ("RateLimit-Remaining", str(remaining))]
        self._send(status, json.dumps(payload).encode(), headers)

    def _client_gone(self):
        """Whether the client has closed its end (EOF or a reset)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _hold(self, rule, phase, method, t0):
        """Holds this request for rule["seconds"], listed under /__fake/stalled.
        A drop or a held reply has no one left to serve once the client hangs
        up, so those end early then. Returns True when the client is gone."""
        fake = self.fake
        watch = rule["drop"] or phase == "reply"
        key = fake.hold_begin({"method": method, "path": self.path, "phase": phase,
                               "drop": rule["drop"], "since": round(t0, 6),
                               "seconds": rule["seconds"],
                               "user-agent": self.headers.get("user-agent")})
        try:
            deadline = time.monotonic() + rule["seconds"]
            while not fake.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if watch and self._client_gone():
                    return True
                fake.stopping.wait(min(left, 0.02) if watch else left)
            return False
        finally:
            fake.hold_end(key)

    def _entry(self, t0, method, raw, status, error_id, request_id, headers,
               stalled, injected, close, applied):
        """One request-log entry."""
        parsed, raw_text = None, None
        if raw and raw.strip():
            try:
                parsed = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
            except (ValueError, RecursionError):
                raw_text = raw[:LOG_RAW_BODY_LIMIT].decode("utf-8", "replace")
        hdr_subset = {}
        for k in LOGGED_HEADERS:
            v = self.headers.get(k)
            if v is not None:
                hdr_subset[k] = v
        entry = {
            "time": round(t0, 6),
            "method": method,
            "path": self.path,
            "headers": hdr_subset,
            "body": parsed,
            "status": status,
            "error_id": error_id if status >= 400 else None,
            "request_id": request_id,
            "rate_limit_remaining": dict((k.lower(), v) for k, v in headers)
            .get("ratelimit-remaining"),
            "stalled": stalled,
            "injected": injected,
            "closed": close,
            "applied": applied,
            "duration": round(time.time() - t0, 6),
        }
        if raw_text is not None:
            entry["raw_body"] = raw_text
        return entry

    def _api(self, method, path, raw, read_error, t0):
        fake = self.fake
        request_id = str(uuid.uuid4())
        stalled = 0.0
        stall = fake.take_stall(method)
        phase = stall["phase"] if stall is not None else None
        if phase == "before":
            stalled = stall["seconds"]
            self._hold(stall, phase, method, t0)
            if stall["drop"]:
                # Never handled: what a request lost on its way looks like.
                self.close_connection = True
                fake.record(self._entry(t0, method, raw, 0, None, request_id, [],
                                        stalled, True, "immediate", False))
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        fail = fake.take_fail(method)
        remaining, exhausted = fake.consume_token()

        status, payload, raw_reply, error_id = 200, None, None, None
        extra_headers = {}
        applied = False
        if fail is None or fail["apply"]:
            try:
                status, payload = fake.handle_api(method, path, self.headers, raw,
                                                  read_error, exhausted)
                applied = True
            except ApiError as e:
                status, error_id = e.status, e.error_id
                payload = error_payload(e.status, e.error_id, e.message)
                extra_headers = e.headers
                if e.status == 429:
                    remaining = 0
        close = None
        if fail is not None:
            status = fail["status"]
            error_id = fail.get("id") or STATUS_IDS.get(status, "error")
            payload = {"id": error_id,
                       "message": fail.get("message")
                       or "Injected failure (HTTP %d)." % status}
            if "body" in fail:
                raw_reply = fail["body"].encode("utf-8")
            if status == 429:
                remaining = 0
            extra_headers = fail["headers"]
            close = fail["close"]

        headers = [("Content-Type", "application/json"),
                   ("Request-Id", request_id),
                   ("RateLimit-Remaining", str(remaining))]
        headers = self._merge(headers, extra_headers)
        body = raw_reply if raw_reply is not None else json.dumps(payload).encode()

        # Record before replying: once the client has the reply, the log
        # already holds the entry.
        if phase == "reply":
            stalled = stall["seconds"]
        fake.record(self._entry(t0, method, raw, status, error_id, request_id, headers,
                                stalled, fail is not None, close, applied))
        if phase == "reply" and self._hold(stall, phase, method, t0):
            self.close_connection = True
            return
        self._send(status, body, headers, close)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        sys.stderr.write("fake_heroku: connection error from %s:\n%s"
                         % (client_address, traceback.format_exc()))


def formation_arg(text):
    out = []
    for item in text.split(","):
        ftype, sep, qty = item.partition("=")
        ftype = ftype.strip()
        if not sep or not TYPE_RE.match(ftype) or parse_quantity(qty.strip()) is None:
            raise argparse.ArgumentTypeError(
                "expected TYPE=QUANTITY (e.g. worker=1), got %r" % item)
        out.append((ftype, int(qty.strip())))
    return out


def nonneg_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0: %r" % text)
    return n


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Fake Heroku Platform API (formation endpoints) for tests.")
    p.add_argument("--port", type=nonneg_int, default=0,
                   help="TCP port on 127.0.0.1; 0 picks a free one (default)")
    p.add_argument("--token", required=True,
                   help="the only accepted API token (Authorization: Bearer TOKEN)")
    p.add_argument("--app", default=DEFAULT_APP,
                   help="app name (default %s)" % DEFAULT_APP)
    p.add_argument("--app-id", default=None,
                   help="app uuid (default: derived from the name)")
    p.add_argument("--formation", type=formation_arg, action="extend",
                   metavar="TYPE=N[,TYPE=N...]",
                   help="initial process types, repeatable (default worker=1)")
    p.add_argument("--size", default=DEFAULT_SIZE, type=canonical_size,
                   help="dyno size of every formation (default %s)" % DEFAULT_SIZE)
    p.add_argument("--max-quantity", type=nonneg_int, default=DEFAULT_MAX_QUANTITY,
                   help="PATCH above this -> 422 cannot_run_above_limit "
                   "(default %d)" % DEFAULT_MAX_QUANTITY)
    p.add_argument("--rate-limit", type=nonneg_int, default=DEFAULT_RATE_LIMIT,
                   help="initial RateLimit-Remaining (default %d)" % DEFAULT_RATE_LIMIT)
    p.add_argument("--state-file", default=None,
                   help="append every API request as one JSON line (truncated "
                   "at start and on /__fake/reset)")
    p.add_argument("--lax-accept", action="store_true",
                   help="do not require Accept: %s; version=%s"
                   % (ACCEPT_MEDIA_TYPE, ACCEPT_VERSION))
    p.add_argument("--quiet", action="store_true", help="no per-request stderr log")
    args = p.parse_args(argv)
    if args.size is None:
        p.error("--size must be one of: " + ", ".join(DYNO_SIZES))
    if args.app_id is not None and not UUID_RE.match(args.app_id):
        p.error("--app-id must be a uuid")
    if args.app_id:
        args.app_id = args.app_id.lower()
    if not APP_NAME_RE.match(args.app):
        sys.stderr.write("fake_heroku: warning: app name %r does not match "
                         "Heroku's pattern %s\n" % (args.app, APP_NAME_RE.pattern))
    if args.formation:
        seen = {}
        for ftype, qty in args.formation:
            seen[ftype] = qty
        args.formation = list(seen.items())
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        fake = Fake(args)
    except OSError as e:
        sys.stderr.write("fake_heroku: %s\n" % e)
        return 1
    try:
        server = Server(("127.0.0.1", args.port), Handler)
    except OSError as e:
        sys.stderr.write("fake_heroku: cannot bind 127.0.0.1:%d: %s\n" % (args.port, e))
        return 1
    server.fake = fake

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        sys.stdout.write("listening %s:%d\n" % (host, port))
        sys.stdout.flush()
    except OSError:
        pass
    sys.stderr.write("fake_heroku: listening on %s:%d app=%s formations=%s "
                     "max_quantity=%d\n" % (host, port, args.app,
                                            ",".join("%s=%d" % f for f in
                                                     args.formation or [("worker", 1)]),
                                            args.max_quantity))
    while not stop.wait(0.2):
        pass
    fake.stopping.set()           # wakes stalled requests
    server.shutdown()
    server.server_close()
    if fake.state_fh is not None:
        with fake.lock:
            fake.state_fh.close()
            fake.state_fh = None
    sys.stderr.write("fake_heroku: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
