/* Leader election of drover-coordinators on etcd (coord-elect.h, docs/ha.md).
 *
 * One thread per Election runs the campaign as a small state machine, one
 * step per turn of its loop: give up a lease whose validity ran out, revoke
 * a lease given up earlier (its key would stay ahead of ours), grant a
 * lease, put our key PREFIX/leader/<lease hex> under it (Txn: created only
 * if absent), read every key under PREFIX/leader/ (the lowest
 * create_revision leads; its value is the leader's id), then wait on a watch
 * of that prefix until the next refresh is due.  A deletion of the key just
 * before ours (etcd's rule: no herd, only our successor looks again) or of
 * the leader's key (so that every standby knows the new leader) makes it
 * read again; a deletion of our own key means the lease is gone.  Refreshes
 * go every ttl/6 on one LeaseKeepAlive stream.
 *
 * The margins, and why a leader stops before anyone else can be elected.
 * Let s be the moment (monotonic clock) a refresh was sent and etcd
 * confirmed it with TTL T.  etcd received it at r >= s and expires the lease
 * no earlier than r + T on its own clock; only then is our key deleted, and
 * only after that deletion can another candidate's key become the lowest.
 * This process acts only while now < s + T - M, with the margin
 * M = max(T/3, 1 s), so it stops at least M before the earliest expiry.  M
 * covers what the argument leaves out: the two clocks' rates over T (ppm,
 * nothing next to a second), a new etcd leader (which only extends leases),
 * the time between election_leading() and the write it allows (a write
 * that lands late is still refused by the store's fence: our key with its
 * create_revision must exist), and this thread being descheduled.  The
 * moment is checked on every call of election_leading(), under the lock,
 * so it holds even while this thread is blocked in an etcd call; the
 * thread itself wakes at that moment (every wait and every call's deadline
 * stops there) to tell `changed` and log it.
 *
 * Opening a stream (etcd_keepalive_open, etcd_watch_open: a connection,
 * then etcd's confirmation of a watch) takes the same deadline as a call,
 * so no wait of this thread passes valid-until.
 *
 * A lease whose validity ran out is given up for good, even if etcd later
 * shows it still alive (a single member restarted keeps its leases): it is
 * revoked as soon as etcd answers, and the candidate starts again with a
 * new lease and a new key, so a new create_revision, so the fence a
 * deposed leader might still hold stays dead.
 *
 * Threads and lock: el->lock (class "election") is a leaf; it guards what
 * other threads read (leading, key, revision, valid-until, leader, the
 * stop flag, the watch for cancelling) and is never held across an etcd
 * call or the `changed` callback.  `changed` runs on this thread only,
 * never once election_stop() has begun (one already running ends before
 * election_stop() returns).  docs/threading.md lists the lock and the
 * thread.
 */
#include "coord-elect.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "err.h"
#include "etcd.h"
#include "lock.h"
#include "log.h"

#define ELECTION_DEFAULT_TTL_S 3
#define ELECTION_MAX_TTL_S 3600
#define ELECTION_BACKOFF_MS 250      /* between attempts while etcd does not answer */
#define ELECTION_RESIGN_MS 1000      /* the revoke at stop */

static LockClass election_lock_class = LOCK_CLASS_INIT("election");

/* The lock guards the state other threads read: what election_leading() and
 * election_leader() return, the stop flag and the open watch (so that
 * election_stop() can cancel it while the thread is blocked in it). */
struct Election {
        Etcd *etcd;                      /* immutable */
        char prefix[ELECTION_KEY_MAX - 16]; /* immutable: "PREFIX/leader/"; a lease id's 16 hex digits follow */
        char id[ELECTION_ID_MAX];        /* immutable */
        int64_t ttl_s;                   /* immutable */
        uint64_t margin_ns;              /* immutable: max(ttl/3, 1 s) */
        uint64_t refresh_ns;             /* immutable: ttl/6 */
        int64_t call_ms;                 /* immutable: an etcd call's longest deadline */
        void (*changed)(void *userdata); /* immutable */
        void *userdata;                  /* immutable */
        pthread_t thread;                /* immutable after start */

