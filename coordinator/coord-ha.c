/* The coordinator's role: leader or standby (docs/coordinator.md, "Roles";
 * docs/ha.md).
 *
 * With SQLite there is one coordinator and it always leads: nothing here
 * runs and coord_acting() is true.  With etcd, every coordinator opens the
 * same store and campaigns (coord-elect.h); one leads, the others stand by.
 * The scheduler thread carries the role (coord_ha_step() before each
 * tick), so a take-over never races a tick:
 *
 *   - elected: fence the store with the leader key's create_revision
 *     BEFORE any write (store.h, fence), write the configuration's seed
 *     hosts the store does not know, load the hosts from the store (new,
 *     changed, removed), clear the jobs in memory and reload every
 *     unfinished one exactly as a restarted coordinator does
 *     (coord_jobs_reload: migrating sub-tasks reconciled with the agents
 *     by operation id, so nothing is migrated twice); then it acts.
 *   - no longer leading (the election says so, its lease is no longer
 *     safely valid, or the store refused a write with -ESTALE): stop
 *     acting at once, and let the store's view replace the jobs in memory.
 *     A PLANNING job is a submission under way and its submitter's until
 *     stored (coord-priv.h): the clear, the reload and the view leave it.
 *   - standby: every COORD_HA_REFRESH_MS the hosts and unfinished jobs
 *     are read from the store; a job whose records changed gets a new
 *     generation (WatchJob streams move), a job that left the unfinished
 *     list is read once more and kept among the ended ones.  Reads of the
 *     API are served from this view and the store; writes are refused by
 *     coord-rpc.c with the leader's address.
 *
 * The scheduler asks coord_acting() at every tick and before each agent
 * call that changes something; it is false from the moment the election's
 * lease is no longer valid by the monotonic clock (with the election's
 * margin), so a leader cut from etcd stops before a standby can be
 * elected.  The fence is the second line: c->store wraps the etcd store
 * and any write it refuses with -ESTALE marks the term fenced (never
 * retried as an ordinary failure).
 *
 * Locking: the role's flags are atomics; c->leader and c->role_wake are
 * under coord->lock; no election or store call is made under it.  The
 * election is read by coord_acting() from any thread; coord_stop() turns
 * `resigned` on and waits for el_users to drain before election_stop(),
 * so no thread is inside the election when it is freed.
 */
#define _GNU_SOURCE
#include "coord-priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord-elect.h"
#include "coord-etcd-config.h"
#include "coord-metrics.h"
#include "err.h"
#include "etcd.h"
#include "log.h"
#include "notify.h"

#define COORD_HA_REFRESH_MS 1000

_Static_assert(COORD_ETCD_MAX_ENDPOINTS == ETCD_MAX_ENDPOINTS, "coord.h and etcd.h disagree on endpoints");

/* A build without the etcd client (coordinator/meson.build, have_etcd)
 * refuses an etcd store at start; the rest of this file is the same. */
#if !DROVER_HAVE_ETCD
static int no_etcd(void) {
        return err_set(-EPROTONOSUPPORT, "this drover-coordinator was built without the etcd client");
}
#define etcd_open(o, ret) ((void) (o), (void) (ret), no_etcd())
#define store_etcd_open(e, p, ret) ((void) (e), (void) (p), (void) (ret), no_etcd())
#define election_start(o, ret) ((void) (o), (void) (ret), no_etcd())
#define election_leading(el, key, rev) ((void) (el), (void) (key), (void) (rev), false)
#define election_leader(el, buf, size) ((void) (el), (void) (buf), (void) (size))
#define election_stop(el) ((void) (el))
#define etcd_close(e) ((void) (e))
#endif

/* ---- the fence watch: c->store over the etcd store --------------------- */

typedef struct FenceWatch {
        Store base;
        Store *inner;     /* immutable */
        Coordinator *c;   /* immutable */
} FenceWatch;

