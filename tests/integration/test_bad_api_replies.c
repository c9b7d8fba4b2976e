/*
 * The Platform API client against a real HTTP server that answers with
 * what the Platform API never sends: an HTML page with 200 (a captive
 * portal, a proxy), JSON of the wrong shape, quantities that are not
 * counts, a body over the size limit. The process type asked for picks
 * the answer. Each call ends once with BAD_REPLY (or the status's own
 * code), quantity -1 and a detail that says what to check; the token is
 * never logged. The fake Platform API (tests/fakes) answers only what the
 * real one would, so this server is a few lines of Python of its own.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heroku.h"
#include "testutil.h"

#define TOKEN "tok-bad-replies-SECRET"

static const char SERVER[] =
    "import sys\n"
    "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "HTML = b'<html><body>Sign in to the Wi-Fi</body></html>'\n"
    "BODIES = {\n"
    "  'good': (200, b'{\"type\":\"good\",\"quantity\":3}'),\n"
    "  'html': (200, HTML),\n"
    "  'empty': (200, b''),\n"
    "  'list': (200, b'[{\"quantity\":3}]'),\n"
    "  'trailing': (200, b'{\"quantity\":3}<!-- cached -->'),\n"
    "  'missing': (200, b'{\"type\":\"missing\"}'),\n"
    "  'string': (200, b'{\"quantity\":\"3\"}'),\n"
    "  'boolean': (200, b'{\"quantity\":true}'),\n"
    "  'negative': (200, b'{\"quantity\":-2}'),\n"
    "  'fraction': (200, b'{\"quantity\":2.5}'),\n"
    "  'huge': (200, b'{\"quantity\":1e400}'),\n"
    "  'big': (200, b'{\"quantity\":3,\"pad\":\"' + b'x' * (2 << 20) + b'\"}'),\n"
    "  'html500': (500, HTML),\n"
    "}\n"
    "class H(BaseHTTPRequestHandler):\n"
    "  def do_GET(self):\n"
    "    code, body = BODIES.get(self.path.rsplit('/', 1)[-1], (404, b''))\n"
    "    self.send_response(code)\n"
    "    self.send_header('Content-Type', 'text/html' if body[:1] == b'<' else\n"
    "                     'application/json')\n"
    "    self.send_header('Content-Length', str(len(body)))\n"
    "    self.end_headers()\n"
    "    self.wfile.write(body)\n"
    "  def log_message(self, *a):\n"
    "    pass\n"
    "s = ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
    "print('listening', s.server_address[1], flush=True)\n"
    "s.serve_forever()\n";

static pid_t server;
static int port;
static char dir[64], out_path[128];

static bool listening(void *arg) {
  (void)arg;
  char *text = test_read_file(out_path);
  int ok = sscanf(text, "listening %d", &port) == 1;
  free(text);
  return ok;
}

static void start(void) {
  strcpy(dir, "/tmp/skq-badapi-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  snprintf(out_path, sizeof(out_path), "%s/server.out", dir);
  const char *argv[] = {PYTHON3_BIN, "-c", SERVER, NULL};
  server = test_spawn(argv, NULL, out_path);
  cr_assert(test_wait_for(listening, NULL, 15), "the server never said it listens");
}

static void stop(void) {
  test_stop(server, SIGTERM, 5);
  unlink(out_path);
  rmdir(dir);
}

TestSuite(bad_api_replies, .init = start, .fini = stop);

static int calls;
static heroku_result_t last;

static void on_result(heroku_t *h, const heroku_result_t *r, void *data) {
  (void)h;
  (void)data;
  calls++;
  last = *r;
}

static int closed;
static void on_closed(heroku_t *h) {
  (void)h;
  closed++;
}

/* One GET of formation type `type`; returns the log it wrote. */
static char *get_formation(const char *type) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char *logbuf = NULL;
  size_t loglen = 0;
  FILE *f = open_memstream(&logbuf, &loglen);
  log_t lg;
  log_init(&lg, f, LOG_DEBUG);
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
  heroku_options_t o;
  heroku_options_default(&o);
  o.api_url = url;
  o.app = "example";
  o.token = TOKEN;
  o.formation = type;
  o.timeout = 10;
  o.max_attempts = 1; /* a 500 is retried otherwise: one answer is enough here */
  o.log = &lg;
  heroku_t h;
  char err[256];
  cr_assert_eq(heroku_init(&loop, &h, &o, err, sizeof(err)), 0, "%s", err);
  calls = 0;
  cr_assert_eq(heroku_get_formation(&h, on_result, NULL), 0);
  cr_assert(test_loop_until(&loop, &calls, 1, 20), "%s: no result", type);
  closed = 0;
  heroku_close(&h, on_closed);
  cr_assert(test_loop_until(&loop, &closed, 1, 5), "%s: never closed", type);
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_assert_eq(uv_loop_close(&loop), 0, "%s: a handle was left open", type);
  log_close(&lg);
  fclose(f);
  return logbuf;
}

struct api_case {
  const char *type;
  int status;
  long http;
  const char *detail;
};

static const struct api_case CASES[] = {
    {"good", 0, 200, "quantity 3"},
    {"html", HEROKU_E_BAD_REPLY, 200,
     "reading the html formation of app example: HTTP 200 with a body that is not a "
     "JSON object (\"<html><body>Sign in to the Wi-Fi</body><...\"): is "
     "HEROKU_API_URL the Platform API?"},
    {"empty", HEROKU_E_BAD_REPLY, 200,
     "HTTP 200 with an empty body where a formation was expected: is HEROKU_API_URL "
     "the Platform API?"},
    {"list", HEROKU_E_BAD_REPLY, 200, "not a JSON object"},
    {"trailing", HEROKU_E_BAD_REPLY, 200, "not a JSON object"},
    {"missing", HEROKU_E_BAD_REPLY, 200,
     "HTTP 200 reply has no quantity: not a formation object"},
    {"string", HEROKU_E_BAD_REPLY, 200,
     "HTTP 200 reply has a quantity that is not a number: is HEROKU_API_URL the "
     "Platform API?"},
    {"boolean", HEROKU_E_BAD_REPLY, 200, "quantity that is not a number"},
    {"negative", HEROKU_E_BAD_REPLY, 200,
     "HTTP 200 reply has quantity -2, not a non-negative integer"},
    {"fraction", HEROKU_E_BAD_REPLY, 200, "quantity 2.5, not a non-negative integer"},
    {"huge", HEROKU_E_BAD_REPLY, 200, "quantity inf, not a non-negative integer"},
    {"big", HEROKU_E_BAD_REPLY, 200, "over the 1048576-byte limit"},
    {"html500", HEROKU_E_UNAVAILABLE, 500,
     "HTTP 500 (body not JSON): the Platform API is failing"},
};

Test(bad_api_replies, each_reply) {
  for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
    const struct api_case *c = &CASES[i];
    char *log = get_formation(c->type);
    cr_assert_eq(calls, 1, "%s: %d results", c->type, calls);
    cr_assert_eq(last.status, c->status, "%s: status %d (%s)", c->type, last.status,
                 last.detail);
    cr_assert_eq(last.http_status, c->http, "%s: HTTP %ld", c->type, last.http_status);
    cr_assert_eq(last.quantity, c->status == 0 ? 3 : -1, "%s: quantity %ld", c->type,
                 last.quantity);
    cr_assert_not_null(strstr(last.detail, c->detail), "%s: \"%s\" lacks \"%s\"",
                       c->type, last.detail, c->detail);
    cr_assert_null(strstr(log, "SECRET"), "%s: token in the log: %s", c->type, log);
    free(log);
  }
}
