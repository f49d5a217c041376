/* Jobs (see coord-priv.h): the job and sub-task records, their
 * persistence, and the API on them: submit, get, list, cancel, watch.
 *
 * A job is planned (coord-plan.c), checked (a second evacuation of a host,
 * or a guest already in an unfinished job, is refused) and claimed (added
 * to coord->jobs as PLANNING, its evacuated host set draining unless in
 * maintenance) in one critical section, then persisted with its sub-tasks
 * in plan order (largest guest first) before anything moves (a failed
 * write undoes the claim), then set RUNNING, when the scheduler thread
 * takes it.  An ended job leaves coord->jobs for a ring of the last
 * COORD_ENDED_KEEP ended jobs; the store keeps them within the retention
 * (coord_jobs_prune).  Every change of a
 * record under coord->lock bumps the job's generation and wakes the
 * watchers (coord->changed); the record is then written to the store
 * without the lock, from a copy.  History lines go to the store and the
 * log.  A job of an earlier run that has ended is read from the store.  On
 * start (and when this coordinator becomes the leader, coord-ha.c), every
 * unfinished job is reloaded; its migrating sub-tasks are marked for
 * reconciliation, which the scheduler does with the agents.  Generations
 * come from one clock of the coordinator (coord->gen_clock), so a job
 * record replaced by a reload never repeats a generation a watcher saw.
 * Nothing here calls an agent.
 */
#include "coord-priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "coord-metrics.h"
#include "err.h"
#include "log.h"
#include "vmtypes.h"

CJob *coord_job_find_locked(Coordinator *c, const char *id) {
        lock_assert_held(&c->lock);
        for (size_t i = 0; i < c->n_jobs; i++)
                if (strcmp(c->jobs[i]->j.id, id) == 0)
                        return c->jobs[i];
        for (size_t i = 0; i < COORD_ENDED_KEEP; i++)
                if (c->ended[i] && strcmp(c->ended[i]->j.id, id) == 0)
                        return c->ended[i];
        return NULL;
}

CJob *coord_job_of_guest_locked(Coordinator *c, const char *guest, const char *uuid, CSub **ret_s) {
        lock_assert_held(&c->lock);
        for (size_t i = 0; i < c->n_jobs; i++)
                for (size_t k = 0; k < c->jobs[i]->n; k++) {
                        CSub *s = &c->jobs[i]->subs[k];
                        if (strcmp(s->t.guest, guest) == 0 || (uuid[0] && strcasecmp(s->t.uuid, uuid) == 0)) {
                                *ret_s = s;
                                return c->jobs[i];
                        }
                }
        return NULL;
}


int coord_jobs_prune(Coordinator *c) {
        uint64_t now = coord_now_ms(), age = (uint64_t) c->cfg.job_retention_days * 86400000ULL;
        uint64_t before = c->cfg.job_retention_days && now > age ? now - age : 0;
        size_t keep = c->cfg.job_retention_count ? c->cfg.job_retention_count : SIZE_MAX;
        int r = c->store->ops->job_prune(c->store, before, keep);
        if (r < 0)
                log_warning("ended jobs not pruned from the store: %s", err_msg());
        else if (r > 0)
                log_info("%d ended jobs deleted from the store (retention: %u days, %u jobs)", r,
                         c->cfg.job_retention_days, c->cfg.job_retention_count);
        return r;
}

CSub *coord_sub_find_locked(Coordinator *c, const char *job, int seq, CJob **ret_j) {
        lock_assert_held(&c->lock);
        CJob *j = coord_job_find_locked(c, job);
        if (!j || seq < 0 || (size_t) seq >= j->n)
                return NULL;
        *ret_j = j;
        return &j->subs[seq];
}

void coord_job_bump_locked(Coordinator *c, CJob *j) {
        lock_assert_held(&c->lock);
        j->gen = ++c->gen_clock;
        cond_broadcast(&c->changed);
}

void coord_sub_release_locked(Coordinator *c, CSub *s) {
        lock_assert_held(&c->lock);
        CHost *src = coord_host_find_locked(c, s->t.source), *dst = coord_host_find_locked(c, s->t.destination);
        if (src && src->out_running)
                src->out_running--;
        if (dst && dst->in_running)
                dst->in_running--;
}