        Lock lock;
        Cond cond;                       /* on lock: stop, end of a cancel */
        bool stopping;                   /* lock: el->lock */
        bool elected;                    /* lock: el->lock; our key is the lowest */
        char key[ELECTION_KEY_MAX];      /* lock: el->lock; ours, "" before the campaign */
        int64_t create_revision;         /* lock: el->lock */
        uint64_t valid_until_ns;         /* lock: el->lock; 0 without a lease */
        char leader[ELECTION_ID_MAX];    /* lock: el->lock; "" unknown */
        int64_t lease;                   /* lock: el->lock; for the revoke at stop */
        int64_t revoked;                 /* lock: el->lock; the lease election_stop() revoked */
        EtcdWatch *watch;                /* lock: el->lock; freed by the thread only */
        bool cancelling;                 /* lock: el->lock; election_stop() is cancelling watch */
};

/* The election thread's own state (no lock: nobody else sees it). */
typedef struct Campaign {
        int64_t lease;                   /* 0: none */
        int64_t stale_lease;             /* given up; revoke before campaigning again */
        int64_t ttl_s;                   /* as etcd granted it */
        uint64_t confirmed_ns;           /* send time of the last refresh etcd confirmed */
        uint64_t valid_until_ns;         /* confirmed + TTL - margin */
        uint64_t next_refresh_ns;
        EtcdKeepAlive *ka;
        char key[ELECTION_KEY_MAX];      /* "" before the campaign */
        int64_t create_revision;
        bool checked;                    /* the keys were read since the last change */
        char pred_key[ELECTION_KEY_MAX]; /* the key just before ours, "" when we lead */
        char leader_key[ELECTION_KEY_MAX];
        EtcdWatch *watch;                /* the same as el->watch */
        bool told_leading;               /* what `changed` last reported */
        char told_leader[ELECTION_ID_MAX];
} Campaign;

static void copy_str(char *dst, size_t size, const char *src, size_t len) {
        if (len >= size)
                len = size - 1;
        memcpy(dst, src, len);
        dst[len] = 0;
}

static double ns_to_s(int64_t ns) {
        return (double) ns / 1e9;
}

static bool is_stopping(Election *el) {
        lock_acquire(&el->lock);
        bool s = el->stopping;
        lock_release(&el->lock);
        return s;
}

/* The deadline of an etcd call: the usual one, but never past the moment
 * the lease's validity runs out (the thread must be free then). */
