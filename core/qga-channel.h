/* The QGA channel's entry for the typed calls.
 *
 * qga-commands.c builds and checks each command's arguments, then sends it
 * through the channel (qga.c) with this call; the channel frames it with
 * qga-wire.c.  Only qga.c and qga-commands.c include this header, so the
 * calls run one way: qga-commands.c -> qga.c -> qga-wire.c.
 */
#pragma once

#include <stdint.h>

#include "qga.h"

/* Run @command through the channel: the contract of qga_call() (qga.h),
 * with @args_json already checked to be a JSON object or NULL.  On success
 * *ret_return_json (optional) gets the "return" member as malloc'ed text.
 * Not safe against a concurrent qga_free(). */
int qga_agent_command(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms,
                      char **ret_return_json);

/* The socket path (immutable), for error details. */
const char *qga_path(QgaAgent *a);
