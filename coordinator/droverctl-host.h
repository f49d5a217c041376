/* droverctl's inventory commands (droverctl-host.c): add, remove, change
 * and show one host of the coordinator's inventory.
 *
 *   droverctl host add NAME ADDRESS [FIELD=VALUE...]   AddHost
 *   droverctl host remove NAME                         RemoveHost
 *   droverctl host set NAME FIELD=VALUE...             UpdateHost
 *   droverctl host show NAME                           the whole record
 *
 * FIELD is an API field name of the host record that UpdateHost changes
 * (address, migration_address, memory_mib, vcpus, cpu_model,
 * link_bytes_per_s, max_outgoing, max_incoming).  docs/droverctl.md. */
#pragma once

#include <stdbool.h>
#include <stdint.h>


/* Whether @verb ("add", "remove", "set", "show") is one of these commands. */
bool droverctl_host_handles(const char *verb);

/* Run `host VERB ARGS...` (@argv[0] is the verb, @argc counts it) on the
 * connected client (droverctl.h, dctl_call), printing JSON (one document)
 * with --json, else text.  Returns droverctl's exit code (droverctl.h):
 * 0 done, 2 usage, 4 refused, 5 no such host, 6 unreachable; the error on
 * stderr, or as {"error": ...} with --json. */
int droverctl_host(int argc, char **argv);