static int64_t call_timeout_ms(Election *el, const Campaign *c) {
        int64_t ms = el->call_ms;
        if (c->lease) {
                uint64_t now = now_ns();
                int64_t left = c->valid_until_ns > now
                                       ? (int64_t) ((c->valid_until_ns - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC)
                                       : 1;
                ms = MIN(ms, MAX(left, 1));
        }
        return ms;
}

/* Wait on el->cond until @until_ns, the end of the lease's validity, or
 * the stop. */
static void pause_until(Election *el, const Campaign *c, uint64_t until_ns) {
        if (c->lease && c->valid_until_ns > now_ns())
                until_ns = MIN(until_ns, c->valid_until_ns);
        lock_acquire(&el->lock);
        while (!el->stopping && now_ns() < until_ns)
                if (cond_wait(&el->cond, &el->lock, (Deadline){ .at_ns = until_ns }) == -ETIMEDOUT)
                        break;
        lock_release(&el->lock);
}

static void publish_validity(Election *el, const Campaign *c) {
        lock_acquire(&el->lock);
        el->valid_until_ns = c->valid_until_ns;
        el->lease = c->lease;
        lock_release(&el->lock);
}

static void watch_drop(Election *el, Campaign *c) {
        if (!c->watch)
                return;
        lock_acquire(&el->lock);
        el->watch = NULL;
        while (el->cancelling)
                cond_wait(&el->cond, &el->lock, deadline_in_ms(1000));
        lock_release(&el->lock);
        etcd_watch_free(TAKE_PTR(c->watch));
}

/* Forget the lease, our key and what we knew of the others.  @stale: the
 * lease may still exist on etcd; revoke it before campaigning again. */
static void campaign_reset(Election *el, Campaign *c, bool stale) {
        if (stale && c->lease)
                c->stale_lease = c->lease;
        c->lease = 0;
        c->valid_until_ns = 0;
        c->key[0] = 0;
        c->create_revision = 0;
        c->checked = false;
        c->pred_key[0] = 0;
        c->leader_key[0] = 0;
        if (c->ka)
                etcd_keepalive_close(TAKE_PTR(c->ka));
        watch_drop(el, c);
        lock_acquire(&el->lock);
        el->elected = false;
        el->key[0] = 0;
        el->create_revision = 0;
        el->valid_until_ns = 0;
        el->leader[0] = 0;
        el->lease = 0;
        lock_release(&el->lock);
}

static int grant(Election *el, Campaign *c) {
        int64_t id = 0, ttl = 0;
        uint64_t sent = now_ns();
        int r = etcd_lease_grant(el->etcd, el->ttl_s, el->call_ms, &id, &ttl);
        if (r < 0)
                return err_prefix(r, "granting a lease");
        if (ttl < el->ttl_s || (uint64_t) ttl * NSEC_PER_SEC <= el->margin_ns) {
                (void) etcd_lease_revoke(el->etcd, id, el->call_ms);
                return err_set(-EIO, "etcd granted lease %" PRIx64 " a TTL of %" PRId64 " s, asked %" PRId64 " s",
                               (uint64_t) id, ttl, el->ttl_s);
        }
        c->lease = id;
        c->ttl_s = ttl;
        c->confirmed_ns = sent;
        c->valid_until_ns = sent + (uint64_t) ttl * NSEC_PER_SEC - el->margin_ns;
        c->next_refresh_ns = sent + el->refresh_ns;
        publish_validity(el, c);
        log_debug("election: lease %" PRIx64 " granted, TTL %" PRId64 " s", (uint64_t) id, ttl);
        return 0;
}

/* Put our key under the lease unless it exists (a retry after a timeout
 * may find the first attempt applied), and learn its create_revision. */
static int campaign(Election *el, Campaign *c) {
        char key[ELECTION_KEY_MAX];
        snprintf(key, sizeof(key), "%s%" PRIx64, el->prefix, (uint64_t) c->lease);
        EtcdCmp cmp = { .key = key, .target = ETCD_CMP_CREATE_REVISION, .result = ETCD_CMP_EQUAL, .number = 0 };
        EtcdOp op = { .kind = ETCD_OP_PUT, .key = key, .value = el->id, .value_len = strlen(el->id),
                      .lease = c->lease };
        int64_t rev = 0;
        int r = etcd_txn(el->etcd, &cmp, 1, &op, 1, call_timeout_ms(el, c), &rev);
        if (r == -ENOENT) {
                log_warning("election: lease %" PRIx64 " is gone before its key was put; campaigning again",
                            (uint64_t) c->lease);
                campaign_reset(el, c, false);
                return 0;
        }
        if (r < 0)
                return err_prefix(r, "putting %s", key);
        if (r == 0) {
                EtcdKv kv = { 0 };
                r = etcd_get(el->etcd, key, call_timeout_ms(el, c), &kv);
                if (r < 0)
                        return err_prefix(r, "reading %s", key);
                bool ours = kv.lease == c->lease;
                rev = kv.create_revision;
                etcd_kv_clear(&kv);
                if (!ours) {
                        campaign_reset(el, c, true);
                        return err_set(-EEXIST, "%s exists under another lease", key);
                }
        }
        snprintf(c->key, sizeof(c->key), "%s", key);
        c->create_revision = rev;
        c->checked = false;
        lock_acquire(&el->lock);
        snprintf(el->key, sizeof(el->key), "%s", key);
        el->create_revision = rev;
        lock_release(&el->lock);
        return 0;
}

static int watch_open(Election *el, Campaign *c, int64_t from_revision) {
        EtcdWatch *w = NULL;
        int r = etcd_watch_open(el->etcd, el->prefix, true, from_revision, call_timeout_ms(el, c), &w);
        if (r < 0)
                return err_prefix(r, "watching %s", el->prefix);
        lock_acquire(&el->lock);
        bool stop = el->stopping;
        if (!stop)
                el->watch = w;
        lock_release(&el->lock);
        if (stop)
                etcd_watch_free(w);
        else
                c->watch = w;
        return 0;
}

/* Read the candidates: who leads, which key is just before ours; then
 * watch for their deletion from the read's revision + 1. */
static int check(Election *el, Campaign *c) {
        EtcdKv *kvs = NULL;
        size_t n = 0;
        int64_t rev = 0;
        int r = etcd_range_prefix(el->etcd, el->prefix, 0, false, call_timeout_ms(el, c), &kvs, &n, &rev);
        if (r < 0)
                return err_prefix(r, "reading %s", el->prefix);
        const EtcdKv *lo = NULL, *mine = NULL, *pred = NULL;
        for (size_t i = 0; i < n; i++) {
                if (!lo || kvs[i].create_revision < lo->create_revision)
                        lo = &kvs[i];
                if (strcmp(kvs[i].key, c->key) == 0)
                        mine = &kvs[i];
        }
        if (mine)
                for (size_t i = 0; i < n; i++)
                        if (kvs[i].create_revision < mine->create_revision &&
                            (!pred || kvs[i].create_revision > pred->create_revision))
                                pred = &kvs[i];
        if (!mine) {
                etcd_kvs_free(kvs, n);
                if (is_stopping(el)) /* election_stop() revoked it */
                        return 0;
                log_warning("election: our key %s is gone; campaigning again with a new lease", c->key);
                campaign_reset(el, c, true);
                return 0;
        }
        snprintf(c->pred_key, sizeof(c->pred_key), "%s", pred ? pred->key : "");
        snprintf(c->leader_key, sizeof(c->leader_key), "%s", lo->key);
        lock_acquire(&el->lock);
        el->elected = lo == mine;
        copy_str(el->leader, sizeof(el->leader), lo->value, lo->value_len);
        lock_release(&el->lock);
        etcd_kvs_free(kvs, n);
        c->checked = true;
        watch_drop(el, c);
        return watch_open(el, c, rev + 1);
}

static int refresh(Election *el, Campaign *c) {
        int r = 0;
        if (!c->ka)
                r = etcd_keepalive_open(el->etcd, call_timeout_ms(el, c), &c->ka);
        uint64_t sent = now_ns();
        int64_t ttl = 0;
        if (r >= 0)
                r = etcd_keepalive_once(c->ka, c->lease, call_timeout_ms(el, c), &ttl);
        if (r == -ENOENT) {
                if (!is_stopping(el)) /* else election_stop() revoked it */
                        log_warning("election: lease %" PRIx64 " is gone (%s); campaigning again",
                                    (uint64_t) c->lease, err_msg());
                campaign_reset(el, c, false);
                return 0;
        }
        if (r < 0 || (uint64_t) ttl * NSEC_PER_SEC <= el->margin_ns) {
                log_debug("election: refresh of lease %" PRIx64 " failed: %s", (uint64_t) c->lease,
                          r < 0 ? err_str(r) : "TTL too short");
                if (c->ka)
                        etcd_keepalive_close(TAKE_PTR(c->ka));
                c->next_refresh_ns = now_ns() + MIN(el->refresh_ns, ELECTION_BACKOFF_MS * NSEC_PER_MSEC);
                return 0;
        }
        c->confirmed_ns = sent;
        c->ttl_s = ttl;
        c->valid_until_ns = MAX(c->valid_until_ns, sent + (uint64_t) ttl * NSEC_PER_SEC - el->margin_ns);
        c->next_refresh_ns = sent + el->refresh_ns;
        publish_validity(el, c);
        return 0;
}

/* Wait for the watch until the next refresh is due (or the validity ends)
 * and act on what it reports. */
static int wait_watch(Election *el, Campaign *c) {
        uint64_t now = now_ns(), until = MIN(c->next_refresh_ns, c->valid_until_ns);
        if (!c->watch) {
                pause_until(el, c, until);
                return 0;
        }
        int64_t ms = until > now ? (int64_t) ((until - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC) : 1;
        EtcdEvent *ev = NULL;
        size_t n = 0;
        int r = etcd_watch_next(c->watch, MAX(ms, 1), &ev, &n);
        if (r == 0 || r == -ECANCELED)
                return 0;
        if (r < 0) {
                log_debug("election: the watch of %s broke: %s", el->prefix, err_str(r));
                watch_drop(el, c);
                c->checked = false;
                return r;
        }
        bool gone = false, again = false;
        for (size_t i = 0; i < n; i++) {
                if (!ev[i].deleted)
                        continue;
                if (strcmp(ev[i].kv.key, c->key) == 0)
                        gone = true;
                else if (strcmp(ev[i].kv.key, c->pred_key) == 0 || strcmp(ev[i].kv.key, c->leader_key) == 0)
                        again = true;
        }
        etcd_events_free(ev, n);
        if (gone && is_stopping(el))
                return 0;
        if (gone) {
                log_warning("election: our key %s was deleted; campaigning again with a new lease", c->key);
                campaign_reset(el, c, true);
        } else if (again)
                c->checked = false;
        return 0;
}

/* When the lease's validity has run out: say so if we led, and give the
 * lease up for good (revoked once etcd answers). */
static void expire(Election *el, Campaign *c) {
        uint64_t now = now_ns();
        if (!c->lease || now < c->valid_until_ns)
                return;
        int64_t since = (int64_t) (now - c->confirmed_ns);
        int64_t left = (int64_t) (c->confirmed_ns + (uint64_t) c->ttl_s * NSEC_PER_SEC) - (int64_t) now;
        if (c->told_leading)
                log_warning("election: lease lost: stopped acting at %.3f s after the last refresh etcd confirmed "
                            "was sent (TTL %" PRId64 " s minus margin %.3f s); etcd cannot expire it for another "
                            "%.3f s",
                            ns_to_s(since), c->ttl_s, ns_to_s((int64_t) el->margin_ns), ns_to_s(left));
        else
                log_info("election: lease %" PRIx64 " not refreshed for %.3f s; giving it up", (uint64_t) c->lease,
                         ns_to_s(since));
        campaign_reset(el, c, true);
}

/* One step of the campaign; < 0 when etcd did not answer (pause). */
static int step(Election *el, Campaign *c) {
        expire(el, c);
        if (c->stale_lease) {
                int r = etcd_lease_revoke(el->etcd, c->stale_lease, el->call_ms);
                if (r == -EAGAIN || r == -ETIMEDOUT)
                        return err_prefix(r, "revoking the lease %" PRIx64 " given up", (uint64_t) c->stale_lease);
                if (r < 0) /* refused for good: it will expire; campaign behind it */
                        log_warning("election: lease %" PRIx64 " given up, not revoked: %s",
                                    (uint64_t) c->stale_lease, err_str(r));
                else
                        log_info("election: lease %" PRIx64 " given up and %s", (uint64_t) c->stale_lease,
                                 r == 0 ? "revoked" : "already gone");
                c->stale_lease = 0;
        }
        if (!c->lease)
                return grant(el, c);
        if (now_ns() >= c->next_refresh_ns)
                return refresh(el, c);
        if (!c->key[0])
                return campaign(el, c);
        if (!c->checked)
                return check(el, c);
        return wait_watch(el, c);
}

/* Report a change of leading or of the leader: the log, then `changed`
 * (no lock held).  Nothing after the stop began. */
static void notify(Election *el, Campaign *c) {
        lock_acquire(&el->lock);
        bool stopping = el->stopping;
        bool leading = el->elected && now_ns() < el->valid_until_ns;
        char leader[ELECTION_ID_MAX], key[ELECTION_KEY_MAX];
        snprintf(leader, sizeof(leader), "%s", el->leader);
        snprintf(key, sizeof(key), "%s", el->key);
        int64_t rev = el->create_revision;
        lock_release(&el->lock);
        if (stopping || (leading == c->told_leading && strcmp(leader, c->told_leader) == 0))
                return;
        if (leading)
                log_info("election: leading (key %s, revision %" PRId64 ")", key, rev);
        else
                log_info("election: standby, leader is %s", leader[0] ? leader : "unknown");
        c->told_leading = leading;
        snprintf(c->told_leader, sizeof(c->told_leader), "%s", leader);
        if (el->changed)
                el->changed(el->userdata);
}

/* The end: revoke what election_stop() did not (a lease granted while it
 * ran, one given up earlier), within ELECTION_RESIGN_MS in all. */
static void resign(Election *el, Campaign *c) {
        Deadline d = deadline_in_ms(ELECTION_RESIGN_MS);
        lock_acquire(&el->lock);
        int64_t revoked = el->revoked;
        lock_release(&el->lock);
        int64_t leases[2] = { c->lease != revoked ? c->lease : 0, c->stale_lease };
        for (size_t i = 0; i < ELEMENTSOF(leases); i++)
                if (leases[i] && !deadline_expired(d))
                        (void) etcd_lease_revoke(el->etcd, leases[i], MAX(deadline_remaining_ms(d), 1));
        if (c->ka)
                etcd_keepalive_close(TAKE_PTR(c->ka));
        watch_drop(el, c);
}

static void *election_thread(void *arg) {
        Election *el = arg;
        Campaign c = { 0 };
        while (!is_stopping(el)) {
                int r = step(el, &c);
                if (r < 0)
                        log_debug("election: %s", err_str(r));
                expire(el, &c);
                notify(el, &c);
                if (r < 0)
                        pause_until(el, &c, now_ns() + ELECTION_BACKOFF_MS * NSEC_PER_MSEC);
        }
        resign(el, &c);
        return NULL;
}

int election_start(const ElectionOptions *o, Election **ret) {
        if (!o || !o->etcd || !o->prefix || !o->id || !ret)
                return err_set(-EINVAL, "election: etcd, prefix and id are required");
        size_t idlen = strlen(o->id);
        if (idlen == 0 || idlen >= ELECTION_ID_MAX)
                return err_set(-EINVAL, "election: the id must have 1 to %d bytes", ELECTION_ID_MAX - 1);
        int64_t ttl = o->ttl_s ? o->ttl_s : ELECTION_DEFAULT_TTL_S;
        if (ttl < 2 || ttl > ELECTION_MAX_TTL_S)
                return err_set(-EINVAL, "election: TTL %" PRId64 " s out of range (2..%d)", ttl, ELECTION_MAX_TTL_S);
        size_t plen = strlen(o->prefix);
        while (plen > 0 && o->prefix[plen - 1] == '/')
                plen--;
        /* PREFIX "/leader/" and up to 16 hex digits. */
        if (plen + strlen("/leader/") >= ELECTION_KEY_MAX - 16)
                return err_set(-EINVAL, "election: prefix %s too long", o->prefix);

        Election *el = calloc(1, sizeof(*el));
        if (!el)
                return err_set(-ENOMEM, "out of memory");
        el->etcd = o->etcd;
        snprintf(el->prefix, sizeof(el->prefix), "%.*s/leader/", (int) plen, o->prefix);
        memcpy(el->id, o->id, idlen + 1);
        el->ttl_s = ttl;
        el->margin_ns = MAX((uint64_t) ttl * NSEC_PER_SEC / 3, NSEC_PER_SEC);
        el->refresh_ns = (uint64_t) ttl * NSEC_PER_SEC / 6;
        el->call_ms = MIN(MAX(ttl * 1000 / 3, 500), 2000);
        el->changed = o->changed;
        el->userdata = o->userdata;
        lock_init(&el->lock, &election_lock_class);
        cond_init(&el->cond);
        int r = pthread_create(&el->thread, NULL, election_thread, el);
        if (r != 0) {
                cond_destroy(&el->cond);
                lock_destroy(&el->lock);
                free(el);
                return err_set(-r, "election: cannot start its thread");
        }
        *ret = el;
        return 0;
}

bool election_leading(Election *el, char *key, int64_t *ret_create_revision) {
        lock_acquire(&el->lock);
        bool leading = !el->stopping && el->elected && now_ns() < el->valid_until_ns;
        if (leading && key)
                snprintf(key, ELECTION_KEY_MAX, "%s", el->key);
        if (leading && ret_create_revision)
                *ret_create_revision = el->create_revision;
        lock_release(&el->lock);
        return leading;
}

uint64_t election_valid_until_ns(Election *el) {
        lock_acquire(&el->lock);
        uint64_t until = el->valid_until_ns;
        bool leading = !el->stopping && el->elected && now_ns() < until;
        lock_release(&el->lock);
        return leading ? until : 0;
}

void election_leader(Election *el, char *buf, size_t size) {
        if (size == 0)
                return;
        lock_acquire(&el->lock);
        snprintf(buf, size, "%s", el->leader);
        lock_release(&el->lock);
}

void election_stop(Election *el) {
        if (!el)
                return;
        /* Stop acting: from here election_leading() is false. */
        lock_acquire(&el->lock);
        el->stopping = true;
        EtcdWatch *w = el->watch;
        el->cancelling = w != NULL;
        int64_t lease = el->lease;
        el->revoked = lease;
        cond_broadcast(&el->cond);
        lock_release(&el->lock);
        if (w) {
                etcd_watch_cancel(w);
                lock_acquire(&el->lock);
                el->cancelling = false;
                cond_broadcast(&el->cond);
                lock_release(&el->lock);
        }
        /* Revoke at once, while the thread may still be in a call, so a
         * standby takes over without waiting for the TTL. */
        if (lease) {
                int r = etcd_lease_revoke(el->etcd, lease, ELECTION_RESIGN_MS);
                if (r < 0 && r != -ENOENT)
                        log_warning("election: resigning, lease %" PRIx64 " not revoked (%s); it expires within %" PRId64
                                    " s",
                                    (uint64_t) lease, err_str(r), el->ttl_s);
                else
                        log_info("election: resigned, lease %" PRIx64 " revoked", (uint64_t) lease);
        }
        pthread_join(el->thread, NULL);
        cond_destroy(&el->cond);
        lock_destroy(&el->lock);
        free(el);
}