static int job_add_locked(Coordinator *c, CJob *j) {
        lock_assert_held(&c->lock);
        if (c->n_jobs == c->cap_jobs) {
                size_t cap = c->cap_jobs ? c->cap_jobs * 2 : 16;
                CJob **n = realloc(c->jobs, cap * sizeof(*n));
                if (!n)
                        return err_set(-ENOMEM, "out of memory");
                c->jobs = n;
                c->cap_jobs = cap;
        }
        c->jobs[c->n_jobs++] = j;
        return 0;
}

void coord_job_free(CJob *j) {
        if (!j)
                return;
        free(j->subs);
        free(j);
}

void coord_job_event(Coordinator *c, const char *job_id, const char *fmt, ...) {
        char text[STORE_TEXT_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        if (c->store->ops->event_add(c->store, job_id, coord_now_ms(), text) < 0)
                log_warning("job %s: event not stored: %s", job_id, err_msg());
        log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.job = job_id), "job %s: %s", job_id, text);
}

void coord_sub_end(Coordinator *c, const char *job, int seq, CoordSubtaskPhase phase, const LinkMigResult *res,
                   const char *error) {
        StoreSubtask copy;
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, job, seq, &j);
        if (!s || coord_subtask_phase_is_final(s->t.phase)) {
                lock_release(&c->lock);
                return;
        }
        if (s->t.phase == COORD_SUBTASK_PHASE_MIGRATING)
                coord_sub_release_locked(c, s);
        s->t.phase = phase;
        s->t.finished_unix_ms = coord_now_ms();
        if (res) {
                s->t.downtime_ms = res->downtime_ms;
                s->t.measured_downtime_ms = res->measured_downtime_ms;
                s->t.transferred_bytes = res->transferred;
                snprintf(s->t.policy_steps, sizeof(s->t.policy_steps), "%s", res->steps);
                s->t.guest_memory_bytes = res->guest_memory_bytes;
                s->t.multifd_bytes = res->multifd_bytes;
                s->t.disk_bytes = res->disk_bytes;
                if (res->multifd_channels) { /* 0: not known; the stream chosen at the start stays */
                        s->t.multifd_channels = res->multifd_channels;
                        s->t.compression = res->compression;
                }
        }
        snprintf(s->t.error, sizeof(s->t.error), "%s", error ? error : "");
        s->reconcile = false;
        copy = s->t;
        coord_job_bump_locked(c, j);
        coord_metrics_sub_ended(phase);
        lock_release(&c->lock);
        if (c->store->ops->subtask_update(c->store, &copy) < 0)
                coord_sub_end_unsaved(c, job, seq);
        const char *what = phase == COORD_SUBTASK_PHASE_SUCCEEDED ? "migrated"
                           : phase == COORD_SUBTASK_PHASE_FAILED  ? "FAILED"
                                                                  : "cancelled";
        coord_job_event(c, job, "%s %s: %s -> %s%s%s", copy.guest, what, copy.source, copy.destination,
                        error && error[0] ? ": " : "", error ? error : "");
}

void coord_sub_end_unsaved(Coordinator *c, const char *job, int seq) {
        CJob *j;
        log_error("job %s: the end of sub-task %d not stored: %s (the job ends when it is)", job, seq, err_msg());
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, job, seq, &j);
        if (s)
                s->end_unsaved = true;
        lock_release(&c->lock);
}

int coord_sub_persist(Coordinator *c, const char *job, int seq) {
        StoreSubtask copy;
        CJob *j;
        int r = 0;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, job, seq, &j);
        if (s)
                copy = s->t;
        lock_release(&c->lock);
        if (s && (r = c->store->ops->subtask_update(c->store, &copy)) < 0)
                log_error("job %s: sub-task %d not stored: %s", job, seq, err_msg());
        if (s && r == 0) {
                lock_acquire(&c->lock);
                /* still the end just written (a later change is written by its own writer) */
                if ((s = coord_sub_find_locked(c, job, seq, &j)) && s->t.phase == copy.phase &&
                    s->t.finished_unix_ms == copy.finished_unix_ms)
                        s->end_unsaved = false;
                lock_release(&c->lock);
        }
        return r;
}

