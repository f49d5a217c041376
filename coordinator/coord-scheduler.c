/* The scheduler (see coord-priv.h): one thread runs every job.
 *
 * Each tick decides under coord->lock (plan_tick_locked), then acts without
 * it.  Under the lock: queued sub-tasks of a cancelled job, or of a stop-
 * policy job with a failure, are dropped; queued ones are admitted while
 * the limits hold (per-host outgoing and incoming slots, the cluster limit,
 * both hosts healthy, and a fair share of both links that outruns the
 * guest's dirty rate), each admission counting at once against its hosts;
 * then every migration's fair share of its links is computed from the
 * counts after this tick's admissions.  Before a queued sub-task is
 * admitted its destination is checked again: one that was removed, is no
 * longer enabled, is being evacuated or is unreachable gets the guest
 * placed again, or the sub-task fails with the reason.  Each decision is an
 * Action, copied out with what the agent call needs.  Without the lock:
 * start (its stream chosen for its share and hosts, coord-stream.h, and
 * recorded in the sub-task; the sub-task with its operation id persisted
 * first; no Migrate call when that write fails), poll (GetMigration), abort (a cancelled
 * job's running migrations), re-tune (MigrateTune when a share moved by
 * more than 10 %) and notes (a sub-task changed under the lock: store it
 * and say why).  An outcome the source agent cannot give (it does not know
 * the operation, or reports a failure) is settled from where the agents
 * say the guest runs (settle()), the same way at runtime and after a
 * restart.  A post-copy the source reports paused or recovering
 * (postcopy_paused, postcopy_recover) still runs: its slots stay held, it
 * is neither failed nor placed again, and a cancel sends it no abort (the
 * agent refuses one); one the source gave up (postcopy_failed, "ALERT:")
 * fails with the agent's text and a history line that the guest, paused on
 * both hosts, needs an operator; nothing is destroyed (docs/coordinator.md,
 * "Jobs").  Then every job whose sub-tasks all ended is verified (each
 * migrated guest runs on its destination; an evacuation's host is listed
 * again before it is put in maintenance), closed, and moved out of the job
 * table; the store's retention is applied.  A tick that freed a slot plans
 * again at once; otherwise the thread waits on coord->changed for 250 ms,
 * or 50 ms while a migration is about to end (docs/coordinator.md,
 * "Admission control"), and with no job until one is submitted.
 *
 * With etcd the thread also carries the role (coord-ha.c): before each
 * tick coord_ha_step() takes over, steps down or refreshes a standby's
 * view, and it waits at most SCHED_ROLE_MS.  A tick acts only while
 * coord_acting() holds, asked at its start and again before each agent
 * call; when it turns false the tick stops at once.  A start whose write
 * the store refuses with -ESTALE (the fence) is not counted as a failed
 * write: the agent is not called and the term is over.
 */
#include "coord-priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord-stream.h"
#include "err.h"
#include "log.h"
#include "text.h"

#define MAX_ACTIONS 256 /* per tick; the rest wait for the next one */

typedef enum ActionKind {
        ACT_START,      /* admitted: start the migration on the source agent */
        ACT_POLL,       /* follow a migration */
        ACT_NOTE,       /* a sub-task changed under the lock: store it, note in the history */
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
        char guest[64], uuid[37], op[64], dest_addr[128];
        uint64_t bw;
        bool reconcile;
        MigParams params;
        unsigned src_cpus, dst_cpus; /* ACT_START: for the stream choice (0 = unknown) */
        bool compressible;           /* ACT_START: the guest's memory is known to compress */
        char note[STORE_TEXT_MAX]; /* ACT_NOTE: the history line */
} Action;

static uint64_t need_of(Coordinator *c, const CSub *s, const CHost *src, const CHost *dst) {
        uint64_t floor = MIN(coord_host_link_rate(c, src), coord_host_link_rate(c, dst)) / 8;
        return MAX(s->dirty * 3 / 2, floor);
}

/* A migration about to end: its stream is done, or what remains of this pass
 * takes less than a second at its rate (the live figures of the last poll).
 * One still copying its local disks is not: its memory is still to come. */