static Store *inner_of(Store *s) {
        return ((FenceWatch *) s)->inner;
}

/* A write's result: -ESTALE means the store is fenced against this term
 * (counted: drover_store_fenced_writes_total). */
static int watched(Store *s, int r) {
        if (r == -ESTALE) {
                char why[ERR_MSG_MAX];
                coord_metrics_fenced_write();
                snprintf(why, sizeof(why), "the store refused a write: %s", err_msg());
                coord_ha_fenced(((FenceWatch *) s)->c, why);
                err_set(-ESTALE, "%s", why);
        }
        return r;
}

static void fw_close(Store *s) {
        free(s); /* the inner store is closed by coord_ha_close */
}
static int fw_host_put(Store *s, const StoreHost *h) {
        return watched(s, inner_of(s)->ops->host_put(inner_of(s), h));
}
static int fw_host_delete(Store *s, const char *name) {
        return watched(s, inner_of(s)->ops->host_delete(inner_of(s), name));
}
static int fw_host_list(Store *s, StoreHost **ret, size_t *ret_n) {
        return inner_of(s)->ops->host_list(inner_of(s), ret, ret_n);
}
static int fw_job_create(Store *s, const StoreJob *j, const StoreSubtask *subs, size_t n) {
        return watched(s, inner_of(s)->ops->job_create(inner_of(s), j, subs, n));
}
static int fw_job_update(Store *s, const StoreJob *j) {
        return watched(s, inner_of(s)->ops->job_update(inner_of(s), j));
}
static int fw_job_get(Store *s, const char *id, StoreJob *ret) {
        return inner_of(s)->ops->job_get(inner_of(s), id, ret);
}
static int fw_job_list(Store *s, bool unfinished, size_t limit, StoreJob **ret, size_t *ret_n) {
        return inner_of(s)->ops->job_list(inner_of(s), unfinished, limit, ret, ret_n);
}
static int fw_job_prune(Store *s, uint64_t before, size_t keep) {
        return watched(s, inner_of(s)->ops->job_prune(inner_of(s), before, keep));
}
static int fw_subtask_update(Store *s, const StoreSubtask *t) {
        return watched(s, inner_of(s)->ops->subtask_update(inner_of(s), t));
}
static int fw_subtask_list(Store *s, const char *id, StoreSubtask **ret, size_t *ret_n) {
        return inner_of(s)->ops->subtask_list(inner_of(s), id, ret, ret_n);
}
static int fw_event_add(Store *s, const char *id, uint64_t t, const char *text) {
        return watched(s, inner_of(s)->ops->event_add(inner_of(s), id, t, text));
}
static int fw_event_list(Store *s, const char *id, StoreEvent **ret, size_t *ret_n) {
        return inner_of(s)->ops->event_list(inner_of(s), id, ret, ret_n);
}
static int fw_fence(Store *s, const char *key, int64_t rev) {
        return inner_of(s)->ops->fence(inner_of(s), key, rev);
}

static const StoreOps fence_watch_ops = {
        .close = fw_close, .host_put = fw_host_put, .host_delete = fw_host_delete, .host_list = fw_host_list,
        .job_create = fw_job_create, .job_update = fw_job_update, .job_get = fw_job_get, .job_list = fw_job_list,
        .job_prune = fw_job_prune, .subtask_update = fw_subtask_update, .subtask_list = fw_subtask_list,
        .event_add = fw_event_add, .event_list = fw_event_list, .fence = fw_fence,
};

int coord_ha_fence_watch(Coordinator *c, Store *inner, Store **ret) {
        FenceWatch *fw = calloc(1, sizeof(*fw));
        if (!fw)
                return err_set(-ENOMEM, "out of memory");
        *fw = (FenceWatch){ .base.ops = &fence_watch_ops, .inner = inner, .c = c };
        *ret = &fw->base;
        return 0;
}

/* ---- the inventory and the jobs from the store ---------------------------- */

