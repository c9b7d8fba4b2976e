/*
 * log: owns the output stream's formatting and secret redaction.
 * Lines are built whole in a buffer and written with one fwrite, so lines
 * from one process never interleave and redaction sees the whole line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(log_t *log, FILE *out, enum log_level min_level) {
  memset(log, 0, sizeof(*log));
  log->out = out;
  log->min_level = min_level;
}

void log_close(log_t *log) {
  for (size_t i = 0; i < log->nsecrets; i++) free(log->secrets[i]);
  log->nsecrets = 0;
}

int log_add_secret(log_t *log, const char *secret) {
  if (secret == NULL || strlen(secret) < 3) return 0;
  for (size_t i = 0; i < log->nsecrets; i++)
    if (strcmp(log->secrets[i], secret) == 0) return 0;
  if (log->nsecrets == LOG_MAX_SECRETS) return -1;
  char *copy = strdup(secret);
  if (copy == NULL) return -1;
  log->secrets[log->nsecrets++] = copy;
  return 0;
}

static void redact_one(char *line, size_t size, const char *secret) {
  static const char mask[] = "[REDACTED]";
  size_t slen = strlen(secret), mlen = sizeof(mask) - 1;
  char *p = line;
  while ((p = strstr(p, secret)) != NULL) {
    size_t tail = strlen(p + slen);
    size_t pos = (size_t)(p - line);
    if (pos + mlen + 1 > size) { /* no room even for the mask */
      *p = '\0';
      return;
    }
    if (pos + mlen + tail + 1 > size) tail = size - 1 - pos - mlen;
    memmove(p + mlen, p + slen, tail);
    memcpy(p, mask, mlen);
    p[mlen + tail] = '\0';
    p += mlen;
  }
}

void log_redact(const log_t *log, char *line, size_t size) {
  for (size_t i = 0; i < log->nsecrets; i++)
    redact_one(line, size, log->secrets[i]);
}

const char *log_quote(char *buf, size_t size, const char *value) {
  if (size == 0) return buf;
  if (value == NULL) value = "";
  int bare = value[0] != '\0';
  for (const char *p = value; *p && bare; p++)
    if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' ||
        *p == 0x7f)
      bare = 0;
  if (bare) {
    snprintf(buf, size, "%s", value);
    return buf;
  }
  size_t o = 0;
  buf[o++] = '"';
  for (const char *p = value; *p && o + 3 < size; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c == '\n') {
      buf[o++] = '\\';
      buf[o++] = 'n';
    } else if (c < ' ' || c == 0x7f) {
      buf[o++] = '?';
    } else {
      buf[o++] = (char)c;
    }
  }
  if (o < size - 1) buf[o++] = '"';
  buf[o] = '\0';
  return buf;
}

void log_event(log_t *log, enum log_level level, const char *event,
               const char *fmt, ...) {
  if (log == NULL || log->out == NULL || level < log->min_level) return;
  char line[LOG_LINE_MAX];
  int n = snprintf(line, sizeof(line), "level=%s event=%s", level_names[level],
                   event);
  if (n < 0) return;
  size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
  if (fmt != NULL && fmt[0] != '\0' && len + 2 < sizeof(line)) {
    line[len++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    va_end(ap);
  }
  log_redact(log, line, sizeof(line) - 1);
  len = strlen(line);
  line[len++] = '\n';
  fwrite(line, 1, len, log->out);
  fflush(log->out);
}

int log_level_parse(const char *s, enum log_level *out) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) {
      *out = (enum log_level)i;
      return 0;
    }
  return -1;
}