static bool sub_finishing(const CSub *s) {
        const CoordLive *l = &s->live;
        if (l->disk_total && l->disk_transferred < l->disk_total)
                return false;
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

/* A queued sub-task whose destination can no longer receive it is placed
 * again, or fails with the reason (a note action either way).  Returns
 * true when it changed. */
static bool replan_if_needed_locked(Coordinator *c, CJob *j, CSub *s, Action *acts, size_t *n) {
        lock_assert_held(&c->lock);
        char why[256], none[256], old[STORE_NAME_MAX];
        if (!coord_dest_invalid_locked(c, j, s, why, sizeof(why)))
                return false;
        snprintf(old, sizeof(old), "%s", s->t.destination);
        int r = coord_replan_sub_locked(c, s, none, sizeof(none));
        Action *a = action_add(acts, n, ACT_NOTE, j, s, NULL, NULL);
        if (r > 0)
                snprintf(a->note, sizeof(a->note), "%.60s placed again: %.200s; now %.60s -> %.60s (was -> %.60s)",
                         s->t.guest, why, s->t.source, s->t.destination, old);
        else {
                s->t.phase = COORD_SUBTASK_PHASE_FAILED;
                s->t.finished_unix_ms = coord_now_ms();
                snprintf(s->t.error, sizeof(s->t.error), "%.200s; no other host can take it: %.280s", why, none);
                snprintf(a->note, sizeof(a->note), "%.60s FAILED: %.60s -> %.60s: %.300s", s->t.guest, s->t.source, old,
                         s->t.error);
        }
        coord_job_bump_locked(c, j);
        return true;
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
                        if (s->t.phase == COORD_SUBTASK_PHASE_QUEUED && drop) {
                                s->t.phase = COORD_SUBTASK_PHASE_CANCELLED;
                                snprintf(s->t.error, sizeof(s->t.error), "%s",
                                         j->cancel ? "job cancelled before it started"
                                                   : "dropped: an earlier guest failed (stop policy)");
                                s->t.finished_unix_ms = coord_now_ms();
                                snprintf(action_add(acts, &n, ACT_NOTE, j, s, NULL, NULL)->note, STORE_TEXT_MAX,
                                         "%.60s cancelled: %.60s -> %.60s: %.300s", s->t.guest, s->t.source, s->t.destination,
                                         s->t.error);
                                coord_job_bump_locked(c, j);
                                continue;
                        }
                        if (s->t.phase == COORD_SUBTASK_PHASE_QUEUED && !j->cancel &&
                            replan_if_needed_locked(c, j, s, acts, &n))
                                continue;
                        CHost *src = coord_host_find_locked(c, s->t.source);
                        CHost *dst = coord_host_find_locked(c, s->t.destination);
                        if (!src || !dst)
                                continue;
                        if (s->t.phase == COORD_SUBTASK_PHASE_MIGRATING) {
                                /* a paused or recovering post-copy cannot be
                                 * aborted (the agent refuses): followed on */
                                bool send_abort = j->cancel && !s->abort_sent && !s->postcopy[0];
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
                        if (running >= c->cfg.cluster_limit || src->out_running >= coord_host_slots(c, src, true) ||
                            dst->in_running >= coord_host_slots(c, dst, false))
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
                        a->bw = share;
                        a->params = j->params;
                        a->src_cpus = src->info.cpus;
                        a->dst_cpus = dst->info.cpus;
                        a->compressible = coord_guest_compressible(c, s->t.guest);
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

/* A note action: store the sub-task changed under the lock, and its line. */
static void do_note(Coordinator *c, Action *a) {
        (void) coord_sub_persist(c, a->job, a->seq);
        coord_job_event(c, a->job, "%s", a->note);
}

/* The start of sub-task @a could not be stored: the agent is not asked.  It
 * is queued again, or fails after COORD_PERSIST_TRIES writes in a row. */
static void start_not_stored(Coordinator *c, Action *a, const char *why) {
        CJob *j;
        bool give_up = false;
        unsigned tries = 0;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
        if (s && s->t.phase == COORD_SUBTASK_PHASE_MIGRATING) {
                tries = ++s->persist_failures;
                give_up = tries >= COORD_PERSIST_TRIES;
                if (!give_up) {
                        coord_sub_release_locked(c, s);
                        s->t.phase = COORD_SUBTASK_PHASE_QUEUED;
                        s->t.op_id[0] = '\0';
                        s->t.started_unix_ms = 0;
                        coord_job_bump_locked(c, j);
                }
        }
        lock_release(&c->lock);
        if (!s)
                return;
        if (give_up) {
                char err[STORE_TEXT_MAX];
                snprintf(err, sizeof(err), "not started: its start could not be stored (%u tries): %.400s", tries,
                         why);
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, NULL, err);
        } else
                coord_job_event(c, a->job, "%s not started: its start could not be stored (%.400s); queued again",
                                a->guest, why);
}

/* Errors of a Migrate call that say the agent refused it; any other (a
 * deadline, a lost connection, an internal error) leaves open whether it
 * started, which the next poll asks by operation id. */
static bool migrate_refused(int r) {
        return r == -EINVAL || r == -ENOENT || r == -EBUSY || r == -EPERM || r == -ENOBUFS || r == -EOPNOTSUPP ||
               r == -ERANGE || r == -ENOMEM;
}

/* The stream of started migration @a (@p, its bandwidth set): multifd
 * channels and compression chosen for its link share and hosts
 * (coord_stream_choose()) where the job's parameters leave them unset, else
 * the parameters'.  The sub-task records it (multifd_channels, compression,
 * and "; stream: WHY" at the end of its reason, replacing an earlier
 * start's) before its start is stored; @why gets the line for the history. */
static void stream_choose(Coordinator *c, const Action *a, MigParams *p, char *why, size_t size) {
        CoordStreamInput in = { .link_bytes_per_s = p->bandwidth, .source_cpus = a->src_cpus,
                                .dest_cpus = a->dst_cpus, .compressible = a->compressible,
                                .postcopy = p->postcopy != POSTCOPY_POLICY_NEVER };
        CoordStreamChoice ch;
        coord_stream_choose(&in, &ch);
        if (coord_stream_apply(&ch, p))
                snprintf(why, size, "%s", ch.why);
        else
                snprintf(why, size, "as the job's parameters ask: %u multifd channel(s)%s, compression %s",
                         p->multifd_channels, p->multifd_channels ? "" : " (the source agent picks)",
                         mig_compression_to_string(p->compression));
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
        if (s) {
                char *old = strstr(s->t.reason, COORD_STREAM_MARK);
                if (old)
                        *old = '\0';
                /* the placement's reason is cut, never the stream's line */
                size_t keep = MIN(strlen(s->t.reason), sizeof(s->t.reason) - strlen(COORD_STREAM_MARK) - strlen(why) - 1);
                s->t.reason[keep] = '\0';
                text_append(s->t.reason, sizeof(s->t.reason), keep, "%s%s", COORD_STREAM_MARK, why);
                s->t.multifd_channels = p->multifd_channels;
                s->t.compression = p->compression;
                coord_job_bump_locked(c, j);
        }
        lock_release(&c->lock);
}

static void do_start(Coordinator *c, Action *a) {
        MigParams p = a->params;
        char stream[sizeof(((CoordStreamChoice *) 0)->why) + 96];
        p.bandwidth = p.bandwidth ? MIN(p.bandwidth, a->bw) : a->bw;
        stream_choose(c, a, &p, stream, sizeof(stream));
        /* the operation id is stored before the agent hears of it, so a
         * restarted coordinator can ask about it; if it cannot be, the
         * agent is not asked */
        int pr = coord_sub_persist(c, a->job, a->seq);
        if (pr == -ESTALE)
                return; /* fenced: not the leader; nothing to count or retry (coord-ha.c steps down) */
        if (pr < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_msg());
                start_not_stored(c, a, why);
                return;
        }
        coord_job_event(c, a->job, "%s started: bandwidth %.0f MB/s, op %s; stream: %s", a->guest,
                        (double) a->bw / 1e6, a->op, stream);
        int r = agent_link_migrate(a->src, a->guest, a->op, a->dest_addr, &p, COORD_CALL_MS);
        if (r >= 0)
                return;
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", err_msg());
        if (migrate_refused(r)) {
                char err[STORE_TEXT_MAX];
                snprintf(err, sizeof(err), "the source agent refused the migration: %.400s", why);
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, NULL, err);
                return;
        }
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
        if (s)
                snprintf(s->start_error, sizeof(s->start_error), "the Migrate call failed: %.120s", why);
        lock_release(&c->lock);
        coord_job_event(c, a->job, "%s: the Migrate call failed (%.400s): whether it started is asked by op %s",
                        a->guest, why, a->op);
}