static bool host_same(const StoreHost *a, const StoreHost *b) {
        return strcmp(a->address, b->address) == 0 && strcmp(a->migration_address, b->migration_address) == 0 &&
               a->state == b->state && a->memory_mib == b->memory_mib && a->vcpus == b->vcpus &&
               strcmp(a->cpu_model, b->cpu_model) == 0 && a->link_bytes_per_s == b->link_bytes_per_s &&
               a->max_outgoing == b->max_outgoing && a->max_incoming == b->max_incoming;
}

/* Make the host table the store's list: hosts added, changed (a new
 * address gets a new record and link, the old one flagged removed), or
 * removed since.  No lock held. */
static int hosts_sync(Coordinator *c) {
        StoreHost *hs = NULL;
        size_t n = 0;
        int r = c->store->ops->host_list(c->store, &hs, &n);
        if (r < 0)
                return r;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < n; i++) {
                CHost *h = coord_host_find_locked(c, hs[i].name);
                if (h && strcmp(h->h.address, hs[i].address) != 0) {
                        h->removed = true; /* a new address: a new record with its own link */
                        h = NULL;
                }
                if (!h) {
                        if (coord_host_add_locked(c, &hs[i]) < 0)
                                log_warning("host %s from the store not added: %s", hs[i].name, err_msg());
                } else if (!host_same(&h->h, &hs[i]))
                        h->h = hs[i];
        }
        for (size_t k = 0; k < c->n_hosts; k++) {
                bool listed = false;
                for (size_t i = 0; i < n && !listed; i++)
                        listed = strcmp(c->hosts[k]->h.name, hs[i].name) == 0;
                if (!listed)
                        c->hosts[k]->removed = true;
        }
        lock_release(&c->lock);
        free(hs);
        return 0;
}

/* Whether job @j holds the store's records @rec and @subs. */
static bool job_same(const CJob *j, const StoreJob *rec, const StoreSubtask *subs, size_t n) {
        if (memcmp(&j->j, rec, sizeof(*rec)) != 0 || j->n != n)
                return false;
        for (size_t k = 0; k < n; k++)
                if (memcmp(&j->subs[k].t, &subs[k], sizeof(subs[k])) != 0)
                        return false;
        return true;
}

/* Whether the job in memory is a submission under way: PLANNING, its
 * submitter's until stored (coord-priv.h), never replaced or shelved
 * here.  coord->lock held. */
static bool submitters_locked(Coordinator *c, const CJob *j) {
        lock_assert_held(&c->lock);
        return j && j->j.phase == COORD_JOB_PHASE_PLANNING;
}

/* Put the store's records of one job into the table: replace the record
 * in memory when they differ (a new generation), add it when new, and
 * shelve it among the ended ones when @rec has ended.  A submission under
 * way is left to its submitter (the next refresh reads it).  No lock
 * held. */
static int job_sync_one(Coordinator *c, const StoreJob *rec, const StoreSubtask *subs, size_t n) {
        lock_acquire(&c->lock);
        CJob *old = coord_job_find_locked(c, rec->id);
        bool same = old && (job_same(old, rec, subs, n) || submitters_locked(c, old));
        lock_release(&c->lock);
        if (same)
                return 0;
        CJob *j = coord_job_from_store(c, rec, subs, n, false);
        if (!j)
                return err_set(-ENOMEM, "out of memory");
        int r = 0;
        lock_acquire(&c->lock);
        if ((old = coord_job_find_locked(c, rec->id)) && submitters_locked(c, old)) {
                coord_job_free(j);
                old = NULL;
        } else if (old) {
                /* the record is replaced in place: its readers find it by id */
                for (size_t i = 0; i < c->n_jobs; i++)
                        if (c->jobs[i] == old) {
                                c->jobs[i] = j;
                                j = NULL;
                        }
                for (size_t i = 0; j && i < COORD_ENDED_KEEP; i++)
                        if (c->ended[i] == old) {
                                c->ended[i] = j;
                                j = NULL;
                        }
                coord_job_free(old);
                old = coord_job_find_locked(c, rec->id);
        } else {
                r = coord_job_add_locked(c, j);
                old = r < 0 ? NULL : j;
                if (r < 0)
                        coord_job_free(j);
        }
        if (old && coord_job_phase_is_final(old->j.phase))
                coord_job_shelve_locked(c, old);
        cond_broadcast(&c->changed);
        lock_release(&c->lock);
        return r;
}