/* A second evacuation of one host, or a guest in two unfinished jobs, is
 * refused, naming the other job.  coord->lock held. */
static int check_busy_locked(Coordinator *c, const CoordJobRequest *req, const CoordWant *w, size_t nw) {
        lock_assert_held(&c->lock);
        CJob *o;
        CSub *s;
        if (req->kind == COORD_JOB_KIND_EVACUATE && (o = coord_evacuation_of_locked(c, req->host)))
                return err_set(-EBUSY, "host %s is already being evacuated by job %s", req->host, o->j.id);
        for (size_t i = 0; i < nw; i++)
                if ((o = coord_job_of_guest_locked(c, w[i].name, w[i].uuid, &s)))
                        return err_set(-EBUSY, "guest %s is already in job %s (%s, its sub-task %s)", w[i].name,
                                       o->j.id, coord_job_kind_to_string(o->j.kind),
                                       coord_subtask_phase_to_string(s->t.phase));
        return 0;
}

/* The job of a plan, added to the job table in phase PLANNING (the
 * scheduler leaves it alone; later submissions see it), and its sub-tasks'
 * records to store (*ret_subs, malloc'ed).  An evacuated host that is
 * enabled becomes draining now, in the same critical section as the plan
 * (*ret_drained); one in maintenance stays so.  coord->lock held. */
static int job_build_locked(Coordinator *c, const CoordJobRequest *req, const CoordWant *w, size_t nw,
                            const CoordPlan *plan, CJob **ret, StoreSubtask **ret_subs, bool *ret_drained) {
        lock_assert_held(&c->lock);
        CJob *j = calloc(1, sizeof(*j));
        StoreSubtask *subs = calloc(nw + 1, sizeof(*subs));
        if (!j || !subs || !(j->subs = calloc(nw + 1, sizeof(*j->subs)))) {
                free(j);
                free(subs);
                return err_set(-ENOMEM, "out of memory");
        }
        j->n = nw;
        coord_params_merge(req->have_params ? &req->params : NULL, &c->cfg.defaults, &j->params);
        snprintf(j->j.id, sizeof(j->j.id), "job-%llu-%llu", (unsigned long long) coord_now_ms(),
                 (unsigned long long) atomic_fetch_add(&c->counter, 1) + 1);
        j->j.kind = req->kind;
        j->j.phase = COORD_JOB_PHASE_PLANNING;
        snprintf(j->j.host, sizeof(j->j.host), "%s", req->host ? req->host : "");
        j->j.failure_policy = req->failure_policy;
        j->j.maintenance = req->maintenance;
        mig_params_to_json(&j->params, j->j.params_json, sizeof(j->j.params_json));
        j->j.created_unix_ms = coord_now_ms();
        /* sub-tasks in plan order: largest first, as placement chose */
        for (size_t i = 0; i < nw; i++) {
                StoreSubtask *t = &j->subs[i].t;
                snprintf(t->job_id, sizeof(t->job_id), "%s", j->j.id);
                t->seq = (int) i;
                snprintf(t->guest, sizeof(t->guest), "%s", w[i].name);
                snprintf(t->uuid, sizeof(t->uuid), "%s", w[i].uuid);
                snprintf(t->source, sizeof(t->source), "%s", w[i].source);
                for (size_t k = 0; k < plan->n_moves; k++)
                        if (strcmp(plan->moves[k].guest, w[i].name) == 0) {
                                snprintf(t->destination, sizeof(t->destination), "%s", plan->moves[k].destination);
                                snprintf(t->reason, sizeof(t->reason), "%s", plan->moves[k].reason);
                                t->estimated_s = plan->moves[k].estimated_s;
                        }
                t->phase = COORD_SUBTASK_PHASE_QUEUED;
                j->subs[i].dirty = w[i].dirty;
                subs[i] = *t;
        }
        int r = job_add_locked(c, j);
        if (r < 0) {
                coord_job_free(j);
                free(subs);
                return r;
        }
        CHost *h = req->kind == COORD_JOB_KIND_EVACUATE ? coord_host_find_locked(c, req->host) : NULL;
        *ret_drained = h && h->h.state == COORD_HOST_STATE_ENABLED;
        if (*ret_drained)
                h->h.state = COORD_HOST_STATE_DRAINING;
        *ret = j;
        *ret_subs = subs;
        return 0;
}

