/*
 * fuzz_job_latency: Sidekiq's data model parsers (lib/sidekiq.c) on
 * arbitrary bytes: the whole input as a job payload, its first 8 bytes as
 * a raw timestamp, and the input split at its first NUL or LF as a
 * process heartbeat's busy and info (info absent when there is no split).
 */
#include "fuzz.h"

#include <math.h>

#include "sidekiq.h"

/* A fixed clock (2023-11-14T22:13:20Z), near the seeds' timestamps, so
 * real jobs give real latencies and every run is reproducible. */
#define FUZZ_NOW 1700000000.0

static void job(const uint8_t *data, size_t size) {
  char err[256] = "";
  double latency = -1;
  enum sidekiq_job_status st =
      sidekiq_job_latency((const char *)data, size, FUZZ_NOW, &latency, err, sizeof(err));
  FUZZ_CHECK(isfinite(latency) && latency >= 0, "a job's latency is a number >= 0");
  switch (st) {
  case SIDEKIQ_JOB_OK: break;
  case SIDEKIQ_JOB_NO_TIME:
    FUZZ_CHECK(latency == 0, "a job without a timestamp has latency 0");
    break;
  case SIDEKIQ_JOB_INVALID:
    FUZZ_CHECK(latency == 0, "an invalid job has latency 0");
    FUZZ_CHECK(err[0] != '\0' && fuzz_is_one_line(err), "an invalid job says why, on one line");
    break;
  default: FUZZ_CHECK(0, "sidekiq_job_latency returns a known status");
  }
}

static void timestamp(const uint8_t *data, size_t size) {
  double raw;
  if (size < sizeof(raw)) return;
  memcpy(&raw, data, sizeof(raw));
  double s = sidekiq_timestamp_seconds(raw);
  if (isnan(raw)) {
    FUZZ_CHECK(isnan(s), "a NaN timestamp stays NaN");
  } else if (raw > SIDEKIQ_MS_THRESHOLD) {
    FUZZ_CHECK(s <= raw && s > SIDEKIQ_MS_THRESHOLD / 1000.0,
               "milliseconds become seconds of the same era");
  } else {
    FUZZ_CHECK(s == raw, "seconds stay as they are");
  }
}

static void process(const uint8_t *data, size_t size) {
  size_t cut = 0;
  while (cut < size && data[cut] != '\0' && data[cut] != '\n') cut++;
  char *busy = fuzz_strndup(data, cut);
  char *info = cut < size ? fuzz_strndup(data + cut + 1, size - cut - 1) : NULL;
  if (busy == NULL || (cut < size && info == NULL)) {
    free(busy);
    free(info);
    return;
  }

  char err[256] = "";
  long long b = -1, c = -1;
  int rc = sidekiq_process_parse(busy, info, NULL, &b, &c, err, sizeof(err));
  if (info == NULL) {
    FUZZ_CHECK(rc == 1, "a process without info is gone");
  } else if (rc == 0) {
    FUZZ_CHECK(b >= 0 && b <= c, "busy is a count up to concurrency");
  } else if (rc == 2) {
    FUZZ_CHECK(b == c && c >= 0 && err[0] != '\0' && fuzz_is_one_line(err),
               "busy above concurrency is capped to it, and said so");
  } else {
    FUZZ_CHECK(rc == -1 && err[0] != '\0' && fuzz_is_one_line(err),
               "a malformed process says why, on one line");
  }

  /* Sidekiq 8.1.2+: concurrency is a field of its own, and wins over info. */
  err[0] = '\0';
  b = c = -1;
  rc = sidekiq_process_parse(NULL, info ? info : "{}", busy, &b, &c, err, sizeof(err));
  if (rc == 0)
    FUZZ_CHECK(b == 0 && c >= 0, "no busy field counts as 0 busy");
  else
    FUZZ_CHECK(rc == -1 && err[0] != '\0', "a malformed concurrency says why");
  free(busy);
  free(info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  job(data, size);
  timestamp(data, size);
  process(data, size);
  return 0;
}