/* A guest as an agent reports it, for a history line. */
static void guest_where(int r, const LinkGuestStatus *g, char *buf, size_t size) {
        if (r == -ENOENT)
                snprintf(buf, size, "not there");
        else if (r < 0)
                snprintf(buf, size, "no answer (%s)", err_str(r));
        else
                snprintf(buf, size, "%s, %s", coord_guest_state_to_string(g->state), g->async_job);
}

static bool guest_idle(int r, const LinkGuestStatus *g) {
        return r >= 0 && strcmp(g->async_job, "none") == 0;
}

/* Where is the guest of sub-task @a, whose source agent cannot say how its
 * migration ended: it does not know the operation (@res NULL: an agent
 * restart, a coordinator that died before the call, a Migrate call lost),
 * or it reports a failure (@res).  The agents decide, once their recovery
 * settled (no job in flight on either side): running on the destination
 * and not on the source is migrated; on the source and not on the
 * destination is failed (or, for a sub-task reloaded after a restart whose
 * source does not know the operation, queued again: it never ran);
 * anything else is waited for, at most COORD_SETTLE_MS, then failed with
 * what each agent said. */
static void settle(Coordinator *c, Action *a, const LinkMigResult *res) {
        LinkGuestStatus d, g;
        char cause[STORE_TEXT_MAX], err[STORE_TEXT_MAX], ds[96], ss[96];
        uint64_t started = 0, unclear = 0;
        bool start_failed = false, first = false;
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
        if (s) {
                started = s->t.started_unix_ms;
                snprintf(cause, sizeof(cause), "%s", s->start_error);
                start_failed = s->start_error[0] != '\0';
        }
        lock_release(&c->lock);
        if (!s)
                return;
        if (res)
                snprintf(cause, sizeof(cause), "the source reported: %.400s", res->error);
        else if (!cause[0])
                snprintf(cause, sizeof(cause), "the source agent does not know op %s", a->op);
        int rd = agent_link_get_guest(a->dst, a->uuid, COORD_CALL_MS, &d);
        int rs = agent_link_get_guest(a->src, a->uuid, COORD_CALL_MS, &g);
        bool dst_runs = guest_idle(rd, &d) && d.state == COORD_GUEST_STATE_RUNNING;
        bool src_runs = guest_idle(rs, &g) && (g.state == COORD_GUEST_STATE_RUNNING || g.state == COORD_GUEST_STATE_PAUSED);
        bool dst_empty = rd == -ENOENT || (guest_idle(rd, &d) && d.state != COORD_GUEST_STATE_RUNNING);
        bool src_empty = rs == -ENOENT || (guest_idle(rs, &g) && g.state != COORD_GUEST_STATE_RUNNING);
        guest_where(rd, &d, ds, sizeof(ds));
        guest_where(rs, &g, ss, sizeof(ss));

        if (dst_runs && src_empty) {
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_SUCCEEDED, res, NULL);
                coord_job_event(c, a->job, "%s: found running on its destination (%.400s): recorded as migrated, not redone",
                                a->guest, cause);
                return;
        }
        /* a Migrate call that failed unclearly may still be on its way to
         * the agent: its absence means something only after its deadline */
        bool young = !res && start_failed && coord_now_ms() < started + 2 * COORD_CALL_MS;
        if (src_runs && dst_empty && !young) {
                if (a->reconcile && !res) {
                        lock_acquire(&c->lock);
                        s = coord_sub_find_locked(c, a->job, a->seq, &j);
                        if (s && s->t.phase == COORD_SUBTASK_PHASE_MIGRATING) {
                                coord_sub_release_locked(c, s);
                                s->t.phase = COORD_SUBTASK_PHASE_QUEUED;
                                s->reconcile = false;
                                coord_job_bump_locked(c, j);
                        }
                        lock_release(&c->lock);
                        (void) coord_sub_persist(c, a->job, a->seq);
                        coord_job_event(c, a->job, "%s: its migration never ran (coordinator restart): queued again",
                                        a->guest);
                        return;
                }
                snprintf(err, sizeof(err), "%.400s; the guest runs on its source", cause);
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, res, err);
                return;
        }
        if (rd == -ENOENT && rs == -ENOENT) {
                snprintf(err, sizeof(err), "%.400s; neither agent has the guest", cause);
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, res, err);
                return;
        }
        /* not settled yet: wait, bounded */
        lock_acquire(&c->lock);
        s = coord_sub_find_locked(c, a->job, a->seq, &j);
        if (s && !s->unclear_since_ms) {
                s->unclear_since_ms = coord_now_ms();
                first = true;
        }
        if (s)
                unclear = s->unclear_since_ms;
        lock_release(&c->lock);
        if (unclear && coord_now_ms() - unclear >= COORD_SETTLE_MS) {
                snprintf(err, sizeof(err), "%.280s; not settled after %d s: source %.90s, destination %.90s", cause,
                         COORD_SETTLE_MS / 1000, ss, ds);
                coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, res, err);
        } else if (first)
                coord_job_event(c, a->job, "%s: outcome not clear yet (%.300s; source %s, destination %s): waiting",
                                a->guest, cause, ss, ds);
}