/* Take job @j out of the job table.  coord->lock held. */
static bool job_unlink_locked(Coordinator *c, CJob *j) {
        lock_assert_held(&c->lock);
        for (size_t i = 0; i < c->n_jobs; i++)
                if (c->jobs[i] == j) {
                        memmove(&c->jobs[i], &c->jobs[i + 1], (c->n_jobs - i - 1) * sizeof(*c->jobs));
                        c->n_jobs--;
                        return true;
                }
        return false;
}

/* The job @id while it is PLANNING, i.e. still its submitter's: nothing
 * else frees or replaces it (coord_jobs_clear_locked, a reload and a
 * standby's view leave it alone).  NULL otherwise.  coord->lock held. */
static CJob *planned_find_locked(Coordinator *c, const char *id) {
        lock_assert_held(&c->lock);
        CJob *j = coord_job_find_locked(c, id);
        return j && j->j.phase == COORD_JOB_PHASE_PLANNING ? j : NULL;
}

/* -ENOSPC with a short detail naming the first blocked guests of @plan
 * (as many as COORD_BLOCKED_NAMED, and as fit in one error message) and
 * how many more there are; the RPC layer sends the whole list as the
 * status details (coord-rpc.c). */
static int blocked_error(const CoordPlan *plan, size_t nw) {
        char buf[ERR_MSG_MAX - 64], item[sizeof(buf)];
        const size_t tail = 48; /* room kept for " and N more (see the status details)" */
        size_t named = 0;
        int k = snprintf(buf, sizeof(buf), "%zu of %zu guests cannot be placed, nothing was changed:", plan->n_blocked,
                         nw);

        for (; named < plan->n_blocked && named < COORD_BLOCKED_NAMED; named++) {
                const CoordPlanEntry *e = &plan->blocked[named];
                int n = snprintf(item, sizeof(item), "%s %s (%s)", named ? "," : "", e->guest, e->reason);
                if (k < 0 || n < 0 || (size_t) (k + n) + tail >= sizeof(buf))
                        break;
                memcpy(buf + k, item, (size_t) n + 1);
                k += n;
        }
        if (named < plan->n_blocked)
                return err_set(-ENOSPC, "%s %s%zu %s (see the status details)", buf, named ? "and " : "",
                               plan->n_blocked - named, named ? "more" : "guests");
        return err_set(-ENOSPC, "%s", buf);
}

