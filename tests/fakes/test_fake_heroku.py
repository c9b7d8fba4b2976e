#!/usr/bin/env python3
"""Tests for tests/fakes/fake_heroku.py (unittest, standard library only).

Starts the fake as a subprocess on a free port and checks it against
Heroku's published Platform API schema (definitions.formation and the
Info / List / Update / Batch Update links), read from
$SCALEKIQ_SHARED_DIR/heroku/platform-api-schema.json (default: ../shared
beside the repository).

    python3 tests/fakes/test_fake_heroku.py [-v]
"""

import copy
import datetime
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from urllib.parse import unquote

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
FAKE = os.path.join(HERE, "fake_heroku.py")
SHARED_DIR = os.environ.get("SCALEKIQ_SHARED_DIR") or os.path.join(REPO_ROOT, "..", "shared")
SCHEMA_PATH = os.path.join(SHARED_DIR, "heroku", "platform-api-schema.json")

TOKEN = "test-token-0123456789"
APP = "scalekiq-test"
APP_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ACCEPT = "application/vnd.heroku+json; version=3"
MAX_Q = 10

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
HEROKU_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


# --------------------------------------------------------------------------
# A small JSON-schema validator over the subset Heroku's schema uses.
# --------------------------------------------------------------------------

# Keywords that constrain an instance, and what this validator implements.
VALIDATION_KEYWORDS = {
    "$ref", "type", "properties", "required", "additionalProperties",
    "patternProperties", "strictProperties", "items", "enum", "format",
    "pattern", "anyOf", "oneOf", "allOf", "minimum", "maximum", "maxLength",
    "minLength", "minItems", "maxItems", "uniqueItems",
}
# Keywords that carry no constraint (annotations, hyper-schema, prmd).
ANNOTATION_KEYWORDS = {
    "$schema", "id", "title", "description", "example", "readOnly", "stability",
    "links", "definitions", "identity", "deprecated", "default", "readonly",
}


class SchemaError(Exception):
    pass


