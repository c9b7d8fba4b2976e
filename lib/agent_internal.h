/*
 * agent_internal: what the poll and lifecycle (agent.c) and the control
 * socket's side (agent_report.c) share. Not part of the API.
 */
#ifndef SCALEKIQ_AGENT_INTERNAL_H
#define SCALEKIQ_AGENT_INTERNAL_H

#include <cjson/cJSON.h>

#include "agent.h"

/* Redis's clock as the last poll measured it: every shared time is on it. */
double agent_shared_now(const agent_t *a);

/* {"event": event}, to fill in and pass to agent_history_add(). */
cJSON *agent_history_entry(const char *event);
/* Appends entry (consumed) to the shared history; best effort. */
void agent_history_add(agent_t *a, cJSON *entry);

/* The control socket's handler (control_options_t.handler); data is the
 * agent. */
int agent_on_control(control_t *c, const control_request_t *req, char **reply,
                     void *data);

#endif