/* Whether a source's migration phase is a post-copy that lost its link and
 * is held: paused, or recovering (docs/migration.md, "Post-copy
 * recovery"). */
static bool postcopy_held(const char *phase) {
        return strcmp(phase, "postcopy_paused") == 0 || strcmp(phase, "postcopy_recover") == 0;
}

/* The running migration of @a reports @phase: entering or leaving a held
 * post-copy is said in the job's history, and so is a cancel that cannot
 * abort it.  It stays migrating with both hosts' slots either way. */
static void postcopy_note(Coordinator *c, const Action *a, const char *phase) {
        bool held = postcopy_held(phase), entered = false, left = false, cancel = false;
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
        if (s) {
                entered = held && !s->postcopy[0];
                left = !held && s->postcopy[0];
                snprintf(s->postcopy, sizeof(s->postcopy), "%s", held ? phase : "");
                cancel = held && j->cancel && !s->postcopy_cancel_noted;
                if (cancel)
                        s->postcopy_cancel_noted = true;
                if (entered || left)
                        coord_job_bump_locked(c, j);
        }
        lock_release(&c->lock);
        if (entered)
                coord_job_event(c, a->job,
                                "%s: post-copy %s: its link broke and the agents try to recover it; the migration "
                                "still runs (both hosts' slots held, not failed, not placed again)",
                                a->guest, strcmp(phase, "postcopy_paused") == 0 ? "paused" : "recovering");
        if (left)
                coord_job_event(c, a->job, "%s: post-copy recovered: the migration goes on", a->guest);
        if (cancel)
                coord_job_event(c, a->job,
                                "%s: not aborted by the cancel: its post-copy migration is %s and cannot be aborted "
                                "(the guest's memory is on both hosts); followed until it recovers or fails",
                                a->guest, phase);
}

