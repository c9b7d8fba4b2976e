/*
 * control_internal: what the socket server (control.c) and the blocking
 * client (control_client.c) share. Not part of the API.
 */
#ifndef SCALEKIQ_CONTROL_INTERNAL_H
#define SCALEKIQ_CONTROL_INTERNAL_H

#include <sys/un.h>

/* Fills sa for path; -1 when path does not fit sun_path. */
int control_unix_addr(struct sockaddr_un *sa, const char *path);

#endif
