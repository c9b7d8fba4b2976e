/*
 * redis_pipeline: owns building requests: commands formatted by hiredis
 * into one growing buffer, which redis_pipeline_send (redis.c) then queues
 * and writes as one. redis_command is the pipeline of one.
 */
#include "redis.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void redis_pipeline_init(redis_pipeline_t *p) { memset(p, 0, sizeof(*p)); }

void redis_pipeline_reset(redis_pipeline_t *p) {
  free(p->buf);
  redis_pipeline_init(p);
}

static int pipeline_add(redis_pipeline_t *p, char *cmd, int len) {
  if (len < 0 || cmd == NULL) {
    p->failed = 1;
    return REDIS_E_NOMEM;
  }
  if (p->len + (size_t)len > p->cap) {
    size_t cap = p->cap ? p->cap : 256;
    while (cap < p->len + (size_t)len) cap *= 2;
    char *nb = realloc(p->buf, cap);
    if (nb == NULL) {
      free(cmd);
      p->failed = 1;
      return REDIS_E_NOMEM;
    }
    p->buf = nb;
    p->cap = cap;
  }
  memcpy(p->buf + p->len, cmd, (size_t)len);
  p->len += (size_t)len;
  p->ncmds++;
  free(cmd);
  return 0;
}

int redis_pipeline_appendf(redis_pipeline_t *p, const char *fmt, ...) {
  char *cmd = NULL;
  va_list ap;
  va_start(ap, fmt);
  int len = redisvFormatCommand(&cmd, fmt, ap);
  va_end(ap);
  return pipeline_add(p, cmd, len);
}

int redis_pipeline_append_argv(redis_pipeline_t *p, int argc,
                               const char **argv, const size_t *argvlen) {
  char *cmd = NULL;
  int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
  return pipeline_add(p, cmd, len);
}

int redis_command(redis_t *r, redis_reply_cb cb, void *data, const char *fmt,
                  ...) {
  redis_pipeline_t p;
  redis_pipeline_init(&p);
  char *cmd = NULL;
  va_list ap;
  va_start(ap, fmt);
  int len = redisvFormatCommand(&cmd, fmt, ap);
  va_end(ap);
  pipeline_add(&p, cmd, len);
  return redis_pipeline_send(r, &p, cb, data);
}
