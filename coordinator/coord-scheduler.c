/* The scheduler (see coord-priv.h): one thread runs every job.
 *
 * Each tick decides under coord->lock (plan_tick_locked), then acts without
 * it.  Under the lock: queued sub-tasks of a cancelled job, or of a stop-
 * policy job with a failure, are dropped; queued ones are admitted while
 * the limits hold (per-host outgoing and incoming slots, the cluster limit,
 * both hosts healthy, and a fair share of both links that outruns the
 * guest's dirty rate), each admission counting at once against its hosts;
 * then every migration's fair share of its links is computed from the
 * counts after this tick's admissions.  Each decision is an Action, copied
 * out with what the agent call needs.  Without the lock: start (the
 * sub-task with its operation id persisted first), poll (GetMigration; a
 * reloaded sub-task is reconciled by operation id and where the guest
 * runs), abort (a cancelled job's running migrations) and re-tune
 * (MigrateTune when a share moved by more than 10 %).  Then every job whose
 * sub-tasks all ended is verified (each migrated guest runs on its
 * destination) and closed.  A tick that freed a slot plans again at once;
 * otherwise the thread sleeps 250 ms, or 50 ms while a migration is about
 * to end (docs/coordinator.md, "Admission control").
 */
#include "coord-priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

#define MAX_ACTIONS 256 /* per tick; the rest wait for the next one */

typedef enum ActionKind {
        ACT_START,      /* admitted: start the migration on the source agent */
        ACT_POLL,       /* follow a migration; without src: persist a dropped sub-task */
        ACT_ABORT,      /* the job was cancelled: abort, then poll */
        ACT_TUNE,       /* the migration's share moved: re-tune its bandwidth */
        ACT_MAX,
} ActionKind;

/* One decision of a tick, with copies of what the agent call needs (the
 * links are immutable and outlive the scheduler). */
typedef struct Action {
        ActionKind kind;
        char job[STORE_ID_MAX];
        int seq;
        AgentLink *src;
        AgentLink *dst;
        char guest[64], uuid[37], op[64], dest_addr[128], stream_host[128];
        uint64_t bw;
        bool reconcile;
        MigParams params;
} Action;

static unsigned slots(Coordinator *c, const CHost *h, bool out) {
        uint64_t per = c->cfg.stream_bytes_per_s ? c->cfg.stream_bytes_per_s : 400000000;
        uint64_t s = coord_host_link_rate(c, h) / per;
        unsigned lim = out ? (h->h.max_outgoing ? h->h.max_outgoing : c->cfg.max_outgoing)
                           : (h->h.max_incoming ? h->h.max_incoming : c->cfg.max_incoming);
        if (s < 1)
                s = 1;
        return (unsigned) MIN((uint64_t) lim, s);
}

static const char *mig_addr_host(const CHost *h, char *buf, size_t size) {
        if (h->h.migration_address[0]) {
                snprintf(buf, size, "%s", h->h.migration_address);
                return buf;
        }
        const char *a = h->h.address;
        const char *colon = strrchr(a, ':');
        snprintf(buf, size, "%.*s", colon ? (int) (colon - a) : (int) strlen(a), a);
        return buf;
}

static uint64_t need_of(Coordinator *c, const CSub *s, const CHost *src, const CHost *dst) {
        uint64_t floor = MIN(coord_host_link_rate(c, src), coord_host_link_rate(c, dst)) / 8;
        return MAX(s->dirty * 3 / 2, floor);
}

/* A migration about to end: its stream is done, or what remains of this pass
 * takes less than a second at its rate (the live figures of the last poll). */
static bool sub_finishing(const CSub *s) {
        const CoordLive *l = &s->live;
        return strcmp(l->mig_phase, "perform_done") == 0 || strcmp(l->mig_phase, "finish") == 0 ||
               strcmp(l->mig_phase, "confirm") == 0 ||
               (l->mbps > 0 && l->ram_transferred > 0 && (double) l->ram_remaining * 8 < l->mbps * 1e6);
}

/* A new action of this tick for sub-task @s of job @j, with the names and
 * links the agent call needs (@src and @dst may be NULL: no call). */