/* A post-copy the source gave up recovering (phase postcopy_failed, its
 * error an "ALERT: ..."): the guest is paused on both hosts and needs an
 * operator.  The sub-task fails with the agent's text; nothing is settled
 * from where the guest runs and neither side is destroyed. */
static void postcopy_failed(Coordinator *c, const Action *a, const LinkMigResult *res) {
        coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_FAILED, res, res->error);
        coord_job_event(c, a->job,
                        "%s NEEDS AN OPERATOR: its post-copy migration could not be recovered; the guest is paused "
                        "on its source and its destination, neither is destroyed (docs/migration.md, "
                        "\"Post-copy recovery\")",
                        a->guest);
}

static void do_poll(Coordinator *c, Action *a) {
        LinkMigResult res;
        LinkGuestStatus gs;
        int r = agent_link_get_migration(a->src, a->guest, COORD_CALL_MS, &res);
        bool ours = r >= 0 && strcmp(res.op, a->op) == 0;
        if (ours && !res.done)
                postcopy_note(c, a, res.phase);
        if (ours && res.done && !res.success &&
            (strcmp(res.phase, "postcopy_failed") == 0 || strncmp(res.error, "ALERT:", 6) == 0)) {
                postcopy_failed(c, a, &res); /* before a cancel's "aborted": it was not */
                return;
        }
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
                } else if (res.success)
                        coord_sub_end(c, a->job, a->seq, COORD_SUBTASK_PHASE_SUCCEEDED, &res, NULL);
                else
                        settle(c, a, &res); /* reported failed: where did the guest end up? */
                return;
        }
        if (!ours && (r >= 0 || r == -ENOENT)) {
                settle(c, a, NULL); /* the source agent does not know this migration */
                return;
        }
        if (ours) {
                CJob *j;
                lock_acquire(&c->lock);
                CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                if (s) {
                        s->reconcile = false;
                        s->unclear_since_ms = 0;
                }
                lock_release(&c->lock);
        }
        /* live figures for displays */
        if (agent_link_get_guest(a->src, a->uuid, COORD_CALL_MS, &gs) >= 0) {
                CJob *j;
                lock_acquire(&c->lock);
                CSub *s = coord_sub_find_locked(c, a->job, a->seq, &j);
                if (s) {
                        snprintf(s->live.mig_status, sizeof(s->live.mig_status), "%s", gs.mig_status);
                        snprintf(s->live.mig_phase, sizeof(s->live.mig_phase), "%s",
                                 s->postcopy[0] ? s->postcopy : gs.phase);
                        s->live.ram_total = gs.ram_total;
                        s->live.ram_remaining = gs.ram_remaining;
                        s->live.ram_transferred = gs.ram_transferred;
                        s->live.dirty_pages_rate = gs.dirty_pages_rate;
                        s->live.iteration = gs.iteration;
                        s->live.mbps = gs.mbps;
                        s->live.disk_total = gs.disk_total;
                        s->live.disk_transferred = gs.disk_transferred;
                        coord_job_bump_locked(c, j);
                }
                lock_release(&c->lock);
        }
}

/* A sub-task recorded as migrated whose guest does not run on its
 * destination: recorded as failed, with where it runs. */
