/* The coordinator's Prometheus metrics (see coord-metrics.h).
 *
 * The scrape copies counts into local arrays under coord->lock (a walk of
 * the host table and the unfinished jobs, no I/O), releases it, then
 * writes.  Counters are process-wide statics: one coordinator per process.
 * The role (drover_coordinator_leader) is read from an atomic; the writes
 * the store's fence refused are counted by coord-ha.c's fence watch.
 */
#include "coord-metrics.h"

#include <stdatomic.h>

#include "coord-enums.h"
#include "coord-priv.h"
#include "store.h"

static atomic_uint_fast64_t subs_ended[COORD_SUBTASK_PHASE_MAX];
static atomic_uint_fast64_t jobs_ended[COORD_JOB_KIND_MAX][COORD_JOB_PHASE_MAX];
static atomic_uint_fast64_t leader_changes;
static atomic_uint_fast64_t fenced_writes;

void coord_metrics_fenced_write(void) {
        atomic_fetch_add_explicit(&fenced_writes, 1, memory_order_relaxed);
}

void coord_metrics_leader_changed(void) {
        atomic_fetch_add_explicit(&leader_changes, 1, memory_order_relaxed);
}

void coord_metrics_sub_ended(int phase) {
        if (phase >= 0 && phase < COORD_SUBTASK_PHASE_MAX)
                atomic_fetch_add_explicit(&subs_ended[phase], 1, memory_order_relaxed);
}

void coord_metrics_job_ended(int kind, int phase) {
        if (kind >= 0 && kind < COORD_JOB_KIND_MAX && phase >= 0 && phase < COORD_JOB_PHASE_MAX)
                atomic_fetch_add_explicit(&jobs_ended[kind][phase], 1, memory_order_relaxed);
}

typedef struct Counts {
        unsigned hosts[COORD_HOST_HEALTH_MAX][COORD_HOST_STATE_MAX];
        unsigned jobs[COORD_JOB_KIND_MAX][COORD_JOB_PHASE_MAX];
        unsigned queued, migrating;
} Counts;

static void count(Coordinator *c, Counts *n) {
        *n = (Counts){ 0 };
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_hosts; i++) {
                const CHost *h = c->hosts[i];
                if (!h->removed && h->health >= 0 && h->health < COORD_HOST_HEALTH_MAX && h->h.state >= 0 &&
                    h->h.state < COORD_HOST_STATE_MAX)
                        n->hosts[h->health][h->h.state]++;
        }
        for (size_t i = 0; i < c->n_jobs; i++) {
                const CJob *j = c->jobs[i];
                if (j->j.kind >= 0 && j->j.kind < COORD_JOB_KIND_MAX && j->j.phase >= 0 &&
                    j->j.phase < COORD_JOB_PHASE_MAX)
                        n->jobs[j->j.kind][j->j.phase]++;
                for (size_t k = 0; k < j->n; k++) {
                        n->queued += j->subs[k].t.phase == COORD_SUBTASK_PHASE_QUEUED;
                        n->migrating += j->subs[k].t.phase == COORD_SUBTASK_PHASE_MIGRATING;
                }
        }
        lock_release(&c->lock);
}

static const char *health_label(int h) {
        return h == COORD_HOST_HEALTH_HEALTHY ? "up" : coord_host_health_to_string(h);
}

static const char *result_label(int phase) {
        return phase == COORD_SUBTASK_PHASE_SUCCEEDED ? "succeeded"
               : phase == COORD_SUBTASK_PHASE_FAILED  ? "failed"
                                                      : "cancelled";
}

