/* The job store on etcd (see store.h): the same records, bounds and errors
 * as SQLite (store-sqlite.c), kept under a key prefix of an etcd v3 cluster
 * through the client of coordinator/etcd.h, so that a standby coordinator
 * can take over with everything the leader committed (docs/ha.md).
 *
 * Layout under PREFIX (no trailing '/'; names and ids are percent-escaped
 * in keys, so "a/b" can never reach into the keys of "a"):
 *     PREFIX/schema                       "1", the layout's version
 *     PREFIX/hosts/<name>                 a StoreHost as JSON
 *     PREFIX/jobs/<id>                    a StoreJob as JSON
 *     PREFIX/subs/<id>/<seq %06d>         a StoreSubtask as JSON
 *     PREFIX/events/<id>/<time %020>-<rev %020>-<n %06>   {time_unix_ms, text}
 * Every value is one JSON object holding every field of its record
 * (store-etcd-codec.c: one table per record type drives both directions).  A value read back
 * is parsed strictly: an unknown or missing member, a wrong type, a string
 * too long for its field, a number out of range, or a record that fails
 * the store's input checks (store-common.c) is -EIO naming the key, never a
 * crash: values come over the network and anyone with access to etcd can
 * write them.  Strings that are not valid UTF-8 are stored with U+FFFD in
 * place of the bad bytes, cut to fit their field (JSON is UTF-8; SQLite
 * keeps the bytes).  Calls that must know a revision or a record first
 * (event_add, job_update, job_create's look for left sub-tasks) make one
 * read before their Txn.
 *
 * Transactions.  Every write is one etcd Txn whose compares make it exact:
 * host_delete and subtask_update compare that the key exists (the -ENOENT
 * cases), event_add that its job exists, job_update the job's mod_revision
 * as read (a changed job is read again, STORE_ETCD_RETRIES times), and
 * job_create that the job key does not exist (create_revision 0: -EEXIST).
 * A job with more sub-tasks than fit one Txn (ETCD_MAX_TXN_OPS operations,
 * etcd's --max-txn-ops) is written in several, and still appears all at
 * once: the sub-tasks go first, in chunks, each chunk guarded by "the job
 * does not exist", and the job key LAST, in the final Txn.  The job key is
 * what makes a job exist: every reader looks up the job before its
 * sub-tasks or events (-ENOENT without it), so a reader sees either no job
 * or the job with all its sub-tasks (etcd reads are linearizable, and the
 * chunks' revisions precede the job key's).  A creation that fails after
 * its first chunk deletes its chunks (guarded the same way); a crash
 * between chunks leaves sub-tasks no reader sees.  So a creation first
 * looks for sub-tasks of its id (one read) and, when some were left,
 * deletes them in a Txn of their own (etcd refuses a Txn that deletes a
 * range and puts keys inside it).  Events are written only while their
 * job exists and deleted with it, so none are ever left.  job_prune
 * deletes each job with its sub-tasks and events in one Txn (the job key
 * first), STORE_ETCD_PRUNE_CHUNK jobs per Txn.  A get is one
 * linearizable range request; a list (hosts, jobs, a job's sub-tasks or
 * events) reads its prefix in pages of STORE_ETCD_PAGE keys, all at the
 * first page's revision (records_read), so no reply nears the client's
 * 4 MiB cap; a list of a job's sub-tasks or events comes after the job's
 * read, as above.
 *
 * Order.  job_list sorts as SQLite does: creation time, then insertion
 * (the job key's create_revision plays SQLite's job_no), newest first;
 * job_prune keeps the newest ended jobs by finish time and insertion.
 * Events sort by time, then by the etcd revision a read saw just before
 * the event was written (later than every write that completed before),
 * then by a counter of this store (calls running at the same time have no
 * order anyway), which is insertion order across coordinators too.
 *
 * Fencing (store.h `fence`): after fence(key, rev) every write Txn carries
 * one more compare, create_revision(key) == rev, the leader's election key.
 * A Txn whose compares fail applied nothing; the store then reads the key
 * and answers -ESTALE "fenced: not the leader" when it is gone or another
 * one, else the failure was one of the call's own compares.  The fence is
 * kept under fence_lock, a leaf lock held only to copy or set it.
 *
 * Errors of etcd pass through (etcd.h): -EAGAIN (no member answered or no
 * quorum) and -ETIMEDOUT (a write's outcome is unknown), with the detail
 * prefixed by what the store was doing; the coordinator treats them as it
 * treats SQLite's -EIO.  Each write Txn's latency is observed in
 * store_commit_histogram(), as SQLite's commits are.
 */
#include "store-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "deadline.h"
#include "err.h"
#include "etcd.h"
#include "store-etcd-codec.h"
#include "fault.h"
#include "json.h"
#include "lock.h"
#include "text.h"

