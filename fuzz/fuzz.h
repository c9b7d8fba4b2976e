/*
 * fuzz.h: what the libFuzzer targets in this directory share: the entry
 * point's prototype (the build rejects functions without one), a check
 * that aborts so libFuzzer keeps the input as a reproducer, and turning
 * input bytes into C strings.
 */
#ifndef SCALEKIQ_FUZZ_H
#define SCALEKIQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not assert(): it must hold whatever the build type, and say which
 * promise of the API was broken. */
#define FUZZ_CHECK(cond, promise)                                              \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz check failed at %s:%d: %s\n", __FILE__, __LINE__, \
              promise);                                                        \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* data[0..n) as a malloc'd C string; an embedded NUL ends it early, as it
 * would for the real caller. NULL only when out of memory. */
static inline char *fuzz_strndup(const void *data, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL) return NULL;
  if (n > 0) memcpy(s, data, n);
  s[n] = '\0';
  return s;
}

/* A text is one line when it has no control character (messages go into
 * logfmt lines and control-socket replies). */
static inline int fuzz_is_one_line(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20) return 0;
  return 1;
}

#endif