/* A standby's view: the store's hosts and unfinished jobs replace those in
 * memory; a job no longer unfinished is read once more (its end) and kept
 * among the ended ones.  No lock held. */
static int view_refresh(Coordinator *c) {
        StoreJob *jobs = NULL;
        size_t n = 0;
        int r = hosts_sync(c);
        if (r >= 0)
                r = c->store->ops->job_list(c->store, true, 10000, &jobs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                StoreSubtask *subs = NULL;
                size_t ns = 0;
                if ((r = c->store->ops->subtask_list(c->store, jobs[i].id, &subs, &ns)) >= 0)
                        r = job_sync_one(c, &jobs[i], subs, ns);
                free(subs);
        }
        /* jobs in memory the store no longer lists as unfinished: ended */
        char (*gone)[STORE_ID_MAX] = NULL;
        size_t ng = 0;
        lock_acquire(&c->lock);
        if (r >= 0 && c->n_jobs && (gone = calloc(c->n_jobs, sizeof(*gone))))
                for (size_t i = 0; i < c->n_jobs; i++) {
                        bool listed = false;
                        for (size_t k = 0; k < n && !listed; k++)
                                listed = strcmp(jobs[k].id, c->jobs[i]->j.id) == 0;
                        if (!listed && !submitters_locked(c, c->jobs[i]))
                                snprintf(gone[ng++], STORE_ID_MAX, "%s", c->jobs[i]->j.id);
                }
        lock_release(&c->lock);
        free(jobs);
        for (size_t i = 0; i < ng && r >= 0; i++) {
                StoreJob rec;
                StoreSubtask *subs = NULL;
                size_t ns = 0;
                int q = c->store->ops->job_get(c->store, gone[i], &rec);
                if (q == -ENOENT) { /* pruned: gone from memory too */
                        lock_acquire(&c->lock);
                        CJob *j = coord_job_find_locked(c, gone[i]);
                        if (j && !submitters_locked(c, j))
                                coord_job_shelve_locked(c, j);
                        lock_release(&c->lock);
                        continue;
                }
                if (q >= 0 && (q = c->store->ops->subtask_list(c->store, gone[i], &subs, &ns)) >= 0)
                        q = job_sync_one(c, &rec, subs, ns);
                free(subs);
                r = q;
        }
        free(gone);
        return r;
}

/* ---- roles ------------------------------------------------------------------ */

int coord_ha_open(Coordinator *c) {
        const CoordConfig *cfg = &c->cfg;
        RpcTls tls = { .cert_file = cfg->etcd_cert, .key_file = cfg->etcd_key, .ca_file = cfg->etcd_ca };
        EtcdOptions o = { .endpoints = cfg->etcd_endpoints, .tls = cfg->etcd_cert[0] ? &tls : NULL };
        int r = etcd_open(&o, &c->etcd);
        if (r < 0)
                return err_prefix(r, "etcd %s", cfg->etcd_endpoints);
        if ((r = store_etcd_open(c->etcd, cfg->etcd_prefix, &c->inner)) < 0)
                return err_prefix(r, "etcd store %s", cfg->etcd_endpoints);
        if ((r = coord_ha_fence_watch(c, c->inner, &c->store)) < 0)
                return r;
        if (hosts_sync(c) < 0) /* a standby's refresh reads them again every second */
                log_warning("standby: the hosts not read from the store yet: %s", err_msg());
        return 0;
}

