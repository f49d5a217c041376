/* The agent's Prometheus metrics (docs/operations.md, "Metrics").
 *
 * Two halves.  The migration code reports each ended migration through
 * agent_metrics_migration_ended(): process-wide counters and histograms
 * updated with atomics (core/metrics.h), so the hooks take no lock.
 * Everything else is read at scrape time from what already keeps it: the
 * lock classes' statistics (core/lock.h), the RPC lanes' counters
 * (rpc_server_lane_stats), and each guest's snapshot (vm_snapshot: the VM
 * lock for one copy, never across anything).  The scrape runs on the
 * metrics server's thread (docs/threading.md).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent.h"
#include "metrics.h"

typedef struct RpcServer RpcServer;

/* A migration of this agent ended: @outgoing (source) or incoming
 * (destination), @success, and, when known (NaN otherwise), its duration
 * and the guest's downtime in seconds and the RAM bytes sent.  Any thread,
 * no lock needed, any lock may be held (atomics only). */
void agent_metrics_migration_ended(bool outgoing, bool success, double duration_s, double downtime_s,
                                   uint64_t bytes);

/* Write the agent's whole scrape into @w (@opaque: the AgentMetricsCtx).
 * Takes the registry's read lock and each VM's lock briefly, one at a time. */
typedef struct AgentMetricsCtx {
        Agent *agent;          /* immutable */
        RpcServer *srv;        /* immutable; NULL: no lane figures */
} AgentMetricsCtx;
void agent_metrics_scrape(MetricsWriter *w, void *opaque);

/* Start the /metrics server on a->cfg.metrics_listen for @ctx (which must
 * outlive it).  0 with *ret NULL when metrics_listen is "" (off); 0 and
 * the server, or -errno (the address cannot be bound). */
int agent_metrics_start(AgentMetricsCtx *ctx, MetricsServer **ret);
