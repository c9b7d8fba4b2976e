/*
 * control_proto: owns the control socket's line protocol, with no I/O:
 * the command table, parsing one request line into a control_request_t
 * (with an error that says what was wrong and what is valid), the
 * commands' names and the error codes' messages.
 */
#include "control.h"

#include <stdio.h>
#include <string.h>

const char *control_strerror(int code) {
  switch (code) {
  case 0: return "ok";
  case CONTROL_E_INVALID: return "invalid argument";
  case CONTROL_E_NOMEM: return "out of memory";
  case CONTROL_E_IO: return "control socket error";
  case CONTROL_E_INUSE: return "control socket path in use";
  case CONTROL_E_TIMEOUT: return "timed out";
  case CONTROL_E_NOAGENT: return "no agent answers";
  case CONTROL_E_REQUEST: return "bad request";
  case CONTROL_E_AGENT: return "the agent replied with an error";
  case CONTROL_E_GONE: return "the client went away";
  case CONTROL_E_CLOSED: return "control socket closed";
  default: return "unknown error";
  }
}

static const struct {
  const char *name;
  enum control_command cmd;
  int json_ok;
} COMMANDS[] = {
    {"status", CONTROL_STATUS, 1},   {"metrics", CONTROL_METRICS, 0},
    {"history", CONTROL_HISTORY, 1}, {"pause", CONTROL_PAUSE, 0},
    {"resume", CONTROL_RESUME, 0},   {"step-down", CONTROL_STEP_DOWN, 0},
};
#define NCOMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))
#define VALID_COMMANDS                                                         \
  "status [--json], metrics, history [--json], pause, resume, step-down"

const char *control_command_name(enum control_command cmd) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (COMMANDS[i].cmd == cmd) return COMMANDS[i].name;
  return "unknown";
}

#define PARSE_FAIL(...)                                                        \
  do {                                                                         \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                     \
    return CONTROL_E_REQUEST;                                                  \
  } while (0)

/* A word from the request echoed back in an error: the client's own bytes,
 * so shortened and with anything unprintable replaced, since the message
 * goes into a reply line and maybe a log. */
static void echo_word(char *dst, size_t size, const char *w, size_t n) {
  size_t max = 32, o = 0;
  for (size_t i = 0; i < n && i < max && o + 1 < size; i++) {
    unsigned char ch = (unsigned char)w[i];
    dst[o++] = (ch >= 0x20 && ch < 0x7f && ch != '"') ? (char)ch : '?';
  }
  if (n > max && o + 4 < size) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
}

int control_parse_request(const char *line, size_t len, control_request_t *out,
                          char *err, size_t errlen) {
  if (line == NULL) len = 0;
  if (len > 0 && line[len - 1] == '\n') len--;
  if (len > CONTROL_LINE_MAX)
    PARSE_FAIL("request line longer than %d bytes; send one command, e.g. "
               "\"status\"", CONTROL_LINE_MAX);
  if (len > 0 && line[len - 1] == '\r') len--;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)line[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
      PARSE_FAIL("request has a control character (0x%02x) at byte %zu; send "
                 "one line of text, e.g. \"status\"",
                 ch, i);
  }

  /* Words separated by blanks; three are enough to tell every error. */
  const char *w[3];
  size_t wl[3], nw = 0;
  for (size_t i = 0; i < len;) {
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i == len) break;
    size_t start = i;
    while (i < len && line[i] != ' ' && line[i] != '\t') i++;
    if (nw < 3) {
      w[nw] = line + start;
      wl[nw] = i - start;
    }
    nw++;
  }
  if (nw == 0) PARSE_FAIL("empty request; valid commands: " VALID_COMMANDS);

  char echo[40];
  size_t k;
  for (k = 0; k < NCOMMANDS; k++)
    if (strlen(COMMANDS[k].name) == wl[0] &&
        memcmp(COMMANDS[k].name, w[0], wl[0]) == 0)
      break;
  if (k == NCOMMANDS) {
    echo_word(echo, sizeof(echo), w[0], wl[0]);
    PARSE_FAIL("unknown command \"%s\"; valid commands: " VALID_COMMANDS, echo);
  }

  control_request_t r;
  memset(&r, 0, sizeof(r));
  r.command = COMMANDS[k].cmd;
  if (nw > 1) {
    int is_json = wl[1] == 6 && memcmp(w[1], "--json", 6) == 0;
    if (!COMMANDS[k].json_ok) {
      echo_word(echo, sizeof(echo), w[1], wl[1]);
      PARSE_FAIL("%s takes no arguments (got \"%s\")", COMMANDS[k].name, echo);
    }
    if (!is_json || nw > 2) {
      size_t bad = is_json ? 2 : 1;
      echo_word(echo, sizeof(echo), w[bad], wl[bad]);
      PARSE_FAIL("%s accepts only --json (got \"%s\")", COMMANDS[k].name, echo);
    }
    r.json = 1;
  }
  if (out) *out = r;
  return 0;
}