class Validator:
    def __init__(self, root):
        self.root = root

    def resolve(self, ref):
        if not ref.startswith("#"):
            raise SchemaError("external $ref not supported: %s" % ref)
        node = self.root
        frag = unquote(ref[1:])
        if frag in ("", "/"):
            return node
        for tok in frag.lstrip("/").split("/"):
            tok = tok.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and tok.isdigit() and int(tok) < len(node):
                node = node[int(tok)]
            elif isinstance(node, dict) and tok in node:
                node = node[tok]
            else:
                raise SchemaError("unresolvable $ref %s" % ref)
        return node

    def errors(self, instance, schema):
        errs = []
        self._check(instance, schema, "$", errs, 0)
        return errs

    def is_valid(self, instance, schema):
        return not self.errors(instance, schema)

    @staticmethod
    def _is_type(v, t):
        if t == "string":
            return isinstance(v, str)
        if t == "integer":
            return isinstance(v, int) and not isinstance(v, bool)
        if t == "number":
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if t == "boolean":
            return isinstance(v, bool)
        if t == "null":
            return v is None
        if t == "object":
            return isinstance(v, dict)
        if t == "array":
            return isinstance(v, list)
        if t == "any":
            return True
        raise SchemaError("unknown type %r" % t)

    @staticmethod
    def _format_ok(fmt, v):
        if fmt == "uuid":
            return bool(UUID_RE.match(v))
        if fmt == "date-time":
            if not RFC3339_RE.match(v):
                return False
            try:
                datetime.datetime.fromisoformat(v.upper().replace("Z", "+00:00"))
            except ValueError:
                return False
            return True
        if fmt == "email":
            return "@" in v
        return True       # other formats (uri, hostname, ...) not checked

    def _check(self, inst, schema, path, errs, depth):
        if depth > 100:
            errs.append("%s: $ref recursion too deep" % path)
            return
        if not isinstance(schema, dict):
            if schema is False:
                errs.append("%s: schema false" % path)
            return
        if "$ref" in schema:            # draft-04: siblings of $ref are ignored
            try:
                target = self.resolve(schema["$ref"])
            except SchemaError as e:
                errs.append("%s: %s" % (path, e))
                return
            self._check(inst, target, path, errs, depth + 1)
            return
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(self._is_type(inst, t) for t in types):
                errs.append("%s: %r is not of type %s" % (path, inst, types))
                return
        if "enum" in schema and not any(
                inst == e and type(inst) is type(e) for e in schema["enum"]):
            errs.append("%s: %r not in enum %r" % (path, inst, schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                ok = sum(1 for s in schema[key] if self.is_valid_at(inst, s, depth))
                if (key == "anyOf" and ok == 0) or (key == "oneOf" and ok != 1):
                    errs.append("%s: %d of %s matched" % (path, ok, key))
        for s in schema.get("allOf", []):
            self._check(inst, s, path, errs, depth + 1)
        if isinstance(inst, str):
            if "format" in schema and not self._format_ok(schema["format"], inst):
                errs.append("%s: %r is not a %s" % (path, inst, schema["format"]))
            if "pattern" in schema and not re.search(schema["pattern"], inst, re.ASCII):
                errs.append("%s: %r does not match %s" % (path, inst, schema["pattern"]))
            if "maxLength" in schema and len(inst) > schema["maxLength"]:
                errs.append("%s: longer than %d" % (path, schema["maxLength"]))
            if "minLength" in schema and len(inst) < schema["minLength"]:
                errs.append("%s: shorter than %d" % (path, schema["minLength"]))
        if isinstance(inst, (int, float)) and not isinstance(inst, bool):
            if "minimum" in schema and inst < schema["minimum"]:
                errs.append("%s: %r < minimum %r" % (path, inst, schema["minimum"]))
            if "maximum" in schema and inst > schema["maximum"]:
                errs.append("%s: %r > maximum %r" % (path, inst, schema["maximum"]))
        if isinstance(inst, dict):
            self._check_object(inst, schema, path, errs, depth)
        if isinstance(inst, list):
            items = schema.get("items")
            if isinstance(items, dict):
                for i, v in enumerate(inst):
                    self._check(v, items, "%s[%d]" % (path, i), errs, depth + 1)
            elif isinstance(items, list):
                for i, (v, s) in enumerate(zip(inst, items)):
                    self._check(v, s, "%s[%d]" % (path, i), errs, depth + 1)
            if "minItems" in schema and len(inst) < schema["minItems"]:
                errs.append("%s: fewer than %d items" % (path, schema["minItems"]))
            if "maxItems" in schema and len(inst) > schema["maxItems"]:
                errs.append("%s: more than %d items" % (path, schema["maxItems"]))
            if schema.get("uniqueItems"):
                seen = [json.dumps(v, sort_keys=True) for v in inst]
                if len(set(seen)) != len(seen):
                    errs.append("%s: items not unique" % path)

    def is_valid_at(self, inst, schema, depth):
        errs = []
        self._check(inst, schema, "$", errs, depth + 1)
        return not errs

    def _check_object(self, inst, schema, path, errs, depth):
        props = schema.get("properties", {})
        pprops = schema.get("patternProperties", {})
        # Heroku's (prmd) strictProperties: every listed property is required
        # and no other is allowed.
        strict = schema.get("strictProperties") is True
        required = list(schema.get("required", []))
        if strict:
            required += [k for k in props if k not in required]
        for k in required:
            if k not in inst:
                errs.append("%s: missing required property %r" % (path, k))
        addl = schema.get("additionalProperties", True)
        for k, v in inst.items():
            sub = "%s.%s" % (path, k)
            matched = False
            if k in props:
                matched = True
                self._check(v, props[k], sub, errs, depth + 1)
            for pat, s in pprops.items():
                if re.search(pat, k):
                    matched = True
                    self._check(v, s, sub, errs, depth + 1)
            if matched:
                continue
            if strict or addl is False:
                errs.append("%s: additional property %r not allowed" % (path, k))
            elif isinstance(addl, dict):
                self._check(v, addl, sub, errs, depth + 1)

    def keywords_reachable(self, schema, seen=None):
        """Every keyword used by schema and what it $refs (not 'links' or
        'definitions', which are not applied to instances)."""
        seen = set() if seen is None else seen
        out = set()
        stack = [schema]
        while stack:
            s = stack.pop()
            if isinstance(s, list):
                stack.extend(s)
                continue
            if not isinstance(s, dict) or id(s) in seen:
                continue
            seen.add(id(s))
            for k, v in s.items():
                out.add(k)
                if k == "$ref":
                    stack.append(self.resolve(v))
                elif k in ("properties", "patternProperties"):
                    stack.extend(v.values())
                elif k in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
                    stack.append(v)
        return out


SCHEMA = None
VALIDATOR = None


def setUpModule():
    global SCHEMA, VALIDATOR
    if not os.path.isfile(SCHEMA_PATH):
        raise RuntimeError("Heroku schema not found at %s (set SCALEKIQ_SHARED_DIR)"
                           % SCHEMA_PATH)
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        SCHEMA = json.load(f)
    VALIDATOR = Validator(SCHEMA)


def formation_schema():
    return {"$ref": "#/definitions/formation"}


def link(title):
    for ln in SCHEMA["definitions"]["formation"]["links"]:
        if ln.get("title") == title:
            return ln
    raise AssertionError("schema has no formation link %r" % title)


# --------------------------------------------------------------------------
# Running the fake
# --------------------------------------------------------------------------

class Reply:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            self.json = None

    def header(self, name):
        return self.headers.get(name)

    def __repr__(self):
        return "<Reply %d %r>" % (self.status, self.body[:200])


class FakeProcess:
    def __init__(self, *extra, state_file=True):
        self.tmpdir = tempfile.TemporaryDirectory(prefix="fake_heroku_test_")
        self.state_file = os.path.join(self.tmpdir.name, "requests.jsonl") if state_file else None
        self.stderr_path = os.path.join(self.tmpdir.name, "stderr.log")
        self.stderr = open(self.stderr_path, "wb")
        cmd = [sys.executable, FAKE, "--port", "0", "--token", TOKEN] + list(extra)
        if self.state_file:
            cmd += ["--state-file", self.state_file]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL)
        line = self._read_line(10)
        m = re.match(r"^listening 127\.0\.0\.1:(\d+)\n$", line)
        if not m:
            self.stop()
            raise AssertionError("bad listening line %r; stderr: %s" % (line, self.stderr_text()))
        self.port = int(m.group(1))

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            chunk = os.read(fd, 1)
            if not chunk:
                break
            buf += chunk
        return buf.decode("utf-8", "replace")

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=5):
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        self.proc.stdout.close()
        self.stderr.close()
        self.tmpdir.cleanup()
        return rc

    # -- HTTP ---------------------------------------------------------------

    def request(self, method, path, body=None, raw=None, accept=ACCEPT,
                token=TOKEN, auth=None, headers=None, timeout=5, conn=None):
        h = {}
        if accept is not None:
            h["Accept"] = accept
        if auth is not None:
            h["Authorization"] = auth
        elif token is not None:
            h["Authorization"] = "Bearer " + token
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            return Reply(resp.status, resp.headers, payload, time.monotonic() - t0)
        finally:
            if own:
                conn.close()

    def api(self, method, type_=None, **kw):
        path = "/apps/%s/formation" % kw.pop("app", APP)
        if type_ is not None:
            path += "/" + type_
        return self.request(method, path, **kw)

    def ctl(self, method, path, body=None, raw=None):
        r = self.request(method, "/__fake/" + path, body=body, raw=raw,
                         accept=None, token=None)
        return r

    def requests_log(self):
        r = self.ctl("GET", "requests")
        assert r.status == 200, r
        return r.json


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------

