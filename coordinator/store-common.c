/* What every store backend shares (store-priv.h): the validation of the
 * calls' input, so SQLite and etcd refuse the same records with the same
 * details, and the commit-latency histogram both feed
 * (store_commit_histogram(), drover_coordinator_store_commit_seconds).
 *
 * The checks are the store's contract with its callers (store.h): strings
 * fit their fixed fields with their NUL, required ones are not empty, enums
 * are within their coord-enums.h range, times fit SQLite's signed INTEGER
 * (they are sorted on), a job's sub-tasks are its own with rising seq.
 */
#include "store-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "err.h"
#include "metrics.h"
#include "migparams.h"

int store_check_str(const char *what, const char *str, size_t size, bool required) {
        if (!str)
                return err_set(-EINVAL, "%s is missing", what);
        size_t n = strnlen(str, size);
        if (n == size)
                return err_set(-EINVAL, "%s is too long (at most %zu bytes)", what, size - 1);
        if (required && n == 0)
                return err_set(-EINVAL, "%s is empty", what);
        return 0;
}

int store_check_range(const char *what, long long v, long long lo, long long hi) {
        if (v < lo || v > hi)
                return err_set(-EINVAL, "%s %lld is out of range %lld..%lld", what, v, lo, hi);
        return 0;
}

int store_check_time(const char *what, uint64_t t) {
        if (t > (uint64_t) INT64_MAX)
                return err_set(-EINVAL, "%s %" PRIu64 " is out of range", what, t);
        return 0;
}

int store_check_host(const StoreHost *h) {
        int r;
        if (!h)
                return err_set(-EINVAL, "host record is missing");
        if ((r = STORE_CHECK_FIELD("host name", h->name, true)) < 0 ||
            (r = STORE_CHECK_FIELD("host address", h->address, true)) < 0 ||
            (r = STORE_CHECK_FIELD("host migration_address", h->migration_address, false)) < 0 ||
            (r = STORE_CHECK_FIELD("host cpu_model", h->cpu_model, false)) < 0 ||
            (r = store_check_range("host state", h->state, COORD_HOST_STATE_ENABLED, COORD_HOST_STATE_MAX - 1)) < 0)
                return r;
        return 0;
}

int store_check_job(const StoreJob *j) {
        int r;
        if (!j)
                return err_set(-EINVAL, "job record is missing");
        if ((r = STORE_CHECK_FIELD("job id", j->id, true)) < 0 ||
            (r = store_check_range("job kind", j->kind, COORD_JOB_KIND_MIGRATE, COORD_JOB_KIND_MAX - 1)) < 0 ||
            (r = store_check_range("job phase", j->phase, COORD_JOB_PHASE_PLANNING, COORD_JOB_PHASE_MAX - 1)) < 0 ||
            (r = STORE_CHECK_FIELD("job host", j->host, j->kind == COORD_JOB_KIND_EVACUATE)) < 0 ||
            (r = store_check_range("job failure_policy", j->failure_policy, COORD_FAILURE_POLICY_CONTINUE,
                                   COORD_FAILURE_POLICY_MAX - 1)) < 0 ||
            (r = store_check_time("job created_unix_ms", j->created_unix_ms)) < 0 ||
            (r = STORE_CHECK_FIELD("job params_json", j->params_json, false)) < 0 ||
            (r = STORE_CHECK_FIELD("job error", j->error, false)) < 0)
                return r;
        return 0;
}

int store_check_job_update(const StoreJob *j) {
        int r;
        if (!j)
                return err_set(-EINVAL, "job record is missing");
        if ((r = STORE_CHECK_FIELD("job id", j->id, true)) < 0 ||
            (r = store_check_range("job phase", j->phase, COORD_JOB_PHASE_PLANNING, COORD_JOB_PHASE_MAX - 1)) < 0 ||
            (r = STORE_CHECK_FIELD("job error", j->error, false)) < 0)
                return r;
        return 0;
}

int store_check_subtask(const StoreSubtask *t) {
        int r;
        if (!t)
                return err_set(-EINVAL, "sub-task record is missing");
        if ((r = STORE_CHECK_FIELD("sub-task job_id", t->job_id, true)) < 0 ||
            (r = store_check_range("sub-task seq", t->seq, 0, STORE_SUBTASKS_MAX - 1)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task guest", t->guest, true)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task uuid", t->uuid, false)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task source", t->source, false)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task destination", t->destination, false)) < 0 ||
            (r = store_check_range("sub-task phase", t->phase, COORD_SUBTASK_PHASE_QUEUED,
                                   COORD_SUBTASK_PHASE_MAX - 1)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task op_id", t->op_id, false)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task error", t->error, false)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task reason", t->reason, false)) < 0 ||
            (r = STORE_CHECK_FIELD("sub-task policy_steps", t->policy_steps, false)) < 0 ||
            (r = store_check_range("sub-task compression", t->compression, MIG_COMPRESSION_NONE,
                                   _MIG_COMPRESSION_MAX - 1)) < 0)
                return r;
        if (!isfinite(t->estimated_s) || t->estimated_s < 0)
                return err_set(-EINVAL, "sub-task estimated_s %g is not a finite, non-negative number",
                               t->estimated_s);
        return 0;
}

int store_check_job_create(const StoreJob *j, const StoreSubtask *subs, size_t n_subs) {
        int r = store_check_job(j);
        if (r < 0)
                return r;
        if (n_subs > STORE_SUBTASKS_MAX)
                return err_set(-EINVAL, "job '%s' has %zu sub-tasks (at most %d)", j->id, n_subs, STORE_SUBTASKS_MAX);
        if (n_subs && !subs)
                return err_set(-EINVAL, "job '%s': %zu sub-tasks announced, none given", j->id, n_subs);
        for (size_t i = 0; i < n_subs; i++) {
                if ((r = store_check_subtask(&subs[i])) < 0)
                        return err_prefix(r, "job '%s' sub-task %zu", j->id, i);
                if (strcmp(subs[i].job_id, j->id) != 0)
                        return err_set(-EINVAL, "job '%s' sub-task %zu belongs to job '%s'", j->id, i,
                                       subs[i].job_id);
                if (i > 0 && subs[i].seq <= subs[i - 1].seq)
                        return err_set(-EINVAL, "job '%s' sub-task %zu: seq %d does not follow seq %d", j->id, i,
                                       subs[i].seq, subs[i - 1].seq);
        }
        return 0;
}

int store_check_event(const char *job_id, uint64_t time_unix_ms, const char *text) {
        int r;
        if ((r = store_check_str("job id", job_id, STORE_ID_MAX, true)) < 0 ||
            (r = store_check_str("event text", text, STORE_TEXT_MAX, false)) < 0 ||
            (r = store_check_time("event time_unix_ms", time_unix_ms)) < 0)
                return r;
        return 0;
}

int store_check_ret(const void *ret, const void *ret_n) {
        if (!ret || !ret_n)
                return err_set(-EINVAL, "no place for the result");
        return 0;
}

/* Write commits' latency (metrics): observed lock-free, read by scrapes. */
static MetricsHistogram commit_hist = METRICS_HISTOGRAM_INIT(metrics_seconds_bounds);

const MetricsHistogram *store_commit_histogram(void) {
        return &commit_hist;
}

void store_commit_observe(uint64_t ns) {
        metrics_histogram_observe(&commit_hist, (double) ns / 1e9);
}
