/* rusage_run OUTFILE CMD [ARGS...]: runs CMD, then writes one line to OUTFILE:
 *   wall_us=W user_us=U sys_us=S maxrss_kb=R status=X
 * wall time from just before fork to just after wait4 (CLOCK_MONOTONIC), and
 * CMD's own user/sys CPU time and peak RSS from wait4's rusage.
 *
 * Why not /usr/bin/time: GNU time prints CPU and wall time in hundredths of a
 * second, too coarse for a read that takes a few milliseconds. Why not spawn
 * from the Python harness directly: on Linux a child's ru_maxrss starts from
 * the RSS of the process it was forked from (exec keeps the old high-water
 * mark), so it would report the harness's ~10 MiB instead of the command's.
 * This launcher is tiny, like GNU time, so its RSS does not leak into CMD's.
 * CMD's stdin, stdout and stderr are this process's. Exits with CMD's status
 * (128+signal if killed, 127 if it could not be run). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long us_between(const struct timespec *a, const struct timespec *b) {
  return (long long)(b->tv_sec - a->tv_sec) * 1000000LL + (b->tv_nsec - a->tv_nsec) / 1000;
}

static long long tv_us(const struct timeval *tv) {
  return (long long)tv->tv_sec * 1000000LL + tv->tv_usec;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: rusage_run OUTFILE CMD [ARGS...]\n");
    return 2;
  }
  FILE *out = fopen(argv[1], "w");
  if (out == NULL) {
    fprintf(stderr, "rusage_run: cannot write %s: %s\n", argv[1], strerror(errno));
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "rusage_run: fork: %s\n", strerror(errno));
    return 2;
  }
  if (pid == 0) {
    execvp(argv[2], argv + 2);
    fprintf(stderr, "rusage_run: cannot run %s: %s\n", argv[2], strerror(errno));
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) {
      fprintf(stderr, "rusage_run: wait4: %s\n", strerror(errno));
      return 2;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  fprintf(out, "wall_us=%lld user_us=%lld sys_us=%lld maxrss_kb=%ld status=%d\n",
          us_between(&t0, &t1), tv_us(&ru.ru_utime), tv_us(&ru.ru_stime), ru.ru_maxrss,
          code);
  if (fclose(out) != 0) {
    fprintf(stderr, "rusage_run: writing %s: %s\n", argv[1], strerror(errno));
    return 2;
  }
  return code;
}