#define STORE_ETCD_SCHEMA_VERSION 1
#define STORE_ETCD_PREFIX_MAX 128
#define STORE_ETCD_KEY_MAX 512
#define STORE_ETCD_RETRIES 5
#define STORE_ETCD_CMPS_MAX 4
#define STORE_ETCD_PRUNE_CHUNK (ETCD_MAX_TXN_OPS / 3)
#define STORE_ETCD_PAGE 500 /* keys per read: far below the client's 4 MiB reply (a record is < 3 KiB) */

static LockClass fence_lock_class = LOCK_CLASS_INIT("store-fence");

/* fence_lock protects the fence (key and revision): a leaf, held only to
 * copy or set them. */
typedef struct EtcdStore {
        Store base;                             /* immutable */
        Etcd *etcd;                             /* immutable; the caller's, thread-safe */
        char prefix[STORE_ETCD_PREFIX_MAX];     /* immutable */
        atomic_uint event_counter;              /* atomic */
        Lock fence_lock;
        char fence_key[STORE_ETCD_KEY_MAX];     /* lock: fence_lock; "" when unfenced */
        int64_t fence_rev;                      /* lock: fence_lock */
} EtcdStore;

static inline EtcdStore *etcd_store(Store *s) {
        return (EtcdStore *) s;
}

/* ---- keys ------------------------------------------------------------- */

typedef struct Key {
        char s[STORE_ETCD_KEY_MAX];
} Key;

/* PREFIX/<dir>/ , PREFIX/<dir>/<name> or PREFIX/<dir>/<name>/<tail>, the
 * name percent-escaped (any byte but [A-Za-z0-9._-]).  Names are checked
 * (at most STORE_NAME_MAX bytes) before, so the key always fits. */
static void key_make(const EtcdStore *s, Key *k, const char *dir, const char *name, const char *tail) {
        size_t n = (size_t) snprintf(k->s, sizeof(k->s), "%s/%s/", s->prefix, dir);
        for (const unsigned char *p = (const unsigned char *) (name ? name : ""); *p; p++) {
                bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                             *p == '.' || *p == '_' || *p == '-';
                n += (size_t) snprintf(k->s + n, sizeof(k->s) - n, plain ? "%c" : "%%%02X", *p);
        }
        if (tail)
                n += (size_t) snprintf(k->s + n, sizeof(k->s) - n, "/%s", tail);
        assert(n < sizeof(k->s));
}

/* -EIO unless @kv is at the key of @name in @dir (a record copied to
 * another key is damaged too). */
static int key_matches(const EtcdStore *s, const EtcdKv *kv, const char *dir, const char *name, const char *what) {
        Key k;
        key_make(s, &k, dir, name, NULL);
        if (strcmp(k.s, kv->key) != 0)
                return err_set(-EIO, "store etcd: record %s is damaged: it holds %s '%s'", kv->key, what, name);
        return 0;
}

/* ---- transactions ------------------------------------------------------- */

/* Whether the fence still holds: 0 when it does, -ESTALE when the key is
 * gone or another one, an etcd error.  Used after a refused Txn. */
static int fence_check(EtcdStore *s, const char *key, int64_t rev) {
        _cleanup_(etcd_kv_clear) EtcdKv kv = { 0 };
        int r = etcd_get(s->etcd, key, 0, &kv);
        if (r == -ENOENT)
                return err_set(-ESTALE, "fenced: not the leader (key %s is gone; this coordinator held "
                               "create_revision %" PRId64 ")", key, rev);
        if (r < 0)
                return err_prefix(r, "store etcd: checking the fence %s", key);
        if (kv.create_revision != rev)
                return err_set(-ESTALE, "fenced: not the leader (key %s has create_revision %" PRId64
                               ", this coordinator held %" PRId64 ")", key, kv.create_revision, rev);
        return 0;
}

/* One write: a Txn of @cmps (at most STORE_ETCD_CMPS_MAX - 1) and the
 * fence's compare, applying @ops.  1 when applied; 0 when one of @cmps
 * failed (nothing applied); -ESTALE when the fence failed; etcd's errors
 * prefixed with @what.  The Txn's latency goes to the commit histogram. */
static int write_txn(EtcdStore *s, const char *what, const EtcdCmp *cmps, size_t n_cmps, const EtcdOp *ops,
                     size_t n_ops) {
        EtcdCmp all[STORE_ETCD_CMPS_MAX];
        char fence_key[STORE_ETCD_KEY_MAX];
        int64_t fence_rev;
        size_t n = 0;
        int r;

        assert(n_cmps < STORE_ETCD_CMPS_MAX && n_ops <= ETCD_MAX_TXN_OPS);
        lock_acquire(&s->fence_lock);
        memcpy(fence_key, s->fence_key, sizeof(fence_key));
        fence_rev = s->fence_rev;
        lock_release(&s->fence_lock);
        if (fence_key[0])
                all[n++] = (EtcdCmp){ .key = fence_key, .target = ETCD_CMP_CREATE_REVISION,
                                      .result = ETCD_CMP_EQUAL, .number = fence_rev };
        for (size_t i = 0; i < n_cmps; i++)
                all[n++] = cmps[i];
        if ((r = fault_hit("store.commit")) < 0)
                return r;

        uint64_t t0 = now_ns();
        r = etcd_txn(s->etcd, all, n, ops, n_ops, 0, NULL);
        store_commit_observe(now_ns() - t0);
        if (r < 0)
                return err_prefix(r, "store etcd: %s", what);
        if (r == 0 && fence_key[0] && (r = fence_check(s, fence_key, fence_rev)) < 0)
                return r;
        return r;
}