int coord_job_submit(Coordinator *c, const CoordJobRequest *req, CoordPlan *plan, char ret_id[STORE_ID_MAX]) {
        CoordWant *w = NULL;
        StoreSubtask *subs = NULL;
        CJob *j = NULL;
        bool drained = false;
        size_t nw = 0;
        int r;

        memset(plan, 0, sizeof(*plan));
        if (req->kind != COORD_JOB_KIND_MIGRATE && req->kind != COORD_JOB_KIND_EVACUATE)
                return err_set(-EINVAL, "unknown job kind %d", req->kind);
        if (req->kind == COORD_JOB_KIND_MIGRATE && req->n_guests == 0)
                return err_set(-EINVAL, "'guests' must name at least one guest");
        if (req->kind == COORD_JOB_KIND_EVACUATE && (!req->host || !req->host[0]))
                return err_set(-EINVAL, "'host' is required");
        if (req->failure_policy != COORD_FAILURE_POLICY_CONTINUE && req->failure_policy != COORD_FAILURE_POLICY_STOP)
                return err_set(-EINVAL, "unknown failure policy %d", req->failure_policy);
        MigParams merged; /* what job_build_locked() stores: refused here, before anything is planned */
        coord_params_merge(req->have_params ? &req->params : NULL, &c->cfg.defaults, &merged);
        if ((r = mig_params_validate(&merged)) < 0)
                return err_prefix(r, "the request's migration parameters over the configuration's defaults");

        coord_inventory_refresh(c);
        /* plan, check and claim in one critical section: a concurrent
         * submission sees this job (and its host draining) or runs before */
        lock_acquire(&c->lock);
        r = coord_plan_locked(c, req, &w, &nw, plan);
        if (r >= 0)
                r = check_busy_locked(c, req, w, nw);
        if (r >= 0 && !req->dry_run && plan->n_blocked == 0)
                r = job_build_locked(c, req, w, nw, plan, &j, &subs, &drained);
        lock_release(&c->lock);
        if (r < 0 || req->dry_run)
                goto out;
        if (plan->n_blocked > 0) {
                r = blocked_error(plan, nw);
                goto out;
        }
        /* persisted before anything moves (the job's fields are not written
         * while it is PLANNING) */
        StoreJob rec = j->j;
        rec.phase = COORD_JOB_PHASE_RUNNING;
        j = NULL; /* not kept across the store call: found again by id (coord-priv.h) */
        r = c->store->ops->job_create(c->store, &rec, subs, nw);
        if (r < 0) {
                lock_acquire(&c->lock);
                if ((j = planned_find_locked(c, rec.id)))
                        (void) job_unlink_locked(c, j);
                CHost *h = drained ? coord_host_find_locked(c, req->host) : NULL;
                if (h && h->h.state == COORD_HOST_STATE_DRAINING)
                        h->h.state = COORD_HOST_STATE_ENABLED;
                lock_release(&c->lock);
                coord_job_free(j);
                goto out;
        }
        if (req->caller)
                coord_job_event(c, rec.id, "submitted by %s", req->caller);
        coord_job_event(c, rec.id, "%s planned: %zu guests, estimated makespan %.1f s",
                        req->kind == COORD_JOB_KIND_EVACUATE ? "evacuation" : "migration", nw, plan->makespan_s);
        if (req->kind == COORD_JOB_KIND_EVACUATE) {
                StoreHost host = { 0 };
                lock_acquire(&c->lock);
                CHost *h = coord_host_find_locked(c, req->host);
                if (h)
                        host = h->h;
                lock_release(&c->lock);
                if (drained && c->store->ops->host_put(c->store, &host) < 0)
                        log_warning("host %s: state not stored: %s", host.name, err_msg());
                coord_job_event(c, rec.id, "host %s %s", req->host,
                                drained ? "set to draining" : host.state == COORD_HOST_STATE_MAINTENANCE
                                                                  ? "stays in maintenance"
                                                                  : "was already draining");
        }
        lock_acquire(&c->lock);
        if ((j = planned_find_locked(c, rec.id))) {
                j->j.phase = COORD_JOB_PHASE_RUNNING;
                coord_job_bump_locked(c, j);
        }
        lock_release(&c->lock);
        snprintf(ret_id, STORE_ID_MAX, "%s", rec.id);
out:
        free(subs);
        free(w);
        return r;
}

void coord_job_retire_locked(Coordinator *c, CJob *j) {
        lock_assert_held(&c->lock);
        if (!job_unlink_locked(c, j))
                return;
        coord_metrics_job_ended(j->j.kind, j->j.phase);
        coord_job_shelve_locked(c, j);
}

void coord_job_shelve_locked(Coordinator *c, CJob *j) {
        lock_assert_held(&c->lock);
        (void) job_unlink_locked(c, j);
        for (size_t i = 0; i < COORD_ENDED_KEEP; i++)
                if (c->ended[i] == j)
                        return;
        coord_job_free(c->ended[c->ended_next]);
        c->ended[c->ended_next] = j;
        c->ended_next = (c->ended_next + 1) % COORD_ENDED_KEEP;
}

void coord_job_view_clear(CoordJobView *v) {
        free(v->subs);
        free(v->live);
        free(v->events);
        memset(v, 0, sizeof(*v));
}