static void verify_fail(Coordinator *c, const char *job, const StoreSubtask *t, AgentLink *src, const char *dst_said) {
        LinkGuestStatus g;
        char src_said[96], err[STORE_TEXT_MAX];
        int r = src ? agent_link_get_guest(src, t->uuid, COORD_CALL_MS, &g) : -ENOENT;
        guest_where(r, &g, src_said, sizeof(src_said));
        snprintf(err, sizeof(err), "verify: not running on its destination %s (%s); on its source %s: %s",
                 t->destination, dst_said, t->source, src_said);
        CJob *j;
        StoreSubtask copy;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, job, t->seq, &j);
        if (s) {
                s->t.phase = COORD_SUBTASK_PHASE_FAILED;
                snprintf(s->t.error, sizeof(s->t.error), "%s", err);
                copy = s->t;
                coord_job_bump_locked(c, j);
        }
        lock_release(&c->lock);
        if (s && c->store->ops->subtask_update(c->store, &copy) < 0)
                coord_sub_end_unsaved(c, job, t->seq);
        coord_job_event(c, job, "%s FAILED: %s", t->guest, err);
}

/* The host an evacuation is to leave in maintenance, listed again from its
 * agent: "" when it runs no guest, else why it cannot be put in
 * maintenance (the guests still there). */
static void maintenance_check(Coordinator *c, const char *host, char *why, size_t size) {
        AgentLink *l = NULL;
        AgentHostInfo info;
        lock_acquire(&c->lock);
        CHost *h = coord_host_find_locked(c, host);
        if (h)
                l = h->link;
        lock_release(&c->lock);
        why[0] = '\0';
        if (!l) {
                snprintf(why, size, "host %s not set to maintenance: it left the inventory", host);
                return;
        }
        if (agent_link_stats(l, COORD_CALL_MS, &info) < 0) {
                snprintf(why, size, "host %s not set to maintenance: its guests cannot be listed: %.300s", host,
                         err_msg());
                return;
        }
        size_t len = 0, n = 0;
        for (size_t i = 0; i < info.n_guests; i++) {
                const AgentGuestInfo *g = &info.guests[i];
                if (g->state != COORD_GUEST_STATE_RUNNING && g->state != COORD_GUEST_STATE_PAUSED)
                        continue;
                if (n++ == 0)
                        len = text_append(why, size, 0, "host %s not set to maintenance: guests still there: %s",
                                          host, g->name);
                else
                        len = text_append(why, size, len, ", %s", g->name);
        }
        agent_host_info_clear(&info);
}

/* Job @id cannot end yet: a write its end depends on failed (err_msg()).
 * Logged every time, said in the job's history once; the job stays
 * verifying and the next tick tries again. */
static void end_waits(Coordinator *c, const char *id, const char *what) {
        bool first = false;
        log_error("job %s: %s not stored: %s (tried again)", id, what, err_msg());
        lock_acquire(&c->lock);
        CJob *j = coord_job_find_locked(c, id);
        if (j && !j->end_noted)
                first = j->end_noted = true;
        lock_release(&c->lock);
        if (first)
                coord_job_event(c, id, "%s not stored (%.300s): the job ends when it is", what, err_msg());
}

/* Verify and close job @id, whose sub-tasks all ended and are stored.
 * Nothing is published before it is stored: the host an evacuation leaves
 * in maintenance is written first, then the job's end, and only then does
 * the job read as ended.  A failed write leaves the job verifying for the
 * next tick; a coordinator that dies in between verifies it again after
 * its restart (it reloads a verifying job as running). */
