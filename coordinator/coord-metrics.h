/* The coordinator's Prometheus metrics (docs/operations.md, "Metrics").
 *
 * Counters of ended sub-tasks (migrations) and jobs are process-wide
 * atomics bumped where they end (coord-jobs.c); the store's commit latency
 * is a histogram the store keeps (store_commit_histogram()); the rest
 * (jobs by phase and kind, the scheduler's queue, hosts by health and
 * state) is counted at scrape time under one short hold of coord->lock.
 */
#pragma once

#include "coord.h"
#include "metrics.h"

/* A sub-task ended with final @phase (CoordSubtaskPhase).  Any thread, any
 * lock held (atomics only). */
void coord_metrics_sub_ended(int phase);
/* A job of @kind ended with final @phase.  Any thread, any lock held. */
void coord_metrics_job_ended(int kind, int phase);

/* The leader known to this coordinator changed (to it, or to another).
 * Any thread, any lock held. */
void coord_metrics_leader_changed(void);
/* The store's fence refused a write (-ESTALE: this coordinator is not the
 * leader).  Any thread, any lock held (an atomic). */
void coord_metrics_fenced_write(void);

/* Write the coordinator's scrape into @w (@opaque: the Coordinator).
 * Takes coord->lock once, to count; writes with no lock held. */
void coord_metrics_scrape(MetricsWriter *w, void *opaque);

/* Start the /metrics server on cfg.metrics_listen of @c.  0 with *ret NULL
 * when it is "" (off); 0 and the server; -errno. */
int coord_metrics_start(Coordinator *c, MetricsServer **ret);