int coord_job_get(Coordinator *c, const char *id, bool with_history, CoordJobView *ret) {
        memset(ret, 0, sizeof(*ret));
        if (id_check("id", id, STORE_ID_MAX - 1) < 0) /* the API's job ids: never cut, never a forged log line */
                return -EINVAL;
        lock_acquire(&c->lock);
        CJob *j = coord_job_find_locked(c, id);
        if (j) {
                ret->job = j->j;
                ret->generation = j->gen;
                ret->n_subs = j->n;
                ret->subs = calloc(j->n + 1, sizeof(*ret->subs));
                ret->live = calloc(j->n + 1, sizeof(*ret->live));
                if (ret->subs && ret->live)
                        for (size_t i = 0; i < j->n; i++) {
                                ret->subs[i] = j->subs[i].t;
                                ret->live[i] = j->subs[i].live;
                        }
        }
        lock_release(&c->lock);
        int r = 0;
        if (!j) {
                /* a finished job of an earlier run: from the store */
                r = c->store->ops->job_get(c->store, id, &ret->job);
                if (r < 0)
                        return r == -ENOENT ? err_set(-ENOENT, "no job '%s'", id) : r;
                r = c->store->ops->subtask_list(c->store, id, &ret->subs, &ret->n_subs);
                if (r < 0)
                        return r;
                ret->live = calloc(ret->n_subs + 1, sizeof(*ret->live));
        } else if (!ret->subs || !ret->live) {
                coord_job_view_clear(ret);
                return err_set(-ENOMEM, "out of memory");
        }
        if (with_history && (r = c->store->ops->event_list(c->store, id, &ret->events, &ret->n_events)) < 0) {
                coord_job_view_clear(ret);
                return r;
        }
        return 0;
}

int coord_job_list(Coordinator *c, bool unfinished_only, size_t limit, StoreJob **ret, size_t *ret_n) {
        return c->store->ops->job_list(c->store, unfinished_only, limit ? limit : 100, ret, ret_n);
}

int coord_job_cancel(Coordinator *c, const char *id, const char *caller) {
        if (id_check("id", id, STORE_ID_MAX - 1) < 0)
                return -EINVAL;
        lock_acquire(&c->lock);
        CJob *j = coord_job_find_locked(c, id);
        int r = 0;
        if (!j)
                r = err_set(-ENOENT, "no running job '%s'", id);
        else if (coord_job_phase_is_final(j->j.phase))
                r = err_set(-EBUSY, "job %s already ended", id);
        else {
                j->cancel = true;
                coord_job_bump_locked(c, j);
        }
        lock_release(&c->lock);
        if (r >= 0)
                coord_job_event(c, id, "cancel requested%s%s: queued guests are dropped, running migrations aborted "
                                       "(their sources resume)",
                                caller ? " by " : "", caller ? caller : "");
        return r;
}

/* Whether unfinished job @j concerns host @host.  coord->lock held. */
static bool job_concerns_host_locked(Coordinator *c, const CJob *j, const char *host) {
        lock_assert_held(&c->lock);
        if (strcmp(j->j.host, host) == 0)
                return true;
        for (size_t i = 0; i < j->n; i++)
                if (strcmp(j->subs[i].t.source, host) == 0 || strcmp(j->subs[i].t.destination, host) == 0)
                        return true;
        return false;
}

void coord_jobs_note_host(Coordinator *c, const char *host, const char *text) {
        char (*ids)[STORE_ID_MAX] = NULL;
        size_t n = 0;

        log_info("host %s: %s", host, text);
        lock_acquire(&c->lock);
        if (c->n_jobs > 0 && (ids = calloc(c->n_jobs, sizeof(*ids))))
                for (size_t i = 0; i < c->n_jobs; i++)
                        if (job_concerns_host_locked(c, c->jobs[i], host))
                                snprintf(ids[n++], STORE_ID_MAX, "%s", c->jobs[i]->j.id);
        lock_release(&c->lock);
        for (size_t i = 0; i < n; i++)
                coord_job_event(c, ids[i], "host %s %s", host, text);
        free(ids);
}

