/*
 * fuzz_store_state: the persisted-state parser (store_load_parse, and
 * under it scaler_state_parse) on replies that hiredis's reader makes of
 * the input as RESP, as if Redis had answered the store's MGET with them.
 * A state that loads must be safe to act on, and must survive being
 * written back (store_format_state) and read again.
 */
#include "fuzz.h"

#include <math.h>

#include "scaler.h"
#include "store.h"

#define FUZZ_NOW 1700000000.0 /* fixed, so every run is reproducible */

static void check_sane(const scaler_state_t *st) {
  FUZZ_CHECK(st->depth >= 0 && st->depth <= SCALER_DEPTH_LIMIT, "depth is in range");
  FUZZ_CHECK(isfinite(st->last_alerted) && st->last_alerted >= 0 &&
                 st->last_alerted <= FUZZ_NOW + SCALER_FUTURE_TOLERANCE,
             "last_alerted is a time, not far in the future");
  if (st->depth == 0)
    FUZZ_CHECK(st->event_started == 0, "no event, no start time");
  else
    FUZZ_CHECK(isfinite(st->event_started) && st->event_started > 0 &&
                   st->event_started <= FUZZ_NOW + SCALER_FUTURE_TOLERANCE,
               "an event has a start time, not far in the future");
  FUZZ_CHECK(st->initial_workers >= -1 && st->initial_workers <= SCALER_WORKERS_LIMIT,
             "initial workers is -1 or a sane count");
  FUZZ_CHECK(st->failures == 0 && st->retry_at == 0 && !st->ceiling_reached,
             "runtime fields start at zero");
}

/* Written back as store_save would, then read as the next leader would. */
static void check_round_trip(const scaler_state_t *st) {
  /* Times keep microseconds: an event started within a microsecond of
   * the epoch would read back as "0.0", i.e. no start. No clock says that. */
  if (st->depth > 0 && st->event_started < 1e-6) return;
  char depth[STORE_INT_LEN], last[STORE_FLOAT_LEN], started[STORE_FLOAT_LEN],
      initial[STORE_INT_LEN];
  store_format_state(st, depth, last, started, initial);
  scaler_state_t back;
  char why[512] = "";
  int reset = scaler_state_parse(&back, depth, last, started,
                                 initial[0] ? initial : NULL, FUZZ_NOW, why, sizeof(why));
  FUZZ_CHECK(reset == 0, "a state written back reads without a reset");
  FUZZ_CHECK(back.depth == st->depth && back.initial_workers == st->initial_workers,
             "depth and initial workers read back exactly");
  FUZZ_CHECK(fabs(back.last_alerted - st->last_alerted) <= 1e-6 &&
                 fabs(back.event_started - st->event_started) <= 1e-6,
             "times read back to the microsecond");
}

static void parse_one(const store_t *s, redisReply *reply) {
  scaler_state_t st;
  char warning[1024];
  int rc = store_load_parse(s, reply, FUZZ_NOW, &st, warning, sizeof(warning));
  if (reply->type == REDIS_REPLY_ERROR) {
    FUZZ_CHECK(rc == STORE_E_REPLY, "an error reply is STORE_E_REPLY");
    return;
  }
  if (rc != 0) {
    FUZZ_CHECK(rc == REDIS_E_PROTOCOL, "a reply of the wrong shape is REDIS_E_PROTOCOL");
    return;
  }
  FUZZ_CHECK(reply->type == REDIS_REPLY_ARRAY && reply->elements == 4,
             "only the MGET's four values load");
  FUZZ_CHECK(fuzz_is_one_line(warning), "the warning is one line");
  check_sane(&st);
  check_round_trip(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The store logs resets and error replies: exercise that path too. */
  FILE *devnull = fopen("/dev/null", "w");
  if (devnull == NULL) return 0;
  log_t log;
  log_init(&log, devnull, LOG_DEBUG);
  store_t s;
  redisReader *reader = redisReaderCreate();
  if (reader == NULL || store_init(&s, NULL, NULL, "worker", &log) != 0) {
    if (reader) redisReaderFree(reader);
    fclose(devnull);
    return 0;
  }
  if (redisReaderFeed(reader, (const char *)data, size) == REDIS_OK) {
    void *reply = NULL;
    while (redisReaderGetReply(reader, &reply) == REDIS_OK && reply != NULL) {
      parse_one(&s, reply);
      freeReplyObject(reply);
      reply = NULL;
    }
  }
  store_close(&s);
  redisReaderFree(reader);
  log_close(&log);
  fclose(devnull);
  return 0;
}
