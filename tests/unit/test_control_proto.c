/*
 * The control protocol's request parser: every command, the forms a line
 * arrives in (LF, CRLF, no LF, blanks), and every way a line is refused,
 * with an error that names the problem.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

static int parse(const char *line, control_request_t *r, char *err, size_t n) {
  memset(r, 0xA5, sizeof(*r)); /* the parser must set every field */
  return control_parse_request(line, strlen(line), r, err, n);
}

static void ok(const char *line, enum control_command cmd, int json) {
  control_request_t r;
  char err[512] = "";
  cr_assert_eq(parse(line, &r, err, sizeof(err)), 0, "\"%s\": %s", line, err);
  cr_assert_eq(r.command, cmd, "\"%s\"", line);
  cr_assert_eq(r.json, json, "\"%s\"", line);
  cr_assert_eq(r.id, 0);
}

static void bad(const char *line, const char *want) {
  control_request_t r;
  char err[512] = "";
  cr_assert_eq(parse(line, &r, err, sizeof(err)), CONTROL_E_REQUEST, "\"%s\" accepted",
               line);
  cr_assert(strstr(err, want), "\"%s\": error \"%s\" lacks \"%s\"", line, err, want);
  for (const char *p = err; *p; p++)
    cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control char in error: %s", err);
}

Test(control_proto, each_command) {
  ok("status\n", CONTROL_STATUS, 0);
  ok("status --json\n", CONTROL_STATUS, 1);
  ok("metrics\n", CONTROL_METRICS, 0);
  ok("history\n", CONTROL_HISTORY, 0);
  ok("history --json\n", CONTROL_HISTORY, 1);
  ok("pause\n", CONTROL_PAUSE, 0);
  ok("resume\n", CONTROL_RESUME, 0);
  ok("step-down\n", CONTROL_STEP_DOWN, 0);
}

Test(control_proto, line_endings_and_blanks) {
  ok("status", CONTROL_STATUS, 0);         /* no LF: the caller framed it */
  ok("status\r\n", CONTROL_STATUS, 0);
  ok("status --json\r\n", CONTROL_STATUS, 1);
  ok("  status  \n", CONTROL_STATUS, 0);
  ok("\tpause\t\r\n", CONTROL_PAUSE, 0);
  ok("status \t  --json   \n", CONTROL_STATUS, 1);
}

Test(control_proto, empty_lines) {
  bad("", "empty request");
  bad("\n", "empty request");
  bad("\r\n", "empty request");
  bad("   \t \r\n", "empty request");
  /* The error tells what would have worked. */
  bad("\n", "status [--json], metrics, history [--json], pause, resume, step-down");
}

Test(control_proto, unknown_command_named_and_valid_ones_listed) {
  bad("frobnicate\n", "unknown command \"frobnicate\"");
  bad("frobnicate\n", "valid commands: status [--json], metrics");
  bad("STATUS\n", "unknown command \"STATUS\"");
  bad("stat\n", "unknown command \"stat\"");
  bad("statusx\n", "unknown command \"statusx\"");
  bad("--json\n", "unknown command \"--json\"");
  bad("step_down\n", "step-down");
}

Test(control_proto, echoed_names_are_short_and_printable) {
  char line[300];
  memset(line, 'x', 200);
  strcpy(line + 200, "\n");
  control_request_t r;
  char err[512];
  cr_assert_eq(parse(line, &r, err, sizeof(err)), CONTROL_E_REQUEST);
  cr_assert(strstr(err, "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\""), "%s", err);
  bad("st\"atus\n", "unknown command \"st?atus\"");
  bad("caf\xc3\xa9\n", "unknown command \"caf??\"");
}

Test(control_proto, arguments) {
  bad("status --yaml\n", "status accepts only --json (got \"--yaml\")");
  bad("status --json --json\n", "status accepts only --json (got \"--json\")");
  bad("status --json extra\n", "(got \"extra\")");
  bad("history -j\n", "history accepts only --json");
  bad("metrics --json\n", "metrics takes no arguments (got \"--json\")");
  bad("pause now\n", "pause takes no arguments (got \"now\")");
  bad("resume please\n", "resume takes no arguments");
  bad("step-down --force\n", "step-down takes no arguments");
}