static Action *action_add(Action *acts, size_t *n, ActionKind kind, const CJob *j, const CSub *s, const CHost *src,
                          const CHost *dst) {
        Action *a = &acts[(*n)++];
        memset(a, 0, sizeof(*a));
        a->kind = kind;
        snprintf(a->job, sizeof(a->job), "%s", j->j.id);
        a->seq = s->t.seq;
        a->src = src ? src->link : NULL;
        a->dst = dst ? dst->link : NULL;
        snprintf(a->guest, sizeof(a->guest), "%s", s->t.guest);
        snprintf(a->uuid, sizeof(a->uuid), "%s", s->t.uuid);
        snprintf(a->op, sizeof(a->op), "%s", s->t.op_id);
        return a;
}

/* Drops, polls, aborts and admissions of this tick; returns the number of
 * actions.  Each admission counts against its hosts at once. */
static size_t decide_locked(Coordinator *c, Action *acts, size_t max) {
        lock_assert_held(&c->lock);
        size_t n = 0;
        unsigned running = 0;
        for (size_t i = 0; i < c->n_jobs; i++)
                for (size_t k = 0; k < c->jobs[i]->n; k++)
                        running += c->jobs[i]->subs[k].t.phase == COORD_SUBTASK_PHASE_MIGRATING;

        for (size_t i = 0; i < c->n_jobs && n < max; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != COORD_JOB_PHASE_RUNNING)
                        continue;
                bool failed = false;
                for (size_t k = 0; k < j->n; k++)
                        failed |= j->subs[k].t.phase == COORD_SUBTASK_PHASE_FAILED;
                bool drop = j->cancel || (failed && j->j.failure_policy == COORD_FAILURE_POLICY_STOP);
                for (size_t k = 0; k < j->n && n < max; k++) {
                        CSub *s = &j->subs[k];
                        CHost *src = coord_host_find_locked(c, s->t.source);
                        CHost *dst = coord_host_find_locked(c, s->t.destination);
                        if (s->t.phase == COORD_SUBTASK_PHASE_QUEUED && drop) {
                                s->t.phase = COORD_SUBTASK_PHASE_CANCELLED;
                                snprintf(s->t.error, sizeof(s->t.error), "%s",
                                         j->cancel ? "job cancelled before it started"
                                                   : "dropped: an earlier guest failed (stop policy)");
                                s->t.finished_unix_ms = coord_now_ms();
                                action_add(acts, &n, ACT_POLL, j, s, NULL, NULL); /* persists the change */
                                coord_job_bump_locked(c, j);
                                continue;
                        }
                        if (!src || !dst)
                                continue;
                        if (s->t.phase == COORD_SUBTASK_PHASE_MIGRATING) {
                                bool send_abort = j->cancel && !s->abort_sent;
                                if (send_abort)
                                        s->abort_sent = true;
                                Action *a = action_add(acts, &n, send_abort ? ACT_ABORT : ACT_POLL, j, s, src, dst);
                                a->reconcile = s->reconcile;
                                continue; /* its share: share_locked, once this tick's admissions are counted */
                        }
                        if (s->t.phase != COORD_SUBTASK_PHASE_QUEUED || j->cancel)
                                continue;
                        /* admission control */
                        if (src->health != COORD_HOST_HEALTH_HEALTHY || dst->health != COORD_HOST_HEALTH_HEALTHY)
                                continue;
                        if (running >= c->cfg.cluster_limit || src->out_running >= slots(c, src, true) ||
                            dst->in_running >= slots(c, dst, false))
                                continue;
                        uint64_t share = MIN(coord_host_link_rate(c, src) / (src->out_running + 1),
                                             coord_host_link_rate(c, dst) / (dst->in_running + 1));
                        if (share < need_of(c, s, src, dst) && (src->out_running || dst->in_running))
                                continue; /* it would not converge next to the others: wait */
                        src->out_running++;
                        dst->in_running++;
                        running++;
                        s->bw = share;
                        s->t.phase = COORD_SUBTASK_PHASE_MIGRATING;
                        s->t.started_unix_ms = coord_now_ms();
                        snprintf(s->t.op_id, sizeof(s->t.op_id), "%s-%d", j->j.id, s->t.seq);
                        Action *a = action_add(acts, &n, ACT_START, j, s, src, dst);
                        snprintf(a->dest_addr, sizeof(a->dest_addr), "%s", dst->h.address);
                        mig_addr_host(dst, a->stream_host, sizeof(a->stream_host));
                        a->bw = share;
                        a->params = j->params;
                        coord_job_bump_locked(c, j);
                }
        }
        return n;
}

/* Fair shares of the links, from the counts after this tick's admissions
 * (a share computed before a later admission on the same link would
 * oversubscribe it until the next tick), capped by the bandwidth the
 * request asked for (a re-share never lifts it).  A migration started in
 * this tick (one of the @n_first actions) starts with its share; a running
 * one is re-tuned when its share moves by more than 10 %.  Returns the
 * number of actions. */