static EtcdCmp cmp_exists(const char *key) {
        return (EtcdCmp){ .key = key, .target = ETCD_CMP_CREATE_REVISION, .result = ETCD_CMP_GREATER, .number = 0 };
}

static EtcdCmp cmp_absent(const char *key) {
        return (EtcdCmp){ .key = key, .target = ETCD_CMP_CREATE_REVISION, .result = ETCD_CMP_EQUAL, .number = 0 };
}

static EtcdOp op_put(const char *key, const char *value) {
        return (EtcdOp){ .kind = ETCD_OP_PUT, .key = key, .value = value, .value_len = strlen(value) };
}

static EtcdOp op_delete(const char *key, bool prefix) {
        return (EtcdOp){ .kind = prefix ? ETCD_OP_DELETE_PREFIX : ETCD_OP_DELETE, .key = key };
}

/* Reads, their etcd errors prefixed with @what. */
static int get_key(EtcdStore *s, const char *key, const char *what, EtcdKv *ret) {
        int r = etcd_get(s->etcd, key, 0, ret);
        return r < 0 && r != -ENOENT ? err_prefix(r, "store etcd: %s", what) : r;
}

/* Turns a record into the @elem-byte element at @out (-EIO when damaged). */
typedef int (*RecordDecode)(EtcdStore *s, const EtcdKv *kv, void *out);

/* Read the last @max keys under @prefix (SIZE_MAX: all) and decode them
 * into *ret (malloc'ed, in key order).  The keys come in pages of
 * STORE_ETCD_PAGE, from the last one down, every page at the first one's
 * revision: one consistent view without a reply near the client's
 * message cap.  A compaction past that revision between two pages starts
 * the read again (STORE_ETCD_RETRIES times).  -errno prefixed with @what. */
static int records_read(EtcdStore *s, const char *prefix, size_t max, size_t elem, RecordDecode decode,
                        const char *what, void **ret, size_t *ret_n) {
        int r = -ERANGE;
        for (int attempt = 0; attempt < STORE_ETCD_RETRIES && r == -ERANGE; attempt++) {
                _cleanup_free_ char *arr = calloc(1, elem), *before = NULL;
                size_t n = 0, cap = 1;
                bool more = true;
                EtcdRange q = { .prefix = prefix, .descend = true };
                r = arr ? 0 : err_set(-ENOMEM, "out of memory");
                while (r >= 0 && more && n < max) {
                        EtcdKv *kvs = NULL;
                        size_t got = 0;
                        q.before = before;
                        q.limit = MIN(max - n, (size_t) STORE_ETCD_PAGE);
                        if ((r = etcd_range(s->etcd, &q, 0, &kvs, &got, &q.revision, &more)) < 0)
                                break;
                        if (n + got > cap) {
                                cap = MAX(2 * cap, n + got);
                                char *grown = reallocarray(arr, cap, elem);
                                if (!grown)
                                        r = err_set(-ENOMEM, "out of memory for %zu records", cap);
                                else
                                        arr = grown;
                        }
                        for (size_t i = 0; i < got && r >= 0; i++)
                                r = decode(s, &kvs[i], arr + (n++) * elem);
                        if (r >= 0 && got > 0) {
                                free(before);
                                if (!(before = strdup(kvs[got - 1].key)))
                                        r = err_set(-ENOMEM, "out of memory");
                        }
                        more = more && got > 0;
                        etcd_kvs_free(kvs, got);
                }
                if (r == -ERANGE && n == 0)
                        break; /* not a page after the first */
                if (r < 0)
                        continue;
                /* Read last to first: put them in key order. */
                for (size_t i = 0; i < n / 2; i++)
                        for (size_t b = 0; b < elem; b++) {
                                char t = arr[i * elem + b];
                                arr[i * elem + b] = arr[(n - 1 - i) * elem + b];
                                arr[(n - 1 - i) * elem + b] = t;
                        }
                *ret = TAKE_PTR(arr);
                *ret_n = n;
                return 0;
        }
        return err_prefix(r, "store etcd: %s", what);
}

