/* The migration table's internals exported for its unit test only
 * (tests/agent/test-migtable.c). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent-migtable.h"

/* Apply the retention bounds as if the monotonic clock read @now (ns):
 * forget the done records beyond the MIG_TABLE_KEEP newest done ones, and
 * those done more than MIG_TABLE_KEEP_MS before @now.  Takes the table lock. */
void agent_migtable_prune(MigrationTable *t, uint64_t now);
/* Records in the table, running and done.  Takes the table lock. */
size_t agent_migtable_count(MigrationTable *t);