Test(control_proto, control_characters) {
  bad("sta\x01tus\n", "control character (0x01) at byte 3");
  bad("status\nfoo\n", "control character (0x0a) at byte 6");
  bad("\x1b[31mstatus\n", "control character (0x1b)");
  bad("status\x7f\n", "control character (0x7f)");
  bad("status\r\r\n", "control character (0x0d)");
  /* A NUL inside the given length is a byte like any other. */
  control_request_t r;
  char err[256];
  cr_assert_eq(control_parse_request("sta\0tus\n", 8, &r, err, sizeof(err)),
               CONTROL_E_REQUEST);
  cr_assert(strstr(err, "(0x00) at byte 3"), "%s", err);
  /* ...and the length is what counts, not a NUL. */
  cr_assert_eq(control_parse_request("pause\nGARBAGE", 6, &r, err, sizeof(err)), 0);
  cr_assert_eq(r.command, CONTROL_PAUSE);
}

Test(control_proto, line_length_limit) {
  size_t n = CONTROL_LINE_MAX;
  char *line = malloc(n + 3);
  control_request_t r;
  char err[512];

  /* Exactly the limit (LF not counted): parsed, and refused for what it
   * says, not for its length. */
  memset(line, ' ', n);
  memcpy(line, "status", 6);
  line[n] = '\n';
  cr_assert_eq(control_parse_request(line, n + 1, &r, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(control_parse_request(line, n, &r, err, sizeof(err)), 0, "%s", err);

  /* One byte more: refused for its length. */
  memset(line, 'a', n + 1);
  line[n + 1] = '\n';
  cr_assert_eq(control_parse_request(line, n + 2, &r, err, sizeof(err)),
               CONTROL_E_REQUEST);
  cr_assert(strstr(err, "request line longer than 4096 bytes"), "%s", err);
  cr_assert_eq(control_parse_request(line, n + 1, &r, err, sizeof(err)),
               CONTROL_E_REQUEST);
  cr_assert(strstr(err, "longer than 4096"), "%s", err);

  /* A CR counts toward the limit: it is part of what was sent. */
  memset(line, ' ', n);
  memcpy(line, "status", 6);
  line[n] = '\r';
  line[n + 1] = '\n';
  cr_assert_eq(control_parse_request(line, n + 2, &r, err, sizeof(err)),
               CONTROL_E_REQUEST);
  free(line);
}

Test(control_proto, small_or_missing_error_buffers) {
  control_request_t r;
  char err[8];
  memset(err, 'Z', sizeof(err));
  cr_assert_eq(control_parse_request("nope\n", 5, &r, err, sizeof(err)),
               CONTROL_E_REQUEST);
  cr_assert_eq(strlen(err), sizeof(err) - 1); /* truncated, terminated */
  cr_assert_eq(control_parse_request("nope\n", 5, &r, NULL, 0), CONTROL_E_REQUEST);
  cr_assert_eq(control_parse_request(NULL, 0, &r, NULL, 0), CONTROL_E_REQUEST);
  cr_assert_eq(control_parse_request("pause\n", 6, NULL, NULL, 0), 0);
}

Test(control_proto, names_and_errors) {
  const char *names[] = {"status", "metrics", "history", "pause", "resume", "step-down"};
  enum control_command cmds[] = {CONTROL_STATUS, CONTROL_METRICS, CONTROL_HISTORY,
                                 CONTROL_PAUSE,  CONTROL_RESUME,  CONTROL_STEP_DOWN};
  for (size_t i = 0; i < 6; i++) {
    cr_assert_str_eq(control_command_name(cmds[i]), names[i]);
    /* The name parses back to the command. */
    control_request_t r;
    cr_assert_eq(control_parse_request(names[i], strlen(names[i]), &r, NULL, 0), 0);
    cr_assert_eq(r.command, cmds[i]);
  }
  for (int code = 0; code >= CONTROL_E_CLOSED; code--)
    cr_assert_str_neq(control_strerror(code), "unknown error", "code %d", code);
  cr_assert_str_eq(control_strerror(-99), "unknown error");
}