/* The job @id read (0, *ret and, when @ret_kv, its key-value), or -ENOENT "no job". */
static int job_read(EtcdStore *s, const char *id, StoreJob *ret, EtcdKv *ret_kv) {
        _cleanup_(etcd_kv_clear) EtcdKv kv = { 0 };
        Key k;
        key_make(s, &k, "jobs", id, NULL);
        int r = get_key(s, k.s, "get job", &kv);
        if (r == -ENOENT)
                return err_set(-ENOENT, "no job '%s'", id);
        if (r < 0 || (r = store_etcd_job_decode(&kv, ret)) < 0 || (r = key_matches(s, &kv, "jobs", ret->id, "job")) < 0)
                return r;
        if (ret_kv) {
                *ret_kv = kv;
                kv = (EtcdKv){ 0 };
        }
        return 0;
}

/* ---- hosts -------------------------------------------------------------- */

static int etcd_host_put(Store *base, const StoreHost *h) {
        EtcdStore *s = etcd_store(base);
        _cleanup_free_ char *value = NULL;
        Key k;
        int r = store_check_host(h);
        if (r < 0 || (r = store_etcd_host_encode(h, &value)) < 0)
                return r;
        key_make(s, &k, "hosts", h->name, NULL);
        EtcdOp op = op_put(k.s, value);
        r = write_txn(s, "put host", NULL, 0, &op, 1);
        return r < 0 ? r : 0;
}

static int etcd_host_delete(Store *base, const char *name) {
        EtcdStore *s = etcd_store(base);
        Key k;
        int r = store_check_str("host name", name, STORE_NAME_MAX, true);
        if (r < 0)
                return r;
        key_make(s, &k, "hosts", name, NULL);
        EtcdCmp c = cmp_exists(k.s);
        EtcdOp op = op_delete(k.s, false);
        r = write_txn(s, "delete host", &c, 1, &op, 1);
        if (r == 0)
                return err_set(-ENOENT, "no host '%s'", name);
        return r < 0 ? r : 0;
}

static int host_cmp(const void *a, const void *b) {
        return strcmp(((const StoreHost *) a)->name, ((const StoreHost *) b)->name);
}

static int host_row(EtcdStore *s, const EtcdKv *kv, void *out) {
        StoreHost *h = out;
        int r = store_etcd_host_decode(kv, h);
        return r < 0 ? r : key_matches(s, kv, "hosts", h->name, "host");
}

static int etcd_host_list(Store *base, StoreHost **ret, size_t *ret_n) {
        EtcdStore *s = etcd_store(base);
        StoreHost *hosts = NULL;
        size_t n = 0;
        Key dir;
        int r = store_check_ret(ret, ret_n);
        if (r < 0)
                return r;
        key_make(s, &dir, "hosts", NULL, NULL);
        if ((r = records_read(s, dir.s, SIZE_MAX, sizeof(*hosts), host_row, "list hosts", (void **) &hosts, &n)) < 0)
                return r;
        qsort(hosts, n, sizeof(*hosts), host_cmp); /* by name, as SQLite (keys are escaped) */
        *ret = hosts;
        *ret_n = n;
        return 0;
}

/* ---- jobs --------------------------------------------------------------- */

/* A creation that failed after its first chunk: delete the chunks, while
 * the job still does not exist (best effort; the error of the creation is
 * what the caller sees, and the next creation of the id clears them too). */
static int job_create_undo(EtcdStore *s, const char *job_key, const char *subs_dir, int r) {
        EtcdCmp c = cmp_absent(job_key);
        EtcdOp op = op_delete(subs_dir, true);
        char saved[ERR_MSG_MAX];
        snprintf(saved, sizeof(saved), "%s", err_str(r));
        (void) write_txn(s, "undo an interrupted job creation", &c, 1, &op, 1);
        return err_set(r, "%s", saved);
}

/* The keys and values of a creation: the sub-tasks', then the job's. */
typedef struct CreateKv {
        Key *keys;        /* n_subs + 1, the job's last */
        char **values;    /* n_subs + 1 */
        size_t n;
} CreateKv;

static void create_kv_free(CreateKv *c) {
        for (size_t i = 0; c->values && i < c->n; i++)
                free(c->values[i]);
        free(c->values);
        free(c->keys);
}

static int create_kv_make(EtcdStore *s, const StoreJob *j, const StoreSubtask *subs, size_t n_subs, CreateKv *c) {
        int r = 0;
        c->n = n_subs + 1;
        c->keys = calloc(c->n, sizeof(*c->keys));
        c->values = calloc(c->n, sizeof(*c->values));
        if (!c->keys || !c->values)
                return err_set(-ENOMEM, "out of memory for job '%s'", j->id);
        for (size_t i = 0; i < n_subs && r >= 0; i++) {
                char seq[16];
                snprintf(seq, sizeof(seq), "%06d", subs[i].seq);
                key_make(s, &c->keys[i], "subs", j->id, seq);
                r = store_etcd_sub_encode(&subs[i], &c->values[i]);
        }
        key_make(s, &c->keys[n_subs], "jobs", j->id, NULL);
        return r < 0 ? r : store_etcd_job_encode(j, &c->values[n_subs]);
}

