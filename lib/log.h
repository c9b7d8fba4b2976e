/*
 * log: one logfmt line per event on a stream (stdout on Heroku).
 *
 * A line is "level=L event=E" followed by the caller's key=value pairs.
 * Secrets registered with log_add_secret() are replaced by "[REDACTED]"
 * in every line before it is written, whatever path put them there.
 */
#ifndef SCALEKIQ_LOG_H
#define SCALEKIQ_LOG_H

#include <stdio.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

#define LOG_MAX_SECRETS 8
#define LOG_LINE_MAX 4096

typedef struct log {
  FILE *out;
  enum log_level min_level;
  char *secrets[LOG_MAX_SECRETS];
  size_t nsecrets;
} log_t;

void log_init(log_t *log, FILE *out, enum log_level min_level);
void log_close(log_t *log);

/* Remembers a copy of secret (ignored when empty or shorter than 3 bytes,
 * which would redact ordinary text). Returns 0 or -1 when full/out of memory. */
int log_add_secret(log_t *log, const char *secret);

/* fmt formats the pairs after "event=E", e.g. "formation=%s from=%d".
 * Quote free-form strings with log_quote(). A NULL log is a no-op. */
void log_event(log_t *log, enum log_level level, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Writes value into buf as a logfmt value: bare when it has no space,
 * quote, '=' or control character, else double-quoted with escapes.
 * Returns buf; truncates to fit. */
const char *log_quote(char *buf, size_t size, const char *value);

/* Replaces every occurrence of each registered secret in line (in place). */
void log_redact(const log_t *log, char *line, size_t size);

int log_level_parse(const char *s, enum log_level *out);

#endif