class ValidatorTest(unittest.TestCase):
    """The validator itself must be able to fail."""

    def setUp(self):
        self.v = Validator({"definitions": {
            "s": {"type": ["string", "null"]},
            "obj": {"type": ["object"], "properties": {"a": {"$ref": "#/definitions/s"},
                                                      "n": {"type": ["integer"]}},
                    "required": ["n"], "additionalProperties": False},
        }})

    def test_types_lists_and_refs(self):
        v = self.v
        self.assertTrue(v.is_valid(None, {"$ref": "#/definitions/s"}))
        self.assertTrue(v.is_valid("x", {"$ref": "#/definitions/s"}))
        self.assertFalse(v.is_valid(1, {"$ref": "#/definitions/s"}))
        self.assertTrue(v.is_valid({"n": 1, "a": None}, {"$ref": "#/definitions/obj"}))
        self.assertFalse(v.is_valid({"a": "x"}, {"$ref": "#/definitions/obj"}))          # required
        self.assertFalse(v.is_valid({"n": 1, "b": 2}, {"$ref": "#/definitions/obj"}))    # additional
        self.assertFalse(v.is_valid({"n": True}, {"$ref": "#/definitions/obj"}))         # bool != int
        self.assertFalse(v.is_valid({"n": 1.5}, {"$ref": "#/definitions/obj"}))
        self.assertFalse(v.is_valid(1, {"$ref": "#/definitions/nope"}))                  # bad ref

    def test_formats_pattern_enum_anyof(self):
        v = self.v
        self.assertTrue(v.is_valid("01234567-89ab-cdef-0123-456789abcdef", {"format": "uuid"}))
        self.assertFalse(v.is_valid("01234567-89ab-cdef-0123-456789abcdeg", {"format": "uuid"}))
        self.assertTrue(v.is_valid("2012-01-01T12:00:00Z", {"format": "date-time"}))
        self.assertFalse(v.is_valid("2012-01-01 12:00:00", {"format": "date-time"}))
        self.assertFalse(v.is_valid("2012-13-01T12:00:00Z", {"format": "date-time"}))
        self.assertTrue(v.is_valid("web-1", {"pattern": "^[-\\w]{1,128}$"}))
        self.assertFalse(v.is_valid("web 1", {"pattern": "^[-\\w]{1,128}$"}))
        self.assertTrue(v.is_valid("a", {"enum": ["a", "b"]}))
        self.assertFalse(v.is_valid("c", {"enum": ["a", "b"]}))
        any_of = {"anyOf": [{"type": ["integer"]}, {"format": "uuid", "type": ["string"]}]}
        self.assertTrue(v.is_valid(3, any_of))
        self.assertFalse(v.is_valid("x", any_of))


class SchemaConformanceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProcess("--app", APP, "--app-id", APP_ID, "--formation", "worker=1",
                               "--formation", "web=2", "--max-quantity", str(MAX_Q))

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    def setUp(self):
        r = self.fake.ctl("POST", "reset", {"formation": True})
        self.assertEqual(r.status, 200, r)

    def assertValid(self, instance, schema):
        errs = VALIDATOR.errors(instance, schema)
        self.assertEqual(errs, [], "instance %r" % (instance,))

    def test_validator_knows_every_keyword_formation_uses(self):
        for s in (formation_schema(), link("Info")["targetSchema"],
                  link("List")["targetSchema"], link("Update")["schema"],
                  link("Batch Update")["schema"], link("Batch Update")["targetSchema"]):
            used = VALIDATOR.keywords_reachable(s)
            self.assertEqual(used - VALIDATION_KEYWORDS - ANNOTATION_KEYWORDS, set())

    def test_info_matches_schema_exactly(self):
        r = self.fake.api("GET", "worker")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "application/json")
        f = r.json
        self.assertValid(f, formation_schema())
        self.assertValid(f, link("Info")["targetSchema"])
        fdef = SCHEMA["definitions"]["formation"]
        self.assertEqual(set(f), set(fdef["properties"]))
        self.assertEqual(set(f["app"]), set(fdef["properties"]["app"]["properties"]))
        self.assertEqual(set(f["dyno_size"]), set(fdef["properties"]["dyno_size"]["properties"]))
        self.assertEqual(f["app"], {"id": APP_ID, "name": APP})
        self.assertEqual((f["type"], f["quantity"]), ("worker", 1))
        self.assertEqual(f["dyno_size"]["name"], f["size"])
        for k in ("created_at", "updated_at"):
            self.assertRegex(f[k], HEROKU_TIME_RE)
        # the same object under its other identities (app id, formation id)
        r2 = self.fake.request("GET", "/apps/%s/formation/%s" % (APP_ID, f["id"]))
        self.assertEqual((r2.status, r2.json), (200, f))

    def test_validator_rejects_broken_formations(self):
        good = self.fake.api("GET", "worker").json
        self.assertValid(good, formation_schema())
        breakages = [
            lambda f: f.pop("command"),                      # strictProperties: all required
            lambda f: f.__setitem__("extra", 1),             # ... and nothing else
            lambda f: f.__setitem__("quantity", "1"),
            lambda f: f.__setitem__("quantity", True),
            lambda f: f.__setitem__("id", "not-a-uuid"),
            lambda f: f.__setitem__("created_at", "2012-01-01 12:00:00"),
            lambda f: f.__setitem__("type", "bad type!"),
            lambda f: f["app"].__setitem__("name", "Bad_Name"),
            lambda f: f["app"].__setitem__("id", 42),
            lambda f: f["dyno_size"].__setitem__("id", "xyz"),
            lambda f: f.__setitem__("app", "scalekiq-test"),
        ]
        for i, breakit in enumerate(breakages):
            f = copy.deepcopy(good)
            breakit(f)
            self.assertNotEqual(VALIDATOR.errors(f, formation_schema()), [], "breakage %d" % i)

    def test_list_matches_schema(self):
        r = self.fake.api("GET")
        self.assertEqual(r.status, 200, r)
        self.assertValid(r.json, link("List")["targetSchema"])
        self.assertEqual(sorted((f["type"], f["quantity"]) for f in r.json),
                         [("web", 2), ("worker", 1)])

    def test_patch_integer(self):
        body = {"quantity": 3}
        self.assertValid(body, link("Update")["schema"])
        r = self.fake.api("PATCH", "worker", body=body)
        self.assertEqual(r.status, 200, r)
        self.assertValid(r.json, link("Update")["targetSchema"])
        self.assertEqual(r.json["quantity"], 3)
        self.assertEqual(self.fake.api("GET", "worker").json["quantity"], 3)
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 3)
        self.assertEqual(self.fake.api("GET", "web").json["quantity"], 2)   # untouched

    def test_patch_numeric_string(self):
        r = self.fake.api("PATCH", "worker", body={"quantity": "4"})
        self.assertEqual(r.status, 200, r)
        self.assertValid(r.json, formation_schema())
        self.assertEqual(r.json["quantity"], 4)           # an integer in the reply
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 4)

    def test_patch_zero_and_limit(self):
        self.assertEqual(self.fake.api("PATCH", "worker", body={"quantity": 0}).json["quantity"], 0)
        self.assertEqual(self.fake.api("PATCH", "worker", body={"quantity": MAX_Q}).json["quantity"], MAX_Q)

    def test_patch_above_limit(self):
        for q in (MAX_Q + 1, str(MAX_Q + 1), 10 ** 12):
            r = self.fake.api("PATCH", "worker", body={"quantity": q})
            self.assertEqual(r.status, 422, r)
            self.assertEqual(r.json["id"], "cannot_run_above_limit")
            self.assertIsInstance(r.json["message"], str)
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 1)

    def test_patch_invalid_quantity(self):
        for q in ("abc", -1, 2.5, 2.0, True, None, [], {}, "3.5", "-2", "", " 3",
                  "0x3", "\uff13", "1e2"):
            r = self.fake.api("PATCH", "worker", body={"quantity": q})
            self.assertEqual(r.status, 422, "quantity %r: %r" % (q, r))
            self.assertEqual(r.json["id"], "invalid_params", q)
            self.assertEqual(set(r.json), {"id", "message"})
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 1)

    def test_garbage_bodies(self):
        cases = [(b"{not json", 400), (b"\xff\xfe\x00\x01", 400), (b"NaN", 400),
                 (b'{"quantity": Infinity}', 400), (b"[" * 100000, 400),
                 (b"[1, 2]", 422), (b'"3"', 422), (b"3", 422), (b"null", 422)]
        for raw, status in cases:
            r = self.fake.api("PATCH", "worker", raw=raw)
            self.assertEqual(r.status, status, "%r: %r" % (raw[:20], r))
            self.assertIn(r.json["id"], ("bad_request", "invalid_params"))
            self.assertIsInstance(r.json["message"], str)
        big = self.fake.api("PATCH", "worker", raw=b'{"quantity": 2, "pad": "' + b"x" * (1536 * 1024) + b'"}')
        self.assertEqual(big.status, 413, big)
        bad_len = self.fake.request("PATCH", "/apps/%s/formation/worker" % APP,
                                    headers={"Content-Length": "abc"})
        self.assertEqual(bad_len.status, 400)
        # still alive and unchanged
        r = self.fake.api("GET", "worker")
        self.assertEqual((r.status, r.json["quantity"]), (200, 1))

    def test_malformed_http(self):
        for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x00\x01\x02\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", self.fake.port), timeout=3) as s:
                s.sendall(garbage)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            self.assertRegex(data, rb"^HTTP/1\.[01] [45]\d\d ", garbage)
        self.assertEqual(self.fake.api("GET", "worker").status, 200)

    def test_unauthorized(self):
        for kw in ({"token": None}, {"token": "wrong"}, {"auth": "Basic " + TOKEN},
                   {"auth": "Bearer"}, {"auth": TOKEN}):
            r = self.fake.api("GET", "worker", **kw)
            self.assertEqual(r.status, 401, kw)
            self.assertEqual(r.json["id"], "unauthorized")
            self.assertIsInstance(r.json["message"], str)
        r = self.fake.api("PATCH", "worker", body={"quantity": 5}, token="wrong")
        self.assertEqual(r.status, 401)
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 1)
        self.assertEqual(self.fake.api("GET", "worker", auth="bearer " + TOKEN).status, 200)

    def test_not_acceptable(self):
        for accept in (None, "application/json", "application/vnd.heroku+json; version=2",
                       "application/vnd.heroku+json"):
            r = self.fake.api("GET", "worker", accept=accept)
            self.assertEqual(r.status, 406, accept)
            self.assertEqual(r.json["id"], "not_acceptable")
        ok = self.fake.api("GET", "worker", accept="text/plain, application/vnd.heroku+json;version=3")
        self.assertEqual(ok.status, 200)

    def test_not_found(self):
        cases = [("GET", "/apps/no-such-app/formation/worker"),
                 ("PATCH", "/apps/no-such-app/formation/worker"),
                 ("GET", "/apps/%s/formation/nosuchtype" % APP),
                 ("PATCH", "/apps/%s/formation/nosuchtype" % APP),
                 ("GET", "/apps/%s/dynos" % APP),
                 ("DELETE", "/apps/%s/formation/worker" % APP),
                 ("GET", "/")]
        for method, path in cases:
            r = self.fake.request(method, path, body={"quantity": 2} if method == "PATCH" else None)
            self.assertEqual(r.status, 404, (method, path))
            self.assertEqual(r.json["id"], "not_found")
            self.assertIsInstance(r.json["message"], str)
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 1)

    def test_429_injection(self):
        self.assertEqual(self.fake.ctl("POST", "fail", {"count": 1, "status": 429}).status, 200)
        r = self.fake.api("GET", "worker")
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json["id"], "rate_limit")
        self.assertEqual(r.header("RateLimit-Remaining"), "0")
        r = self.fake.api("GET", "worker")
        self.assertEqual(r.status, 200)
        self.assertGreater(int(r.header("RateLimit-Remaining")), 0)

    def test_503_twice_then_success(self):
        r = self.fake.ctl("POST", "fail", {"count": 2, "status": 503, "id": "unavailable",
                                           "headers": {"Retry-After": "1"}})
        self.assertEqual(r.status, 200)
        statuses = []
        for _ in range(3):
            r = self.fake.api("PATCH", "worker", body={"quantity": 2})
            statuses.append(r.status)
            if r.status == 503:
                self.assertEqual(r.json["id"], "unavailable")
                self.assertEqual(r.header("Retry-After"), "1")
                # a failed PATCH changes nothing
                self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 1)
        self.assertEqual(statuses, [503, 503, 200])
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 2)
        log = self.fake.requests_log()
        self.assertEqual([(e["status"], e["injected"]) for e in log],
                         [(503, True), (503, True), (200, False)])

    def test_injected_raw_body_and_queue_order(self):
        self.fake.ctl("POST", "fail", {"status": 502, "body": "<html>Bad Gateway</html>",
                                       "headers": {"Content-Type": "text/html"}})
        self.fake.ctl("POST", "fail", {"status": 200, "body": "not json at all"})
        r = self.fake.api("GET", "worker")
        self.assertEqual((r.status, r.body), (502, b"<html>Bad Gateway</html>"))
        self.assertEqual(r.header("Content-Type"), "text/html")
        self.assertRegex(r.header("Request-Id"), UUID_RE)
        r = self.fake.api("GET", "worker")
        self.assertEqual((r.status, r.body, r.json), (200, b"not json at all", None))
        self.assertEqual(self.fake.api("GET", "worker").json["quantity"], 1)

    def test_close_injection(self):
        self.fake.ctl("POST", "fail", {"status": 503, "close": True})
        with self.assertRaises((http.client.IncompleteRead, http.client.RemoteDisconnected,
                                ConnectionError)):
            self.fake.api("GET", "worker")
        self.fake.ctl("POST", "fail", {"close": "immediate"})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.fake.api("GET", "worker")
        # "apply": the PATCH takes effect, but the reply is lost
        self.fake.ctl("POST", "fail", {"close": True, "apply": True})
        with self.assertRaises((http.client.IncompleteRead, http.client.RemoteDisconnected,
                                ConnectionError)):
            self.fake.api("PATCH", "worker", body={"quantity": 6})
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 6)
        self.assertEqual(self.fake.api("GET", "worker").status, 200)
        closed = [e["closed"] for e in self.fake.requests_log()]
        self.assertEqual(closed, ["mid", "immediate", "mid", None])

    def test_stall(self):
        self.assertEqual(self.fake.ctl("POST", "stall", {"count": 1, "seconds": 0.5}).status, 200)
        r = self.fake.api("GET", "worker")
        self.assertEqual(r.status, 200)
        self.assertGreaterEqual(r.elapsed, 0.45)
        r = self.fake.api("GET", "worker")
        self.assertLess(r.elapsed, 0.3)
        # a client that gives up: the fake survives writing to a closed socket
        self.fake.ctl("POST", "stall", {"count": 1, "seconds": 0.4})
        with self.assertRaises((socket.timeout, TimeoutError)):
            self.fake.api("GET", "worker", timeout=0.1)
        time.sleep(0.4)
        self.assertEqual(self.fake.api("GET", "worker").status, 200)
        self.assertEqual([e["stalled"] for e in self.fake.requests_log()], [0.5, 0.0, 0.4, 0.0])

    def test_request_log_exact_sequence(self):
        self.fake.api("GET", "worker")
        self.fake.api("PATCH", "worker", body={"quantity": 3})
        self.fake.api("PATCH", "worker", body={"quantity": "x"})
        self.fake.api("GET", "nosuchtype")
        self.fake.api("GET", "worker", token=None)
        self.fake.api("PATCH", "worker", raw=b"{oops")
        self.fake.ctl("GET", "formation/worker")          # control calls are not logged
        log = self.fake.requests_log()
        base = "/apps/%s/formation/" % APP
        self.assertEqual(
            [(e["seq"], e["method"], e["path"], e["body"], e["status"], e["error_id"]) for e in log],
            [(1, "GET", base + "worker", None, 200, None),
             (2, "PATCH", base + "worker", {"quantity": 3}, 200, None),
             (3, "PATCH", base + "worker", {"quantity": "x"}, 422, "invalid_params"),
             (4, "GET", base + "nosuchtype", None, 404, "not_found"),
             (5, "GET", base + "worker", None, 401, "unauthorized"),
             (6, "PATCH", base + "worker", None, 400, "bad_request")])
        self.assertEqual(log[5]["raw_body"], "{oops")
        self.assertEqual(log[0]["headers"]["authorization"], "Bearer " + TOKEN)
        self.assertEqual(log[0]["headers"]["accept"], ACCEPT)
        self.assertNotIn("authorization", log[4]["headers"])
        times = [e["time"] for e in log]
        self.assertEqual(times, sorted(times))
        # the state file holds the same entries, one JSON object per line
        with open(self.fake.state_file, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        self.assertEqual(lines, log)
        # reset clears both
        self.fake.ctl("POST", "reset")
        self.assertEqual(self.fake.requests_log(), [])
        self.assertEqual(os.path.getsize(self.fake.state_file), 0)

    def test_every_reply_has_request_id_and_rate_limit(self):
        self.fake.ctl("POST", "fail", {"count": 1, "status": 503})
        replies = [
            self.fake.api("GET", "worker"),                      # 503 injected
            self.fake.api("GET", "worker"),                      # 200
            self.fake.api("GET"),                                # 200 list
            self.fake.api("PATCH", "worker", body={"quantity": 2}),
            self.fake.api("PATCH", "worker", body={"quantity": "no"}),
            self.fake.api("GET", "worker", token="bad"),         # 401
            self.fake.api("GET", "worker", accept=None),         # 406
            self.fake.api("GET", "missing"),                     # 404
            self.fake.api("PATCH", "worker", raw=b"\x00"),       # 400
        ]
        ids = []
        for r in replies:
            self.assertRegex(r.header("Request-Id") or "", UUID_RE, r)
            self.assertEqual(r.header("Content-Type"), "application/json", r)
            ids.append(r.header("Request-Id"))
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual([int(r.header("RateLimit-Remaining")) for r in replies],
                         list(range(4499, 4499 - len(replies), -1)))
        c = self.fake.ctl("GET", "requests")
        self.assertRegex(c.header("Request-Id") or "", UUID_RE)
        self.assertIsNotNone(c.header("RateLimit-Remaining"))
        # the log records the Request-Id each reply carried
        self.assertEqual([e["request_id"] for e in self.fake.requests_log()], ids)

    def test_rate_limit_exhaustion(self):
        self.assertEqual(self.fake.ctl("POST", "ratelimit", {"remaining": 2}).json, {"remaining": 2})
        got = []
        for _ in range(3):
            r = self.fake.api("GET", "worker")
            got.append((r.status, r.header("RateLimit-Remaining")))
        self.assertEqual(got, [(200, "1"), (200, "0"), (429, "0")])
        self.fake.ctl("POST", "reset")
        self.assertEqual(self.fake.api("GET", "worker").header("RateLimit-Remaining"), "4499")

    def test_chunked_body(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=5)
        try:
            conn.request("PATCH", "/apps/%s/formation/worker" % APP,
                         body=iter([b'{"quan', b'tity": ', b'"5"}']), encode_chunked=True,
                         headers={"Accept": ACCEPT, "Authorization": "Bearer " + TOKEN,
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            self.assertEqual((resp.status, json.loads(resp.read())["quantity"]), (200, 5))
        finally:
            conn.close()
        self.assertEqual(self.fake.requests_log()[-1]["body"], {"quantity": "5"})

    def test_keep_alive_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=5)
        try:
            rs = [self.fake.api("GET", "worker", conn=conn),
                  self.fake.api("PATCH", "worker", body={"quantity": 2}, conn=conn),
                  self.fake.api("GET", "nope", conn=conn),
                  self.fake.api("PATCH", "worker", body={"quantity": "x"}, conn=conn),
                  self.fake.api("GET", "worker", conn=conn)]
        finally:
            conn.close()
        self.assertEqual([r.status for r in rs], [200, 200, 404, 422, 200])
        self.assertEqual(rs[-1].json["quantity"], 2)

    def test_batch_update(self):
        body = {"updates": [{"type": "worker", "quantity": 2}, {"type": "web", "quantity": "3"}]}
        self.assertValid({"updates": [{"type": "worker", "quantity": 2}]}, link("Batch Update")["schema"])
        r = self.fake.api("PATCH", body=body)
        self.assertEqual(r.status, 200, r)
        self.assertValid(r.json, link("Batch Update")["targetSchema"])
        self.assertEqual([(f["type"], f["quantity"]) for f in r.json], [("worker", 2), ("web", 3)])
        # atomic: one bad update and nothing changes
        r = self.fake.api("PATCH", body={"updates": [{"type": "worker", "quantity": 5},
                                                     {"type": "web", "quantity": MAX_Q + 1}]})
        self.assertEqual((r.status, r.json["id"]), (422, "cannot_run_above_limit"))
        r = self.fake.api("PATCH", body={"updates": [{"type": "worker", "quantity": 5},
                                                     {"type": "ghost", "quantity": 1}]})
        self.assertEqual((r.status, r.json["id"]), (404, "not_found"))
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 2)
        self.assertEqual(self.fake.api("PATCH", body={"updates": []}).status, 422)

    def test_control_api(self):
        r = self.fake.ctl("POST", "formation", {"type": "worker", "quantity": 7})
        self.assertEqual(r.status, 200)
        self.assertValid(r.json, formation_schema())
        self.assertEqual(self.fake.api("GET", "worker").json["quantity"], 7)
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 7)
        self.assertEqual(self.fake.ctl("GET", "formation/nope").status, 404)
        for bad in ({"type": "worker", "quantity": "x"}, {"type": "bad type", "quantity": 1},
                    {"quantity": 1}):
            r = self.fake.ctl("POST", "formation", bad)
            self.assertEqual((r.status, r.json["id"]), (422, "invalid_params"), bad)
        self.assertEqual(self.fake.ctl("POST", "fail", raw=b"{").status, 400)
        self.assertEqual(self.fake.ctl("POST", "fail", {"status": "x"}).status, 422)
        self.assertEqual(self.fake.ctl("POST", "fail", {"status": 503, "close": "sometimes"}).status, 422)
        self.assertEqual(self.fake.ctl("POST", "stall", {"seconds": -1}).status, 422)
        self.assertEqual(self.fake.ctl("GET", "nothing-here").status, 404)
        # none of that queued anything or was logged
        self.assertEqual(self.fake.api("GET", "worker").status, 200)
        self.assertEqual([e["path"] for e in self.fake.requests_log()],
                         ["/apps/%s/formation/worker" % APP] * 2)
        # a new process type can be created for tests
        r = self.fake.ctl("POST", "formation", {"type": "urgent_worker", "quantity": 1})
        self.assertEqual(self.fake.api("GET", "urgent_worker").json["quantity"], 1)

    def test_reset_keeps_formation_unless_asked(self):
        self.fake.ctl("POST", "formation", {"type": "worker", "quantity": 5})
        self.fake.ctl("POST", "formation", {"type": "extra", "quantity": 1})
        self.fake.ctl("POST", "stall", {"count": 5, "seconds": 2})
        self.fake.ctl("POST", "fail", {"count": 5})
        self.fake.ctl("POST", "reset")
        r = self.fake.api("GET", "worker")     # no injection left after reset
        self.assertEqual((r.status, r.json["quantity"]), (200, 5))
        self.assertLess(r.elapsed, 0.3)
        self.fake.ctl("POST", "reset", {"formation": True})
        self.assertEqual(self.fake.api("GET", "worker").json["quantity"], 1)
        self.assertEqual(self.fake.api("GET", "extra").status, 404)

    def test_concurrent_requests(self):
        self.fake.ctl("POST", "stall", {"count": 1, "seconds": 0.5})
        slow = {}
        t = threading.Thread(target=lambda: slow.setdefault("r", self.fake.api("GET", "worker")))
        t.start()
        time.sleep(0.1)
        fast = self.fake.api("GET", "web")       # not blocked by the stalled one
        t.join(3)
        self.assertEqual(fast.status, 200)
        self.assertLess(fast.elapsed, 0.3)
        self.assertEqual(slow["r"].status, 200)


    # -- stall rules for one method, held replies, dropped requests --------

    def _wait(self, cond, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(0.01)
        self.fail("condition not met within %gs" % timeout)

    def _in_background(self, fn):
        out = {}

        def run():
            try:
                out["r"] = fn()
            except (OSError, http.client.HTTPException) as e:
                out["e"] = e
        t = threading.Thread(target=run)
        t.start()
        return t, out

    def test_stall_for_one_method_only(self):
        r = self.fake.ctl("POST", "stall", {"count": 1, "seconds": 3, "method": "PATCH"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json["queued"]["method"], "PATCH")
        t, out = self._in_background(
            lambda: self.fake.api("PATCH", "worker", body={"quantity": 4}, timeout=10))
        held = self._wait(lambda: self.fake.ctl("GET", "stalled").json)
        self.assertEqual([(h["method"], h["phase"], h["drop"]) for h in held],
                         [("PATCH", "before", False)])
        get = self.fake.api("GET", "worker")            # not held: the rule is PATCH's
        self.assertEqual((get.status, get.json["quantity"]), (200, 1))
        self.assertEqual(len(self.fake.ctl("GET", "stalled").json), 1, "the GET was held")
        t.join(10)
        self.assertEqual((out["r"].status, out["r"].json["quantity"]), (200, 4))
        self.assertEqual([(e["method"], e["stalled"], e["applied"])
                          for e in self.fake.requests_log()],
                         [("GET", 0.0, True), ("PATCH", 3.0, True)])
        self.assertEqual(self.fake.ctl("GET", "stalled").json, [])

    def test_reply_phase_applies_then_holds_the_reply(self):
        self.fake.ctl("POST", "stall", {"seconds": 30, "method": "PATCH", "phase": "reply"})
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=10)
        conn.request("PATCH", "/apps/%s/formation/worker" % APP, body=json.dumps({"quantity": 3}),
                     headers={"Accept": ACCEPT, "Authorization": "Bearer " + TOKEN,
                              "Content-Type": "application/json", "User-Agent": "held/1"})
        # applied and logged while the client still waits for its reply
        log = self._wait(self.fake.requests_log)
        self.assertEqual([(e["method"], e["status"], e["applied"], e["stalled"]) for e in log],
                         [("PATCH", 200, True, 30.0)])
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 3)
        held = self.fake.ctl("GET", "stalled").json
        self.assertEqual([(h["phase"], h["user-agent"]) for h in held], [("reply", "held/1")])
        # the client hangs up: the hold ends at once, nothing more is logged
        conn.close()
        self._wait(lambda: self.fake.ctl("GET", "stalled").json == [])
        self.assertEqual(len(self.fake.requests_log()), 1)
        self.assertEqual(self.fake.api("GET", "worker").json["quantity"], 3)

    def test_drop_never_handles_the_request(self):
        self.fake.ctl("POST", "stall", {"seconds": 0.2, "method": "PATCH", "drop": True})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.fake.api("PATCH", "worker", body={"quantity": 5})
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 1)
        # a client that hangs up ends the drop before its time
        self.fake.ctl("POST", "stall", {"seconds": 30, "method": "PATCH", "drop": True})
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=10)
        conn.request("PATCH", "/apps/%s/formation/worker" % APP, body=json.dumps({"quantity": 6}),
                     headers={"Accept": ACCEPT, "Authorization": "Bearer " + TOKEN,
                              "Content-Type": "application/json"})
        held = self._wait(lambda: self.fake.ctl("GET", "stalled").json)
        self.assertEqual([(h["phase"], h["drop"]) for h in held], [("before", True)])
        conn.close()
        log = self._wait(lambda: len(self.fake.requests_log()) == 2 and self.fake.requests_log())
        self.assertEqual([(e["body"], e["status"], e["applied"], e["injected"], e["closed"])
                          for e in log],
                         [({"quantity": 5}, 0, False, True, "immediate"),
                          ({"quantity": 6}, 0, False, True, "immediate")])
        self.assertEqual(self.fake.ctl("GET", "stalled").json, [])
        self.assertEqual(self.fake.api("GET", "worker").json["quantity"], 1)

    def test_applied_tells_what_really_happened(self):
        self.fake.ctl("POST", "fail", {"status": 503, "method": "PATCH"})
        self.fake.ctl("POST", "fail", {"status": 200, "body": "{}", "apply": True,
                                       "method": "PATCH"})
        self.fake.api("PATCH", "worker", body={"quantity": 2})   # injected, not applied
        self.fake.api("PATCH", "worker", body={"quantity": 3})   # applied, reply garbled
        self.fake.api("PATCH", "worker", body={"quantity": "x"}) # refused
        self.fake.api("PATCH", "worker", body={"quantity": 4})   # plain success
        self.fake.api("GET", "worker")
        self.assertEqual([(e["status"], e["applied"]) for e in self.fake.requests_log()],
                         [(503, False), (200, True), (422, False), (200, True), (200, True)])
        self.assertEqual(self.fake.ctl("GET", "formation/worker").json["quantity"], 4)

    def test_fail_rule_with_a_duration_is_an_outage(self):
        self.fake.ctl("POST", "fail", {"status": 500, "duration": 0.6, "method": "PATCH"})
        self.fake.ctl("POST", "fail", {"status": 502, "method": "PATCH"})  # waits behind it
        statuses = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = self.fake.api("PATCH", "worker", body={"quantity": 2})
            statuses.append(r.status)
            if r.status != 500:
                break
            self.assertEqual(self.fake.api("GET", "worker").status, 200)  # PATCH only
        self.assertGreater(len(statuses), 2, statuses)       # every PATCH meanwhile
        self.assertEqual(set(statuses[:-1]), {500})
        self.assertEqual(statuses[-1], 502)                 # then the next rule
        self.assertEqual(self.fake.api("PATCH", "worker", body={"quantity": 2}).status, 200)
        for bad in (0, -1, "x", True, 4000):
            r = self.fake.ctl("POST", "fail", {"duration": bad})
            self.assertEqual((r.status, r.json["id"]), (422, "invalid_params"), bad)

    def test_stall_rule_validation(self):
        for bad in ({"method": "POST"}, {"phase": "after"}, {"drop": "yes"},
                    {"phase": "reply", "drop": True}):
            r = self.fake.ctl("POST", "stall", dict(bad, seconds=1))
            self.assertEqual((r.status, r.json["id"]), (422, "invalid_params"), bad)
        self.assertEqual(self.fake.ctl("GET", "stalled").json, [])