/* The election changed (its thread): the scheduler thread looks at once. */
static void election_changed(void *userdata) {
        Coordinator *c = userdata;
        lock_acquire(&c->lock);
        c->role_wake = true;
        cond_broadcast(&c->changed);
        lock_release(&c->lock);
}

int coord_ha_start(Coordinator *c) {
        if (c->cfg.store_kind != COORD_STORE_ETCD)
                return 0;
        int r = view_refresh(c);
        if (r < 0)
                log_warning("standby: the store's view not read yet: %s", err_msg());
        ElectionOptions o = { .etcd = c->etcd, .prefix = c->cfg.etcd_prefix, .id = c->cfg.advertise,
                              .ttl_s = c->cfg.etcd_lease_ttl_s, .changed = election_changed, .userdata = c };
        if ((r = election_start(&o, &c->el)) < 0)
                return err_prefix(r, "leader election");
        log_info("standby: campaigning for the lead (etcd %s, prefix %s, lease %u s, advertised as %s)",
                 c->cfg.etcd_endpoints, c->cfg.etcd_prefix, c->cfg.etcd_lease_ttl_s, c->cfg.advertise);
        notify_status("standby, campaigning");
        return 0;
}

/* Whether the election says this process leads; the fence's key and
 * revision when @key is not NULL.  Safe against coord_ha_resign(). */
static bool election_says(Coordinator *c, char *key, int64_t *ret_rev) {
        bool leading = false;
        atomic_fetch_add(&c->el_users, 1);
        if (!atomic_load(&c->resigned) && c->el)
                leading = election_leading(c->el, key, ret_rev);
        atomic_fetch_sub(&c->el_users, 1);
        return leading;
}

bool coord_acting(Coordinator *c) {
        if (c->cfg.store_kind != COORD_STORE_ETCD)
                return true;
        if (!atomic_load(&c->acting) || atomic_load(&c->fenced))
                return false;
        int64_t rev = 0;
        return election_says(c, NULL, &rev) && rev == atomic_load(&c->term);
}

bool coord_leading(Coordinator *c, char *buf, size_t size) {
        if (coord_acting(c))
                return true;
        lock_acquire(&c->lock);
        bool self = strcmp(c->leader, c->cfg.advertise) == 0;
        snprintf(buf, size, "%s", self ? "" : c->leader);
        lock_release(&c->lock);
        return false;
}

void coord_ha_fenced(Coordinator *c, const char *why) {
        if (c->cfg.store_kind != COORD_STORE_ETCD)
                return;
        if (!atomic_exchange(&c->fenced, true) && atomic_load(&c->acting))
                log_warning("leader: stopping at once: %s", why);
        election_changed(c);
}

/* The leader's address as the election knows it now, into c->leader. */
static void leader_note(Coordinator *c) {
        char now[sizeof(c->leader)] = "";
        atomic_fetch_add(&c->el_users, 1);
        if (!atomic_load(&c->resigned) && c->el)
                election_leader(c->el, now, sizeof(now));
        atomic_fetch_sub(&c->el_users, 1);
        lock_acquire(&c->lock);
        bool moved = strcmp(now, c->leader) != 0;
        if (moved)
                snprintf(c->leader, sizeof(c->leader), "%s", now);
        lock_release(&c->lock);
        if (moved && now[0]) {
                coord_metrics_leader_changed();
                if (strcmp(now, c->cfg.advertise) != 0)
                        log_info("standby: the leader is %s", now);
                notify_status("%s", strcmp(now, c->cfg.advertise) == 0 ? "leading" : "standby");
        }
}

/* Become the leader of term @rev: fence first, then the hosts, then the
 * jobs as after a restart.  On failure nothing acts (the next step tries
 * again while still elected). */