static size_t share_locked(Coordinator *c, Action *acts, size_t n_first, size_t max) {
        lock_assert_held(&c->lock);
        size_t n = n_first;
        for (size_t i = 0; i < c->n_jobs; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != COORD_JOB_PHASE_RUNNING || j->cancel)
                        continue;
                for (size_t k = 0; k < j->n; k++) {
                        CSub *s = &j->subs[k];
                        CHost *src, *dst;
                        if (s->t.phase != COORD_SUBTASK_PHASE_MIGRATING || s->reconcile ||
                            !(src = coord_host_find_locked(c, s->t.source)) ||
                            !(dst = coord_host_find_locked(c, s->t.destination)))
                                continue;
                        uint64_t share = MIN(coord_host_link_rate(c, src) / MAX(src->out_running, 1u),
                                             coord_host_link_rate(c, dst) / MAX(dst->in_running, 1u));
                        if (j->params.bandwidth)
                                share = MIN(share, j->params.bandwidth);
                        Action *start = NULL;
                        for (size_t q = 0; q < n_first && !start; q++)
                                if (acts[q].kind == ACT_START && acts[q].seq == s->t.seq &&
                                    strcmp(acts[q].job, j->j.id) == 0)
                                        start = &acts[q];
                        if (start) {
                                start->bw = s->bw = share;
                                continue;
                        }
                        if (!s->bw || (share <= s->bw * 11 / 10 && share >= s->bw * 9 / 10) || n >= max)
                                continue;
                        if (strcmp(s->live.mig_phase, "perform") != 0)
                                continue; /* not streaming yet: the source agent sets the bandwidth it
                                           * started with when the stream starts, and would undo a
                                           * re-tune sent before; s->bw unchanged, so the next tick
                                           * tries again */
                        s->bw = share;
                        action_add(acts, &n, ACT_TUNE, j, s, src, dst)->bw = share;
                }
        }
        return n;
}

/* Under the lock: decide the actions of this tick (at most @max). */
static size_t plan_tick_locked(Coordinator *c, Action *acts, size_t max) {
        lock_assert_held(&c->lock);
        return share_locked(c, acts, decide_locked(c, acts, max), max);
}

static void do_start(Coordinator *c, Action *a) {
        MigParams p = a->params;
        /* the operation id is persisted before the agent hears of it, so a
         * restarted coordinator can ask about it */
        coord_sub_persist(c, a->job, a->seq);
        coord_job_event(c, a->job, "%s started: bandwidth %.0f MB/s, op %s", a->guest, (double) a->bw / 1e6,
                        a->op);
        p.bandwidth = p.bandwidth ? MIN(p.bandwidth, a->bw) : a->bw;
        int r = agent_link_migrate(a->src, a->guest, a->op, a->dest_addr, a->stream_host, &p, COORD_CALL_MS);
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "the source agent refused the migration: %s", err_str(r));
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, NULL, why);
        }
}