class ProcessTest(unittest.TestCase):
    """Start-up defaults, arguments and signals (one short-lived fake each)."""

    def test_defaults(self):
        fake = FakeProcess(state_file=False)
        try:
            r = fake.request("GET", "/apps/scalekiq-fake/formation/worker")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["quantity"], 1)
            self.assertEqual(VALIDATOR.errors(r.json, formation_schema()), [])
            ok = fake.request("PATCH", "/apps/scalekiq-fake/formation/worker", body={"quantity": 100})
            self.assertEqual(ok.status, 200)
            over = fake.request("PATCH", "/apps/scalekiq-fake/formation/worker", body={"quantity": 101})
            self.assertEqual((over.status, over.json["id"]), (422, "cannot_run_above_limit"))
        finally:
            self.assertEqual(fake.stop(), 0)

    def test_sigterm_and_sigint_exit_zero(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            fake = FakeProcess("--formation", "worker=3")
            self.assertEqual(fake.request("GET", "/apps/scalekiq-fake/formation/worker").json["quantity"], 3)
            self.assertEqual(fake.stop(sig), 0, sig)

    def test_sigterm_while_a_request_is_stalled(self):
        fake = FakeProcess()
        fake.ctl("POST", "stall", {"seconds": 30})
        t = threading.Thread(target=lambda: self._swallow(fake))
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        fake.proc.send_signal(signal.SIGTERM)
        rc = fake.proc.wait(5)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(rc, 0)
        t.join(5)
        fake.stop()

    @staticmethod
    def _swallow(fake):
        try:
            fake.request("GET", "/apps/scalekiq-fake/formation/worker", timeout=5)
        except (OSError, http.client.HTTPException):
            pass

    def test_bad_arguments(self):
        for args in (["--formation", "worker=abc"], ["--formation", "bad type=1"],
                     ["--max-quantity", "-1"], ["--app-id", "nope"], ["--size", "huge"],
                     []):
            cmd = [sys.executable, FAKE, "--port", "0"] + (["--token", TOKEN] if args else []) + args
            p = subprocess.run(cmd, capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertEqual(p.stdout, b"")


if __name__ == "__main__":
    unittest.main()