static void verify_job(Coordinator *c, const char *id) {
        CoordJobView v;
        if (coord_job_get(c, id, false, &v) < 0)
                return;
        (void) c->store->ops->job_update(c->store, &v.job); /* "verifying"; reloaded as running either way */
        unsigned ok = 0, bad = 0, cancelled = 0, alerts = 0;
        char causes[STORE_TEXT_MAX] = "", maint[STORE_TEXT_MAX] = "";
        size_t len = 0;
        for (size_t k = 0; k < v.n_subs; k++) {
                StoreSubtask *t = &v.subs[k];
                if (t->phase == COORD_SUBTASK_PHASE_SUCCEEDED) {
                        LinkGuestStatus d;
                        AgentLink *dl = NULL, *sl = NULL;
                        lock_acquire(&c->lock);
                        CHost *dh = coord_host_find_locked(c, t->destination), *sh = coord_host_find_locked(c, t->source);
                        dl = dh ? dh->link : NULL;
                        sl = sh ? sh->link : NULL;
                        lock_release(&c->lock);
                        int r = dl ? agent_link_get_guest(dl, t->uuid, COORD_CALL_MS, &d) : -ENOENT;
                        if (r >= 0 && d.state == COORD_GUEST_STATE_RUNNING) {
                                ok++;
                                continue;
                        }
                        char said[96];
                        guest_where(r, &d, said, sizeof(said));
                        verify_fail(c, id, t, sl, said);
                        snprintf(t->error, sizeof(t->error), "verify: not running on %s (%s)", t->destination, said);
                        t->phase = COORD_SUBTASK_PHASE_FAILED;
                }
                if (t->phase == COORD_SUBTASK_PHASE_CANCELLED) {
                        cancelled++;
                        continue;
                }
                alerts += strncmp(t->error, "ALERT:", 6) == 0;
                if (bad++ < 3)
                        len = text_append(causes, sizeof(causes), len, "%s%s: %.150s", bad > 1 ? "; " : "",
                                          t->guest, t->error);
        }
        if (v.job.kind == COORD_JOB_KIND_EVACUATE && v.job.maintenance && !bad && !cancelled)
                maintenance_check(c, v.job.host, maint, sizeof(maint));

        StoreJob end = { 0 };
        lock_acquire(&c->lock);
        CJob *j = coord_job_find_locked(c, id);
        if (j) {
                end = j->j;
                end.phase = bad || maint[0]            ? COORD_JOB_PHASE_FAILED
                            : (j->cancel || cancelled) ? COORD_JOB_PHASE_CANCELLED
                                                       : COORD_JOB_PHASE_SUCCEEDED;
                if (alerts)
                        snprintf(end.error, sizeof(end.error),
                                 "ALERT: %u guests need an operator (post-copy failed: paused on both hosts); "
                                 "%u of %zu guests did not move: %s",
                                 alerts, bad, j->n, causes);
                else if (bad)
                        snprintf(end.error, sizeof(end.error), "%u of %zu guests did not move: %s", bad, j->n, causes);
                else
                        snprintf(end.error, sizeof(end.error), "%s", maint);
                end.finished_unix_ms = coord_now_ms();
        }
        lock_release(&c->lock);
        bool to_maintenance = j && v.job.kind == COORD_JOB_KIND_EVACUATE && v.job.maintenance &&
                              end.phase == COORD_JOB_PHASE_SUCCEEDED;
        if (!j)
                goto out;
        if (to_maintenance && coord_host_set_state(c, v.job.host, COORD_HOST_STATE_MAINTENANCE, NULL) < 0) {
                end_waits(c, id, "host's maintenance state");
                goto out;
        }
        if (c->store->ops->job_update(c->store, &end) < 0) {
                end_waits(c, id, "its end");
                goto out;
        }

        lock_acquire(&c->lock);
        if ((j = coord_job_find_locked(c, id))) {
                j->j.phase = end.phase;
                snprintf(j->j.error, sizeof(j->j.error), "%s", end.error);
                j->j.finished_unix_ms = end.finished_unix_ms;
                coord_job_bump_locked(c, j);
        }
        lock_release(&c->lock);
        if (to_maintenance)
                coord_job_event(c, id, "host %s set to maintenance", v.job.host);
        if (maint[0])
                coord_job_event(c, id, "%s", maint);
        coord_job_event(c, id, "job %s: %u migrated, %u failed, %u cancelled", coord_job_phase_to_string(end.phase),
                        ok, bad, cancelled);
        /* ended: out of the scheduler's table (kept a while for readers) */
        lock_acquire(&c->lock);
        if ((j = coord_job_find_locked(c, id)))
                coord_job_retire_locked(c, j);
        lock_release(&c->lock);
out:
        coord_job_view_clear(&v);
}

/* When every sub-task of a job ended and its end is stored: verify where
 * the guests run, close it, apply the store's retention.  A sub-task end
 * whose write failed is written again first; a job stays running (or
 * verifying, when its own end failed to be stored) until that works. */
static void verify_jobs(Coordinator *c) {
        char ids[64][STORE_ID_MAX];
        struct { char job[STORE_ID_MAX]; int seq; } unsaved[64];
        size_t n = 0, nu = 0;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_jobs; i++) {
                CJob *j = c->jobs[i];
                for (size_t k = 0; k < j->n && nu < 64; k++)
                        if (j->subs[k].end_unsaved) {
                                snprintf(unsaved[nu].job, STORE_ID_MAX, "%s", j->j.id);
                                unsaved[nu++].seq = j->subs[k].t.seq;
                        }
        }
        lock_release(&c->lock);
        for (size_t i = 0; i < nu; i++)
                (void) coord_sub_persist(c, unsaved[i].job, unsaved[i].seq);

        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_jobs && n < 64; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != COORD_JOB_PHASE_RUNNING && j->j.phase != COORD_JOB_PHASE_VERIFYING)
                        continue;
                bool all = true;
                for (size_t k = 0; k < j->n; k++)
                        all &= coord_subtask_phase_is_final(j->subs[k].t.phase) && !j->subs[k].end_unsaved;
                if (all) {
                        if (j->j.phase != COORD_JOB_PHASE_VERIFYING) {
                                j->j.phase = COORD_JOB_PHASE_VERIFYING;
                                coord_job_bump_locked(c, j);
                        }
                        snprintf(ids[n++], STORE_ID_MAX, "%s", j->j.id);
                }
        }
        lock_release(&c->lock);
        for (size_t i = 0; i < n; i++)
                verify_job(c, ids[i]);
        if (n)
                (void) coord_jobs_prune(c);
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