/* Sub-tasks an interrupted creation of @id left (its job does not exist)
 * are deleted before a new creation writes any. */
static int job_create_clear(EtcdStore *s, const char *id, const char *job_key, const char *subs_dir) {
        EtcdKv *kvs = NULL;
        size_t n = 0;
        int r = etcd_range_prefix(s->etcd, subs_dir, 1, true, 0, &kvs, &n, NULL);
        if (r < 0)
                return err_prefix(r, "store etcd: create job (look for sub-tasks left)");
        etcd_kvs_free(kvs, n);
        if (n == 0)
                return 0;
        EtcdCmp c = cmp_absent(job_key);
        EtcdOp op = op_delete(subs_dir, true);
        r = write_txn(s, "create job (delete sub-tasks left)", &c, 1, &op, 1);
        if (r == 0)
                return err_set(-EEXIST, "job '%s' already exists", id);
        return r < 0 ? r : 0;
}

static int etcd_job_create(Store *base, const StoreJob *j, const StoreSubtask *subs, size_t n_subs) {
        EtcdStore *s = etcd_store(base);
        _cleanup_(create_kv_free) CreateKv c = { 0 };
        EtcdOp ops[ETCD_MAX_TXN_OPS];
        Key subs_dir;
        size_t n_ops = 0, next = 0;
        bool first = true;
        int r = store_check_job_create(j, subs, n_subs);
        if (r < 0 || (r = create_kv_make(s, j, subs, n_subs, &c)) < 0)
                return r;
        const char *job_key = c.keys[n_subs].s;
        EtcdCmp absent = cmp_absent(job_key);
        key_make(s, &subs_dir, "subs", j->id, "");
        if ((r = job_create_clear(s, j->id, job_key, subs_dir.s)) < 0)
                return r;

        /* Chunks of sub-tasks, then the last Txn with the job key. */
        while (next < c.n) {
                while (next < c.n && n_ops < ETCD_MAX_TXN_OPS) {
                        ops[n_ops] = op_put(c.keys[next].s, c.values[next]);
                        n_ops++, next++;
                }
                r = write_txn(s, next < c.n ? "create job (sub-tasks)" : "create job", &absent, 1, ops, n_ops);
                if (r == 0)
                        r = err_set(-EEXIST, "job '%s' already exists", j->id);
                if (r < 0)
                        return first || r == -ESTALE ? r : job_create_undo(s, job_key, subs_dir.s, r);
                first = false;
                n_ops = 0;
        }
        return 0;
}

static int etcd_job_update(Store *base, const StoreJob *j) {
        EtcdStore *s = etcd_store(base);
        int r = store_check_job_update(j);
        if (r < 0)
                return r;
        /* Read, change the three fields, write if the job did not change since. */
        for (int attempt = 0; attempt < STORE_ETCD_RETRIES; attempt++) {
                _cleanup_(etcd_kv_clear) EtcdKv kv = { 0 };
                _cleanup_free_ char *value = NULL;
                StoreJob cur;
                if ((r = job_read(s, j->id, &cur, &kv)) < 0)
                        return r;
                cur.phase = j->phase;
                cur.finished_unix_ms = j->finished_unix_ms;
                memcpy(cur.error, j->error, sizeof(cur.error));
                if ((r = store_etcd_job_encode(&cur, &value)) < 0)
                        return r;
                EtcdCmp c = { .key = kv.key, .target = ETCD_CMP_MOD_REVISION, .result = ETCD_CMP_EQUAL,
                              .number = kv.mod_revision };
                EtcdOp op = op_put(kv.key, value);
                if ((r = write_txn(s, "update job", &c, 1, &op, 1)) != 0)
                        return r < 0 ? r : 0;
        }
        return err_set(-EAGAIN, "store etcd: job '%s' changed under every one of %d updates", j->id,
                       STORE_ETCD_RETRIES);
}

static int etcd_job_get(Store *base, const char *id, StoreJob *ret) {
        EtcdStore *s = etcd_store(base);
        StoreJob j;
        int r = store_check_str("job id", id, STORE_ID_MAX, true);
        if (r < 0)
                return r;
        if (!ret)
                return err_set(-EINVAL, "no place for the result");
        if ((r = job_read(s, id, &j, NULL)) < 0)
                return r;
        *ret = j;
        return 0;
}

/* A job as listed: the record and its insertion order (SQLite's job_no). */
typedef struct JobRow {
        StoreJob job;
        int64_t create_revision;
} JobRow;

static int job_row(EtcdStore *s, const EtcdKv *kv, void *out) {
        JobRow *row = out;
        int r = store_etcd_job_decode(kv, &row->job);
        row->create_revision = kv->create_revision;
        return r < 0 ? r : key_matches(s, kv, "jobs", row->job.id, "job");
}

