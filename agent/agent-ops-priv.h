/* The operation table's internals exported for its unit test only
 * (tests/agent/test-agent-ops.c). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent-ops.h"

/* Apply the retention bounds as if the monotonic clock read @now (ns):
 * forget the finished records beyond the AGENT_OPS_KEEP newest finished
 * ones, and those that ended more than AGENT_OPS_KEEP_MS before @now.
 * Takes the table lock. */
void agent_ops_prune(AgentOps *t, uint64_t now);
/* Records in the table, running and finished.  Takes the table lock. */
size_t agent_ops_count(AgentOps *t);