uint64_t coord_job_generation(Coordinator *c, const char *id) {
        lock_acquire(&c->lock);
        CJob *j = coord_job_find_locked(c, id);
        uint64_t g = j ? j->gen : 0;
        lock_release(&c->lock);
        return g;
}

void coord_job_wait(Coordinator *c, const char *id, uint64_t gen, int64_t timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        lock_acquire(&c->lock);
        for (;;) {
                CJob *j = coord_job_find_locked(c, id);
                if (!j || j->gen != gen)
                        break;
                if (cond_wait(&c->changed, &c->lock, d) < 0)
                        break;
        }
        lock_release(&c->lock);
}

CJob *coord_job_from_store(Coordinator *c, const StoreJob *rec, const StoreSubtask *subs, size_t n, bool resume) {
        CJob *j = calloc(1, sizeof(*j));
        if (!j || !(j->subs = calloc(n + 1, sizeof(*j->subs)))) {
                free(j);
                return NULL;
        }
        j->j = *rec;
        if (resume && (j->j.phase == COORD_JOB_PHASE_PLANNING || j->j.phase == COORD_JOB_PHASE_VERIFYING))
                j->j.phase = COORD_JOB_PHASE_RUNNING;
        (void) mig_params_from_json(j->j.params_json, strlen(j->j.params_json), &j->params);
        j->n = n;
        for (size_t k = 0; k < n; k++) {
                j->subs[k].t = subs[k];
                j->subs[k].reconcile = resume && subs[k].phase == COORD_SUBTASK_PHASE_MIGRATING;
        }
        lock_acquire(&c->lock);
        j->gen = ++c->gen_clock;
        lock_release(&c->lock);
        return j;
}

int coord_job_add_locked(Coordinator *c, CJob *j) {
        return job_add_locked(c, j);
}

void coord_jobs_clear_locked(Coordinator *c) {
        lock_assert_held(&c->lock);
        size_t kept = 0;
        for (size_t i = 0; i < c->n_jobs; i++)
                if (c->jobs[i]->j.phase == COORD_JOB_PHASE_PLANNING)
                        c->jobs[kept++] = c->jobs[i]; /* its submitter's until stored */
                else
                        coord_job_free(c->jobs[i]);
        c->n_jobs = kept;
        for (size_t i = 0; i < c->n_hosts; i++)
                c->hosts[i]->out_running = c->hosts[i]->in_running = 0;
        cond_broadcast(&c->changed);
}

int coord_jobs_reload(Coordinator *c, const char *why) {
        StoreJob *jobs = NULL;
        size_t n = 0;
        int r = c->store->ops->job_list(c->store, true, 10000, &jobs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                StoreSubtask *subs = NULL;
                size_t ns = 0;
                CJob *j = NULL;
                if ((r = c->store->ops->subtask_list(c->store, jobs[i].id, &subs, &ns)) < 0)
                        break;
                j = coord_job_from_store(c, &jobs[i], subs, ns, true);
                free(subs);
                if (!j) {
                        r = err_set(-ENOMEM, "out of memory");
                        break;
                }
                lock_acquire(&c->lock);
                if (coord_job_find_locked(c, j->j.id)) {
                        /* a submission under way (PLANNING, kept by the
                         * clear) whose record just reached the store: its
                         * submitter's record stays */
                        lock_release(&c->lock);
                        coord_job_free(j);
                        continue;
                }
                for (size_t k = 0; k < j->n; k++)
                        if (j->subs[k].t.phase == COORD_SUBTASK_PHASE_MIGRATING) {
                                CHost *s = coord_host_find_locked(c, j->subs[k].t.source);
                                CHost *d = coord_host_find_locked(c, j->subs[k].t.destination);
                                if (s)
                                        s->out_running++;
                                if (d)
                                        d->in_running++;
                        }
                r = job_add_locked(c, j);
                lock_release(&c->lock);
                if (r < 0) {
                        coord_job_free(j);
                        break;
                }
                coord_job_event(c, j->j.id, "%s: job resumed (%zu sub-tasks)", why, j->n);
        }
        free(jobs);
        return r < 0 ? r : (int) n;
}