/* Every job, decoded: a malloc'ed array. */
static int jobs_read(EtcdStore *s, const char *what, JobRow **ret, size_t *ret_n) {
        Key dir;
        key_make(s, &dir, "jobs", NULL, NULL);
        return records_read(s, dir.s, SIZE_MAX, sizeof(JobRow), job_row, what, (void **) ret, ret_n);
}

static int cmp_i64_desc(int64_t a, int64_t b) {
        return a < b ? 1 : a > b ? -1 : 0;
}

/* Newest created first, later insertion first among equals (SQLite's
 * ORDER BY created_unix_ms DESC, job_no DESC; times compare signed there). */
static int job_row_by_created(const void *a, const void *b) {
        const JobRow *x = a, *y = b;
        int c = cmp_i64_desc((int64_t) x->job.created_unix_ms, (int64_t) y->job.created_unix_ms);
        return c ? c : cmp_i64_desc(x->create_revision, y->create_revision);
}

/* Latest finished first, later insertion first among equals. */
static int job_row_by_finished(const void *a, const void *b) {
        const JobRow *x = a, *y = b;
        int c = cmp_i64_desc((int64_t) x->job.finished_unix_ms, (int64_t) y->job.finished_unix_ms);
        return c ? c : cmp_i64_desc(x->create_revision, y->create_revision);
}

static bool job_ended(const StoreJob *j) {
        return j->phase == COORD_JOB_PHASE_SUCCEEDED || j->phase == COORD_JOB_PHASE_FAILED ||
               j->phase == COORD_JOB_PHASE_CANCELLED;
}

static int etcd_job_list(Store *base, bool unfinished_only, size_t limit, StoreJob **ret, size_t *ret_n) {
        EtcdStore *s = etcd_store(base);
        _cleanup_free_ JobRow *rows = NULL;
        _cleanup_free_ StoreJob *jobs = NULL;
        size_t n = 0, out = 0;
        int r = store_check_ret(ret, ret_n);
        if (r < 0 || (r = jobs_read(s, "list jobs", &rows, &n)) < 0)
                return r;
        if (limit == 0 || limit > STORE_LIST_MAX)
                limit = STORE_LIST_MAX;
        qsort(rows, n, sizeof(*rows), job_row_by_created);
        if (!(jobs = calloc(n ? MIN(n, limit) : 1, sizeof(*jobs))))
                return err_set(-ENOMEM, "out of memory for %zu jobs", n);
        for (size_t i = 0; i < n && out < limit; i++)
                if (!unfinished_only || !job_ended(&rows[i].job))
                        jobs[out++] = rows[i].job;
        *ret = TAKE_PTR(jobs);
        *ret_n = out;
        return 0;
}

/* Delete @n jobs with their sub-tasks and events, STORE_ETCD_PRUNE_CHUNK
 * per Txn (each job whole within one).  The number deleted, or an error. */
static int jobs_delete(EtcdStore *s, const JobRow *const *del, size_t n) {
        EtcdOp ops[ETCD_MAX_TXN_OPS];
        Key keys[STORE_ETCD_PRUNE_CHUNK][3];
        int r;
        for (size_t at = 0; at < n; at += STORE_ETCD_PRUNE_CHUNK) {
                size_t chunk = MIN(n - at, (size_t) STORE_ETCD_PRUNE_CHUNK), n_ops = 0;
                for (size_t i = 0; i < chunk; i++) {
                        const char *id = del[at + i]->job.id;
                        key_make(s, &keys[i][0], "jobs", id, NULL);
                        key_make(s, &keys[i][1], "subs", id, "");
                        key_make(s, &keys[i][2], "events", id, "");
                        ops[n_ops++] = op_delete(keys[i][0].s, false);
                        ops[n_ops++] = op_delete(keys[i][1].s, true);
                        ops[n_ops++] = op_delete(keys[i][2].s, true);
                }
                if ((r = write_txn(s, "delete ended jobs", NULL, 0, ops, n_ops)) < 0)
                        return r;
        }
        return (int) n;
}

static int etcd_job_prune(Store *base, uint64_t finished_before_unix_ms, size_t keep) {
        EtcdStore *s = etcd_store(base);
        _cleanup_free_ JobRow *rows = NULL;
        _cleanup_free_ const JobRow **del = NULL;
        size_t n = 0, n_ended = 0, n_del = 0;
        int r = store_check_time("retention time", finished_before_unix_ms);
        if (r < 0 || (r = jobs_read(s, "list jobs to delete", &rows, &n)) < 0)
                return r;
        /* The ended ones first, newest finished first; then the rest. */
        for (size_t i = 0; i < n; i++)
                if (job_ended(&rows[i].job)) {
                        JobRow t = rows[n_ended];
                        rows[n_ended++] = rows[i];
                        rows[i] = t;
                }
        qsort(rows, n_ended, sizeof(*rows), job_row_by_finished);
        if (!(del = calloc(n_ended ? n_ended : 1, sizeof(*del))))
                return err_set(-ENOMEM, "out of memory for %zu jobs", n_ended);
        for (size_t i = 0; i < n_ended; i++)
                if ((int64_t) rows[i].job.finished_unix_ms < (int64_t) finished_before_unix_ms || i >= keep)
                        del[n_del++] = &rows[i];
        return jobs_delete(s, del, n_del);
}