void coord_metrics_scrape(MetricsWriter *w, void *opaque) {
        Coordinator *c = opaque;
        Counts n;
        count(c, &n);

        metrics_family(w, "drover_coordinator_hosts", METRICS_GAUGE,
                       "Hosts of the inventory by health (up, unreachable, unknown) and state (enabled, draining, "
                       "maintenance).");
        for (int h = 0; h < COORD_HOST_HEALTH_MAX; h++)
                for (int s = COORD_HOST_STATE_ENABLED; s < COORD_HOST_STATE_MAX; s++)
                        metrics_sample(w, "drover_coordinator_hosts",
                                       (const char *const[]){ "health", health_label(h), "state",
                                                              coord_host_state_to_string(s), NULL },
                                       n.hosts[h][s]);
        metrics_family(w, "drover_coordinator_jobs", METRICS_GAUGE,
                       "Unfinished jobs by kind and phase (planning, running, verifying).");
        for (int k = COORD_JOB_KIND_MIGRATE; k < COORD_JOB_KIND_MAX; k++)
                for (int p = COORD_JOB_PHASE_PLANNING; p < COORD_JOB_PHASE_SUCCEEDED; p++)
                        metrics_sample(w, "drover_coordinator_jobs",
                                       (const char *const[]){ "kind", coord_job_kind_to_string(k), "phase",
                                                              coord_job_phase_to_string(p), NULL },
                                       n.jobs[k][p]);
        metrics_family(w, "drover_coordinator_jobs_ended_total", METRICS_COUNTER,
                       "Jobs that ended since the coordinator started, by kind and final phase.");
        for (int k = COORD_JOB_KIND_MIGRATE; k < COORD_JOB_KIND_MAX; k++)
                for (int p = COORD_JOB_PHASE_SUCCEEDED; p < COORD_JOB_PHASE_MAX; p++)
                        metrics_sample(w, "drover_coordinator_jobs_ended_total",
                                       (const char *const[]){ "kind", coord_job_kind_to_string(k), "phase",
                                                              coord_job_phase_to_string(p), NULL },
                                       (double) atomic_load(&jobs_ended[k][p]));
        metrics_family(w, "drover_coordinator_scheduler_queue_length", METRICS_GAUGE,
                       "Sub-tasks (guest migrations) of unfinished jobs waiting for admission.");
        metrics_sample(w, "drover_coordinator_scheduler_queue_length", NULL, n.queued);
        metrics_family(w, "drover_coordinator_migrations_running", METRICS_GAUGE,
                       "Sub-tasks migrating now.");
        metrics_sample(w, "drover_coordinator_migrations_running", NULL, n.migrating);
        metrics_family(w, "drover_coordinator_migrations_total", METRICS_COUNTER,
                       "Sub-tasks (guest migrations) that ended since the coordinator started, by result.");
        for (int p = COORD_SUBTASK_PHASE_SUCCEEDED; p <= COORD_SUBTASK_PHASE_CANCELLED; p++)
                metrics_sample(w, "drover_coordinator_migrations_total",
                               (const char *const[]){ "result", result_label(p), NULL },
                               (double) atomic_load(&subs_ended[p]));
        metrics_family(w, "drover_coordinator_leader", METRICS_GAUGE,
                       "1 while this coordinator leads and acts, 0 while it stands by (always 1 with SQLite).");
        metrics_sample(w, "drover_coordinator_leader", NULL,
                       c->cfg.store_kind != COORD_STORE_ETCD || atomic_load(&c->acting) ? 1 : 0);
        metrics_family(w, "drover_coordinator_leader_changes_total", METRICS_COUNTER,
                       "Times the leader known to this coordinator changed (it, or another, was elected).");
        metrics_sample(w, "drover_coordinator_leader_changes_total", NULL, (double) atomic_load(&leader_changes));
        metrics_family(w, "drover_store_fenced_writes_total", METRICS_COUNTER,
                       "Writes the store's fence refused (etcd: this coordinator was no longer the leader).");
        metrics_sample(w, "drover_store_fenced_writes_total", NULL, (double) atomic_load(&fenced_writes));
        metrics_family(w, "drover_coordinator_store_commit_seconds", METRICS_HISTOGRAM,
                       "Latency of the job store's write transactions' COMMIT (synchronous: on disk when done).");
        metrics_histogram_write(w, "drover_coordinator_store_commit_seconds", NULL, store_commit_histogram());
}

int coord_metrics_start(Coordinator *c, MetricsServer **ret) {
        *ret = NULL;
        if (!c->cfg.metrics_listen[0])
                return 0;
        return metrics_server_start(c->cfg.metrics_listen, coord_metrics_scrape, c, ret);
}