static void do_poll(Coordinator *c, Action *a) {
        LinkMigResult res;
        LinkGuestStatus gs;
        if (!a->src) { /* a queued sub-task dropped under the lock: persist it, and say so */
                StoreSubtask t = { 0 };
                CJob *j;
                coord_sub_persist(c, a->job, a->seq);
                lock_acquire(&c->lock);
                CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                if (s)
                        t = s->t;
                lock_release(&c->lock);
                if (s)
                        coord_job_event(c, a->job, "%s cancelled: %s -> %s: %s", t.guest, t.source, t.destination,
                                        t.error);
                return;
        }
        int r = agent_link_get_migration(a->src, a->guest, COORD_CALL_MS, &res);
        bool ours = r >= 0 && strcmp(res.op, a->op) == 0;
        if (ours && res.done) {
                /* a migration that ended without success after the job's
                 * cancel aborted it is cancelled (its source resumed), not
                 * failed: the job then ends cancelled */
                bool aborted = false;
                if (!res.success) {
                        CJob *j;
                        lock_acquire(&c->lock);
                        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                        aborted = s && s->abort_sent;
                        lock_release(&c->lock);
                }
                if (aborted) {
                        char why[STORE_TEXT_MAX];
                        snprintf(why, sizeof(why), "aborted by the job's cancel, the source resumed (%.400s)",
                                 res.error);
                        coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_CANCELLED, &res, why);
                } else
                        coord_sub_end(c, a->job, a->seq,
                                      res.success ? COORD_SUBTASK_PHASE_SUCCEEDED : COORD_SUBTASK_PHASE_FAILED, &res,
                                      res.success ? NULL : res.error);
                return;
        }
        if (!ours && (r >= 0 || r == -ENOENT) && a->reconcile) {
                /* the source agent does not know this migration (restarted,
                 * or the coordinator died before it was sent): where is the
                 * guest? */
                LinkGuestStatus d;
                if (agent_link_get_guest(a->dst, a->uuid, COORD_CALL_MS, &d) >= 0 &&
                    d.state == COORD_GUEST_STATE_RUNNING && strcmp(d.async_job, "none") == 0) {
                        coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_SUCCEEDED, NULL, NULL);
                        coord_job_event(c, a->job,
                                        "%s: found running on %s after a restart: recorded as migrated, not redone",
                                        a->guest, "its destination");
                        return;
                }
                if (agent_link_get_guest(a->src, a->uuid, COORD_CALL_MS, &gs) >= 0 &&
                    strcmp(gs.async_job, "none") == 0) {
                        /* still on the source, nothing in flight: queue it again */
                        CJob *j;
                        lock_acquire(&c->lock);
                        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                        if (s && s->t.phase == COORD_SUBTASK_PHASE_MIGRATING) {
                                coord_sub_release_locked(c, s);
                                s->t.phase = COORD_SUBTASK_PHASE_QUEUED;
                                s->reconcile = false;
                                coord_job_bump_locked(c, j);
                        }
                        lock_release(&c->lock);
                        coord_sub_persist(c, a->job, a->seq);
                        coord_job_event(c, a->job, "%s: its migration never ran (coordinator restart): queued again",
                                        a->guest);
                }
                return;
        }
        if (ours) {
                CJob *j;
                lock_acquire(&c->lock);
                CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                if (s)
                        s->reconcile = false;
                lock_release(&c->lock);
        }
        /* live figures for displays */
        if (agent_link_get_guest(a->src, a->uuid, COORD_CALL_MS, &gs) >= 0) {
                CJob *j;
                lock_acquire(&c->lock);
                CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                if (s) {
                        snprintf(s->live.mig_status, sizeof(s->live.mig_status), "%s", gs.mig_status);
                        snprintf(s->live.mig_phase, sizeof(s->live.mig_phase), "%s", gs.phase);
                        s->live.ram_total = gs.ram_total;
                        s->live.ram_remaining = gs.ram_remaining;
                        s->live.ram_transferred = gs.ram_transferred;
                        s->live.dirty_pages_rate = gs.dirty_pages_rate;
                        s->live.iteration = gs.iteration;
                        s->live.mbps = gs.mbps;
                        coord_job_bump_locked(c, j);
                }
                lock_release(&c->lock);
        }
}