/* ---- sub-tasks ---------------------------------------------------------- */

static int etcd_subtask_update(Store *base, const StoreSubtask *t) {
        EtcdStore *s = etcd_store(base);
        _cleanup_free_ char *value = NULL;
        Key jk, k;
        char seq[16];
        int r = store_check_subtask(t);
        if (r < 0 || (r = store_etcd_sub_encode(t, &value)) < 0)
                return r;
        snprintf(seq, sizeof(seq), "%06d", t->seq);
        key_make(s, &jk, "jobs", t->job_id, NULL);
        key_make(s, &k, "subs", t->job_id, seq);
        EtcdCmp c[2] = { cmp_exists(jk.s), cmp_exists(k.s) };
        EtcdOp op = op_put(k.s, value);
        if ((r = write_txn(s, "update sub-task", c, 2, &op, 1)) != 0)
                return r < 0 ? r : 0;
        /* Which one is missing. */
        StoreJob j;
        if ((r = job_read(s, t->job_id, &j, NULL)) < 0)
                return r;
        return err_set(-ENOENT, "job '%s' has no sub-task %d", t->job_id, t->seq);
}

/* The records of @dir (PREFIX/<dir>/<job_id>/...) of an existing job, at
 * most the @max last ones, decoded by @decode into a malloc'ed array of
 * @elem-byte records.  -ENOENT when the job does not exist: it is read
 * first, so the records of a job being created are never seen. */
static int job_rows(Store *base, const char *dir, const char *job_id, size_t max, size_t elem, RecordDecode decode,
                    const char *what, void **ret, size_t *ret_n) {
        EtcdStore *s = etcd_store(base);
        StoreJob j;
        Key k;
        int r = store_check_str("job id", job_id, STORE_ID_MAX, true);
        if (r < 0 || (r = store_check_ret(ret, ret_n)) < 0 || (r = job_read(s, job_id, &j, NULL)) < 0)
                return r;
        key_make(s, &k, dir, job_id, "");
        return records_read(s, k.s, max, elem, decode, what, ret, ret_n);
}

static int sub_row(EtcdStore *s, const EtcdKv *kv, void *out) {
        StoreSubtask *t = out;
        (void) s;
        int r = store_etcd_sub_decode(kv, t);
        if (r < 0)
                return r;
        char seq[16];
        snprintf(seq, sizeof(seq), "/%06d", t->seq);
        size_t kl = strlen(kv->key), sl = strlen(seq);
        if (kl < sl || strcmp(kv->key + kl - sl, seq) != 0)
                return err_set(-EIO, "store etcd: record %s is damaged: it holds sub-task %d of job '%s'", kv->key,
                               t->seq, t->job_id);
        return 0;
}

static int etcd_subtask_list(Store *base, const char *job_id, StoreSubtask **ret, size_t *ret_n) {
        return job_rows(base, "subs", job_id, STORE_SUBTASKS_MAX, sizeof(StoreSubtask), sub_row, "list sub-tasks",
                        (void **) ret, ret_n);
}

/* ---- events ------------------------------------------------------------- */

static int etcd_event_add(Store *base, const char *job_id, uint64_t time_unix_ms, const char *text) {
        EtcdStore *s = etcd_store(base);
        _cleanup_free_ char *value = NULL;
        EtcdKv *kvs = NULL;
        size_t n = 0;
        int64_t rev = 0;
        Key jk, sk, k;
        char tail[80];
        int r = store_check_event(job_id, time_unix_ms, text);
        if (r < 0)
                return r;
        StoreEvent e = { .time_unix_ms = time_unix_ms };
        memcpy(e.text, text, strlen(text) + 1);
        if ((r = store_etcd_event_encode(&e, &value)) < 0)
                return r;
        /* The revision now: later than every write that completed before
         * this call (see the top of the file, "Order"). */
        snprintf(sk.s, sizeof(sk.s), "%s/schema", s->prefix);
        r = etcd_range_prefix(s->etcd, sk.s, 1, true, 0, &kvs, &n, &rev);
        if (r < 0)
                return err_prefix(r, "store etcd: add event");
        etcd_kvs_free(kvs, n);
        snprintf(tail, sizeof(tail), "%020" PRIu64 "-%020" PRId64 "-%06u", time_unix_ms, rev,
                 atomic_fetch_add(&s->event_counter, 1) % 1000000);
        key_make(s, &jk, "jobs", job_id, NULL);
        key_make(s, &k, "events", job_id, tail);
        EtcdCmp c = cmp_exists(jk.s);
        EtcdOp op = op_put(k.s, value);
        r = write_txn(s, "add event", &c, 1, &op, 1);
        if (r == 0)
                return err_set(-ENOENT, "no job '%s'", job_id);
        return r < 0 ? r : 0;
}

