/* Internals of the status cache (agent-status.c) for tests and benchmarks. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct AgentStatusCacheCounts {
        uint64_t hits;   /* statuses copied from the cache, since the process started */
        uint64_t misses; /* statuses snapshotted and packed */
        size_t entries;  /* VMs with a cached status now */
} AgentStatusCacheCounts;

/* The cache's counters (takes its lock for reading). */
void agent_status_cache_counts(AgentStatusCacheCounts *ret);