/* When every sub-task ended: verify where the guests run, then close. */
static void verify_jobs(Coordinator *c) {
        char ids[64][STORE_ID_MAX];
        size_t n = 0;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_jobs && n < 64; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != COORD_JOB_PHASE_RUNNING)
                        continue;
                bool all = true;
                for (size_t k = 0; k < j->n; k++)
                        all &= coord_subtask_phase_is_final(j->subs[k].t.phase);
                if (all) {
                        j->j.phase = COORD_JOB_PHASE_VERIFYING;
                        coord_job_bump_locked(c, j);
                        snprintf(ids[n++], STORE_ID_MAX, "%s", j->j.id);
                }
        }
        lock_release(&c->lock);

        for (size_t i = 0; i < n; i++) {
                CoordJobView v;
                if (coord_job_get(c, ids[i], false, &v) < 0)
                        continue;
                (void) c->store->ops->job_update(c->store, &v.job);
                unsigned ok = 0, bad = 0, cancelled = 0;
                for (size_t k = 0; k < v.n_subs; k++) {
                        StoreSubtask *t = &v.subs[k];
                        if (t->phase == COORD_SUBTASK_PHASE_SUCCEEDED) {
                                LinkGuestStatus d;
                                AgentLink *dl = NULL;
                                lock_acquire(&c->lock);
                                CHost *dh = coord_host_find_locked(c, t->destination);
                                if (dh)
                                        dl = dh->link;
                                lock_release(&c->lock);
                                if (!dl || agent_link_get_guest(dl, t->uuid, COORD_CALL_MS, &d) < 0 ||
                                    d.state != COORD_GUEST_STATE_RUNNING) {
                                        bad++;
                                        coord_job_event(c, ids[i], "verify: %s is NOT running on %s", t->guest,
                                                        t->destination);
                                } else
                                        ok++;
                        } else if (t->phase == COORD_SUBTASK_PHASE_CANCELLED)
                                cancelled++;
                        else
                                bad++;
                }
                lock_acquire(&c->lock);
                CJob *j = coord_job_find_locked(c, ids[i]);
                if (j) {
                        j->j.phase = bad                       ? COORD_JOB_PHASE_FAILED
                                     : (j->cancel || cancelled) ? COORD_JOB_PHASE_CANCELLED
                                                                : COORD_JOB_PHASE_SUCCEEDED;
                        if (bad)
                                snprintf(j->j.error, sizeof(j->j.error), "%u of %zu guests did not move", bad, j->n);
                        j->j.finished_unix_ms = coord_now_ms();
                        v.job = j->j;
                        coord_job_bump_locked(c, j);
                }
                lock_release(&c->lock);
                (void) c->store->ops->job_update(c->store, &v.job);
                coord_job_event(c, ids[i], "job %s: %u migrated, %u failed, %u cancelled",
                                coord_job_phase_to_string(v.job.phase), ok, bad, cancelled);
                if (v.job.kind == COORD_JOB_KIND_EVACUATE && v.job.phase == COORD_JOB_PHASE_SUCCEEDED &&
                    v.job.maintenance) {
                        (void) coord_host_set_state(c, v.job.host, COORD_HOST_STATE_MAINTENANCE, NULL);
                        coord_job_event(c, ids[i], "host %s set to maintenance", v.job.host);
                }
                coord_job_view_clear(&v);
        }
}

/* Sub-tasks migrating now; *ret_finishing: one of them is about to end. */
static unsigned migrating_locked(Coordinator *c, bool *ret_finishing) {
        lock_assert_held(&c->lock);
        unsigned n = 0;
        bool fin = false;
        for (size_t i = 0; i < c->n_jobs; i++)
                for (size_t k = 0; k < c->jobs[i]->n; k++) {
                        const CSub *s = &c->jobs[i]->subs[k];
                        if (s->t.phase != COORD_SUBTASK_PHASE_MIGRATING)
                                continue;
                        n++;
                        fin |= sub_finishing(s);
                }
        if (ret_finishing)
                *ret_finishing = fin;
        return n;
}

void *coord_scheduler_thread(void *arg) {
        Coordinator *c = arg;
        Action *acts = calloc(MAX_ACTIONS, sizeof(*acts));
        if (!acts)
                return NULL;
        while (!atomic_load(&c->stopping)) {
                lock_acquire(&c->lock);
                size_t n = plan_tick_locked(c, acts, MAX_ACTIONS);
                unsigned before = migrating_locked(c, NULL);
                lock_release(&c->lock);
                for (size_t i = 0; i < n && !atomic_load(&c->stopping); i++) {
                        switch (acts[i].kind) {
                        case ACT_START:
                                do_start(c, &acts[i]);
                                break;
                        case ACT_POLL:
                                do_poll(c, &acts[i]);
                                break;
                        case ACT_ABORT:
                                if (agent_link_abort(acts[i].src, acts[i].guest, 30000) < 0)
                                        log_warning("job %s: abort of %s: %s", acts[i].job, acts[i].guest, err_msg());
                                do_poll(c, &acts[i]);
                                break;
                        case ACT_TUNE:
                                if (agent_link_tune(acts[i].src, acts[i].guest, acts[i].bw, COORD_CALL_MS) >= 0)
                                        coord_job_event(c, acts[i].job, "%s: bandwidth re-shared to %.0f MB/s",
                                                        acts[i].guest, (double) acts[i].bw / 1e6);
                                break;
                        case ACT_MAX:
                                break;
                        }
                }
                verify_jobs(c);
                /* A migration that ended in this tick freed its slots: plan
                 * again at once, so the next one starts within milliseconds
                 * instead of after a tick with the link idle.  While one is
                 * about to end, poll every 50 ms, so its end is seen soon
                 * (docs/performance.md, "Evacuation makespan"). */
                bool finishing;
                lock_acquire(&c->lock);
                bool freed = migrating_locked(c, &finishing) < before;
                lock_release(&c->lock);
                if (!freed)
                        sleep_ms(finishing ? 50 : 250);
        }
        free(acts);
        return NULL;
}
