/* The QMP channel's entry for the typed calls.
 *
 * qmp-commands.c builds and checks each command's arguments, then sends it
 * through the channel (qmp.c) with this call; the channel frames it with
 * qmp-wire.c.  Only qmp.c and qmp-commands.c include this header, so the
 * calls run one way: qmp-commands.c -> qmp.c -> qmp-wire.c.
 */
#pragma once

#include "deadline.h"
#include "qmp.h"

/* One command through the channel (contract of qmp_call() in qmp.h), with
 * @args_json already checked to be a JSON object or NULL, and one deadline
 * for queueing, writing and the reply.  No lock held; any thread but the
 * monitor's own. */
int qmp_monitor_command(QmpMonitor *m, const char *command, const char *args_json, Deadline d,
                        char **ret_json);
