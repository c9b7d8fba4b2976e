/*
 * fuzz_control: the control socket's request parser (lib/control_proto.c) on
 * arbitrary bytes, as a client could send them.
 */
#include "fuzz.h"

#include "control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  control_request_t req;
  memset(&req, 0xa5, sizeof(req)); /* the parser must set every field */
  char err[256] = "";
  int rc = control_parse_request((const char *)data, size, &req, err, sizeof(err));
  FUZZ_CHECK(control_parse_request((const char *)data, size, NULL, NULL, 0) == rc,
             "out and err may be NULL");
  if (rc != 0) {
    FUZZ_CHECK(rc == CONTROL_E_REQUEST, "a bad request is CONTROL_E_REQUEST");
    /* The message becomes the reply line "error: ...\n". */
    FUZZ_CHECK(err[0] != '\0' && fuzz_is_one_line(err), "a bad request gets one line");
    return 0;
  }
  const char *name = control_command_name(req.command);
  FUZZ_CHECK(strcmp(name, "unknown") != 0, "a parsed request has a known command");
  FUZZ_CHECK(req.json == 0 || ((req.command == CONTROL_STATUS ||
                                req.command == CONTROL_HISTORY) && req.json == 1),
             "only status and history take --json");
  FUZZ_CHECK(req.id == 0 && req.uid == 0 && req.pid == 0,
             "the server's fields start at 0");
  FUZZ_CHECK(size > 0 && size <= CONTROL_LINE_MAX + 2, "a request is one short line");
  return 0;
}