/* Whether the scheduler may still act before agent call @i of @n (the
 * role, coord-ha.c): when not, it stops at once and says so. */
static bool may_act(Coordinator *c, size_t i, size_t n) {
        if (coord_acting(c))
                return true;
        log_warning("scheduler: not the leader any more: stopping at once (%zu of %zu agent calls of this tick not made)",
                    n - i, n);
        return false;
}

int coord_scheduler_tick(Coordinator *c, bool *ret_freed, bool *ret_finishing) {
        *ret_freed = *ret_finishing = false;
        if (!coord_acting(c))
                return 0; /* a standby (coord-ha.c) decides and calls nothing */
        if (!c->sched_scratch && !(c->sched_scratch = calloc(MAX_ACTIONS, sizeof(Action))))
                return err_set(-ENOMEM, "out of memory");
        Action *acts = c->sched_scratch;
        lock_acquire(&c->lock);
        size_t n = plan_tick_locked(c, acts, MAX_ACTIONS);
        unsigned before = migrating_locked(c, NULL);
        lock_release(&c->lock);
        /* the role is asked again before every call: a start, an abort or a
         * re-tune changes a guest, and a poll may write its end */
        for (size_t i = 0; i < n && !atomic_load(&c->stopping) && may_act(c, i, n); i++) {
                switch (acts[i].kind) {
                case ACT_START:
                        do_start(c, &acts[i]);
                        break;
                case ACT_POLL:
                        do_poll(c, &acts[i]);
                        break;
                case ACT_NOTE:
                        do_note(c, &acts[i]);
                        break;
                case ACT_ABORT:
                        if (agent_link_abort(acts[i].src, acts[i].guest, 30000) < 0)
                                log_fields(LOG_LEVEL_WARNING, LOG_FIELDS(.job = acts[i].job, .guest = acts[i].guest),
                                           "job %s: abort of %s: %s", acts[i].job, acts[i].guest, err_msg());
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
        if (coord_acting(c))
                verify_jobs(c);
        bool finishing;
        lock_acquire(&c->lock);
        *ret_freed = migrating_locked(c, &finishing) < before;
        lock_release(&c->lock);
        *ret_finishing = finishing;
        return 0;
}

#define SCHED_ACTIVE_MS 250    /* between ticks while a job is in the table */
#define SCHED_FINISHING_MS 50  /* while a migration is about to end */
#define SCHED_IDLE_MS 60000    /* the safety net with no job at all */
#define SCHED_ROLE_MS 250      /* with etcd: the role is looked at at least this often */

/* Between ticks the thread waits on coord->changed: a submission, a cancel
 * (every job change bumps it) and coord_stop wake it at once.  With no job
 * in the table nothing else can give it work, so it sleeps until one comes
 * (SCHED_IDLE_MS is a safety net).  With jobs it still ticks every 250 ms,
 * or 50 ms while a migration is about to end: a migration's progress lives
 * in the source agent, which the scheduler polls (GetMigration; agents push
 * nothing to the coordinator), and admission depends on host figures the
 * inventory refreshes without a wake-up. */
void *coord_scheduler_thread(void *arg) {
        Coordinator *c = arg;
        while (!atomic_load(&c->stopping)) {
                bool freed = false, finishing = false;
                /* the role first (coord-ha.c): take over, step down, or
                 * refresh a standby's view; a standby ticks nothing */
                bool acting = coord_ha_step(c);
                if (acting && coord_scheduler_tick(c, &freed, &finishing) < 0)
                        log_error("scheduler: %s", err_msg());
                /* A migration that ended in this tick freed its slots: plan
                 * again at once, so the next one starts within milliseconds
                 * instead of after a tick with the link idle.  While one is
                 * about to end, poll every 50 ms, so its end is seen soon
                 * (docs/performance.md, "Evacuation makespan"). */
                if (freed)
                        continue;
                lock_acquire(&c->lock);
                int64_t ms = !c->n_jobs ? SCHED_IDLE_MS : finishing ? SCHED_FINISHING_MS : SCHED_ACTIVE_MS;
                if (c->cfg.store_kind == COORD_STORE_ETCD && ms > SCHED_ROLE_MS)
                        ms = SCHED_ROLE_MS; /* the role and a standby's view are looked at this often */
                if (!atomic_load(&c->stopping) && !c->role_wake)
                        (void) cond_wait(&c->changed, &c->lock, deadline_in_ms(ms));
                lock_release(&c->lock);
        }
        return NULL;
}