static int event_row(EtcdStore *s, const EtcdKv *kv, void *out) {
        (void) s;
        return store_etcd_event_decode(kv, out);
}

static int etcd_event_list(Store *base, const char *job_id, StoreEvent **ret, size_t *ret_n) {
        return job_rows(base, "events", job_id, STORE_EVENTS_MAX, sizeof(StoreEvent), event_row, "list events",
                        (void **) ret, ret_n);
}

/* ---- fence, open, close ------------------------------------------------- */

static int etcd_fence(Store *base, const char *key, int64_t create_revision) {
        EtcdStore *s = etcd_store(base);
        int r;
        if (key) {
                if ((r = store_check_str("fence key", key, STORE_ETCD_KEY_MAX, true)) < 0)
                        return r;
                if (create_revision <= 0)
                        return err_set(-EINVAL, "fence key %s: create_revision %" PRId64 " is not a revision", key,
                                       create_revision);
        }
        lock_acquire(&s->fence_lock);
        snprintf(s->fence_key, sizeof(s->fence_key), "%s", key ? key : "");
        s->fence_rev = key ? create_revision : 0;
        lock_release(&s->fence_lock);
        return 0;
}

static void etcd_store_close(Store *base) {
        EtcdStore *s = etcd_store(base);
        if (!s)
                return;
        lock_destroy(&s->fence_lock);
        free(s);
}

static const StoreOps store_etcd_ops = {
        .close = etcd_store_close,
        .host_put = etcd_host_put,
        .host_delete = etcd_host_delete,
        .host_list = etcd_host_list,
        .job_create = etcd_job_create,
        .job_update = etcd_job_update,
        .job_get = etcd_job_get,
        .job_list = etcd_job_list,
        .job_prune = etcd_job_prune,
        .subtask_update = etcd_subtask_update,
        .subtask_list = etcd_subtask_list,
        .event_add = etcd_event_add,
        .event_list = etcd_event_list,
        .fence = etcd_fence,
};

/* PREFIX/schema: created as "1" when absent (a Txn that loses to another
 * creator reads the winner's); any other value is refused. */
static int schema_check(EtcdStore *s) {
        Key k;
        snprintf(k.s, sizeof(k.s), "%s/schema", s->prefix);
        for (int attempt = 0; attempt < 2; attempt++) {
                _cleanup_(etcd_kv_clear) EtcdKv kv = { 0 };
                int r = get_key(s, k.s, "read the schema version", &kv);
                if (r == -ENOENT) {
                        char v[16];
                        snprintf(v, sizeof(v), "%d", STORE_ETCD_SCHEMA_VERSION);
                        EtcdCmp c = cmp_absent(k.s);
                        EtcdOp op = op_put(k.s, v);
                        if ((r = write_txn(s, "create the schema version", &c, 1, &op, 1)) != 0)
                                return r < 0 ? r : 0;
                        continue;
                }
                if (r < 0)
                        return r;
                char *end = NULL, shown[SHOWN_MAX + 4];
                errno = 0;
                long long version = strtoll(kv.value, &end, 10);
                if (errno || end == kv.value || *end || (size_t) (end - kv.value) != kv.value_len || version < 1)
                        return err_set(-EPROTONOSUPPORT, "store etcd: %s holds '%s', not a store schema version", k.s,
                                       text_shown(kv.value, shown));
                if (version > STORE_ETCD_SCHEMA_VERSION)
                        return err_set(-EPROTONOSUPPORT,
                                       "store etcd: %s has store schema version %lld, newer than the version %d "
                                       "this drover-coordinator understands; run a newer coordinator",
                                       k.s, version, STORE_ETCD_SCHEMA_VERSION);
                return 0;
        }
        return err_set(-EAGAIN, "store etcd: %s appeared and vanished while it was created", k.s);
}

int store_etcd_open(Etcd *e, const char *prefix, Store **ret) {
        int r;
        if (!e)
                return err_set(-EINVAL, "store etcd: no etcd client");
        if ((r = store_check_str("store prefix", prefix, STORE_ETCD_PREFIX_MAX, true)) < 0)
                return r;
        assert(ret);
        EtcdStore *s = calloc(1, sizeof(*s));
        if (!s)
                return err_set(-ENOMEM, "out of memory");
        s->base.ops = &store_etcd_ops;
        s->etcd = e;
        snprintf(s->prefix, sizeof(s->prefix), "%s", prefix);
        for (size_t n = strlen(s->prefix); n > 1 && s->prefix[n - 1] == '/'; n--)
                s->prefix[n - 1] = '\0';
        atomic_init(&s->event_counter, 0);
        lock_init(&s->fence_lock, &fence_lock_class);
        if ((r = schema_check(s)) < 0) {
                etcd_store_close(&s->base);
                return r;
        }
        *ret = &s->base;
        return 0;
}