static int take_over(Coordinator *c, const char *key, int64_t rev) {
        int r = c->inner->ops->fence(c->inner, key, rev);
        if (r < 0)
                return err_prefix(r, "fence");
        atomic_store(&c->fenced, false);
        StoreHost *hs = NULL;
        size_t n = 0;
        if ((r = c->store->ops->host_list(c->store, &hs, &n)) < 0)
                return r;
        for (size_t i = 0; i < c->cfg.n_hosts && r >= 0; i++) {
                bool known = false;
                for (size_t k = 0; k < n && !known; k++)
                        known = strcmp(hs[k].name, c->cfg.hosts[i].name) == 0;
                if (!known)
                        r = c->store->ops->host_put(c->store, &c->cfg.hosts[i]);
        }
        free(hs);
        if (r < 0 || (r = hosts_sync(c)) < 0)
                return r;
        lock_acquire(&c->lock);
        coord_jobs_clear_locked(c);
        lock_release(&c->lock);
        if ((r = coord_jobs_reload(c, "new leader")) < 0) {
                lock_acquire(&c->lock);
                coord_jobs_clear_locked(c);
                lock_release(&c->lock);
                return r;
        }
        atomic_store(&c->term, rev);
        atomic_store(&c->acting, true);
        (void) coord_jobs_prune(c);
        log_info("leading: elected (key %s, revision %lld); %d unfinished jobs reloaded and reconciled with the agents",
                 key, (long long) rev, r);
        notify_status("leading");
        return 0;
}

/* Stop acting (@why) and read the store's view in place of the jobs. */
static void step_down(Coordinator *c, const char *why) {
        atomic_store(&c->acting, false);
        lock_acquire(&c->lock);
        coord_jobs_clear_locked(c);
        char leader[sizeof(c->leader)];
        snprintf(leader, sizeof(leader), "%s", c->leader);
        lock_release(&c->lock);
        log_warning("standby: %s; the scheduler stopped acting%s%s", why, leader[0] ? "; the leader is " : "", leader);
        notify_status("standby, leader at %s", leader[0] ? leader : "(none yet)");
        c->refreshed_ms = 0;
}

bool coord_ha_step(Coordinator *c) {
        if (c->cfg.store_kind != COORD_STORE_ETCD)
                return true;
        char key[ELECTION_KEY_MAX] = "";
        int64_t rev = 0;
        lock_acquire(&c->lock);
        c->role_wake = false;
        lock_release(&c->lock);
        bool elected = election_says(c, key, &rev);
        leader_note(c);
        bool acting = atomic_load(&c->acting);
        if (acting && (!elected || rev != atomic_load(&c->term) || atomic_load(&c->fenced)))
                step_down(c, !elected ? "the election's lease is no longer valid (lost or not renewed in time)"
                             : atomic_load(&c->fenced) ? "the store's fence refused a write"
                                                       : "elected again under a new key");
        if (elected && !atomic_load(&c->acting) && !atomic_load(&c->stopping)) {
                int r = take_over(c, key, rev);
                if (r < 0 && r != -ESTALE)
                        log_error("leader: take-over failed, tried again: %s", err_msg());
                if (r >= 0)
                        return coord_acting(c);
        }
        if (!atomic_load(&c->acting) && coord_now_ms() - c->refreshed_ms >= COORD_HA_REFRESH_MS) {
                if (view_refresh(c) < 0)
                        log_warning("standby: the store's view not refreshed: %s", err_msg());
                c->refreshed_ms = coord_now_ms();
        }
        return coord_acting(c);
}

void coord_ha_resign(Coordinator *c) {
        if (!c->el || atomic_exchange(&c->resigned, true))
                return;
        bool was = atomic_exchange(&c->acting, false);
        while (atomic_load(&c->el_users) > 0)
                nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
        election_stop(c->el); /* revokes the lease */
        c->el = NULL;
        if (was)
                log_info("leader: resigned (the lease is revoked: a standby takes over now)");
}

void coord_ha_close(Coordinator *c) {
        coord_ha_resign(c);
        store_close(c->inner);
        c->inner = NULL;
        etcd_close(c->etcd);
        c->etcd = NULL;
}
