/* A small client of etcd's v3 API (KV, Lease, Watch), on the project's own
 * gRPC layer (core/rpcclient.h) and the subset of etcd's .proto under
 * proto/etcd/ (etcd 3.4, Debian's etcd-server).
 *
 * One Etcd holds one gRPC channel to one of its endpoints at a time and is
 * shared by any number of threads.  A call that fails with UNAVAILABLE (or
 * finds no connection, or passes its deadline) moves the client to the
 * next endpoint for the following calls.  A call that found no connection
 * (nothing sent) is tried on the next endpoint within its deadline, and
 * so is a read; a write that may have been applied is not repeated here
 * (the caller decides, usually by reading back).
 * Every call has a deadline (@timeout_ms, <= 0: the client's default).
 *
 * Keys are NUL-terminated strings (the callers' keys are text); values are
 * bytes with a length, and always followed by a NUL in what is returned so
 * that a JSON value can be parsed in place.
 *
 * Errors: -ENOENT (no such key, or the lease is gone), -EAGAIN (no endpoint
 * answered: unreachable, or the member has no quorum), -ETIMEDOUT (the
 * deadline passed: the request may have been applied), -ERANGE (a revision
 * asked for was compacted), -EINVAL (bad input, or etcd refused the
 * request: too many operations in a Txn, a value too large), -EIO
 * (anything else), each with err_set() detail naming the endpoint and
 * etcd's message.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "rpc.h"

#define ETCD_MAX_ENDPOINTS 8
#define ETCD_MAX_TXN_OPS 128 /* etcd's default --max-txn-ops */

typedef struct Etcd Etcd;

typedef struct EtcdOptions {
        /* "host:port[,host:port...]" (at most ETCD_MAX_ENDPOINTS); an
         * endpoint may also be an etcd URL: "https://host:port" (only with
         * @tls) or "http://host:port" (only without), a trailing '/' allowed */
        const char *endpoints;
        const RpcTls *tls;          /* client certificate and CA; NULL: plaintext (loopback/unix only) */
        int64_t default_timeout_ms; /* 0: 5000 */
} EtcdOptions;

/* Create the client.  Connects lazily.  -EINVAL for a bad endpoint list
 * (an empty entry, another scheme, a scheme that disagrees with @tls) or
 * TLS material, -EPERM for plaintext to a non-local address. */
int etcd_open(const EtcdOptions *o, Etcd **ret);
void etcd_close(Etcd *e);
DEFINE_POINTER_CLEANUP(Etcd, etcd_close);

/* The endpoint the client uses now (for messages). */
const char *etcd_endpoint(Etcd *e);

typedef struct EtcdKv {
        char *key;               /* malloc'ed, NUL-terminated */
        char *value;             /* malloc'ed, value_len bytes and a NUL */
        size_t value_len;
        int64_t create_revision; /* mvccpb.KeyValue's fields */
        int64_t mod_revision;
        int64_t version;
        int64_t lease;
} EtcdKv;

void etcd_kv_clear(EtcdKv *kv);
void etcd_kvs_free(EtcdKv *kvs, size_t n);

/* One key: 0 and *ret (etcd_kv_clear it), or -ENOENT.  Linearizable. */
int etcd_get(Etcd *e, const char *key, int64_t timeout_ms, EtcdKv *ret);

/* Every key starting with @prefix, in key order, at most @limit (0: no
 * limit; etcd's reply is still capped at the client's message size).
 * *ret (etcd_kvs_free), *ret_n, and *ret_revision (the store's revision the
 * read saw; may be NULL).  @keys_only: values are left empty.  Linearizable.
 * (etcd_range with only these.) */
int etcd_range_prefix(Etcd *e, const char *prefix, size_t limit, bool keys_only, int64_t timeout_ms,
                      EtcdKv **ret, size_t *ret_n, int64_t *ret_revision);

/* A page of a prefix: the keys starting with @prefix, and also after
 * @after and before @before when those are given, in key order (@descend:
 * reversed), at most @limit (0: no limit). */
typedef struct EtcdRange {
        const char *prefix;      /* required, not empty */
        const char *after;       /* NULL, or only keys > after (the last key of the page before) */
        const char *before;      /* NULL, or only keys < before (not empty) */
        int64_t revision;        /* 0: now (linearizable); > 0: the store as it was at that revision */
        size_t limit;
        bool keys_only;          /* values are left empty */
        bool descend;
} EtcdRange;

/* Read the range @q: *ret (etcd_kvs_free), *ret_n, *ret_revision (the
 * revision read: @q->revision, or the store's now; may be NULL) and
 * *ret_more (may be NULL): whether keys beyond @limit are left.  To read
 * a large prefix in pages, pass each page's last key as the next @after
 * (or @before when descending) and the first page's revision as
 * @revision: the pages then make one consistent view.  -ERANGE when
 * @q->revision was compacted (read again from now) or is in the future;
 * other -errno as above. */
int etcd_range(Etcd *e, const EtcdRange *q, int64_t timeout_ms, EtcdKv **ret, size_t *ret_n,
               int64_t *ret_revision, bool *ret_more);

/* Unconditional put and delete (no fence: tools and tests only; the store
 * writes through etcd_txn). */
int etcd_put(Etcd *e, const char *key, const void *value, size_t value_len, int64_t lease, int64_t timeout_ms);
int etcd_delete(Etcd *e, const char *key, bool prefix, int64_t timeout_ms);

typedef enum EtcdCmpTarget {
        ETCD_CMP_VERSION,         /* 0 when the key does not exist */
        ETCD_CMP_CREATE_REVISION, /* 0 when the key does not exist */
        ETCD_CMP_MOD_REVISION,
        ETCD_CMP_VALUE,
        ETCD_CMP_LEASE,
} EtcdCmpTarget;

typedef enum EtcdCmpResult {
        ETCD_CMP_EQUAL,
        ETCD_CMP_GREATER,
        ETCD_CMP_LESS,
        ETCD_CMP_NOT_EQUAL,
} EtcdCmpResult;

typedef struct EtcdCmp {
        const char *key;
        EtcdCmpTarget target;
        EtcdCmpResult result;
        int64_t number;          /* for VERSION, CREATE_REVISION, MOD_REVISION, LEASE */
        const void *value;       /* for VALUE */
        size_t value_len;
} EtcdCmp;

typedef enum EtcdOpKind {
        ETCD_OP_PUT,
        ETCD_OP_DELETE,        /* one key */
        ETCD_OP_DELETE_PREFIX, /* every key starting with key */
} EtcdOpKind;

typedef struct EtcdOp {
        EtcdOpKind kind;
        const char *key;
        const void *value;       /* PUT */
        size_t value_len;
        int64_t lease;           /* PUT: 0 for none */
} EtcdOp;

/* A transaction: when every compare holds, apply @ops (at most
 * ETCD_MAX_TXN_OPS) atomically and return 1; when one does not, apply
 * nothing and return 0.  *ret_revision (may be NULL): the store's revision
 * after the transaction.  -errno as above; -ETIMEDOUT and -EAGAIN after
 * the request was sent leave it unknown whether it applied. */
int etcd_txn(Etcd *e, const EtcdCmp *cmps, size_t n_cmps, const EtcdOp *ops, size_t n_ops, int64_t timeout_ms,
             int64_t *ret_revision);

/* Leases. */
int etcd_lease_grant(Etcd *e, int64_t ttl_s, int64_t timeout_ms, int64_t *ret_id, int64_t *ret_ttl_s);
int etcd_lease_revoke(Etcd *e, int64_t id, int64_t timeout_ms);

/* A LeaseKeepAlive stream (bidirectional): one refresh per
 * etcd_keepalive_once().  Owned by one thread.  Streams ask etcd to
 * require a leader (etcd's "hasleader" metadata): on a member that lost
 * its quorum, etcd refuses new ones and ends open ones (after about three
 * election timeouts), so their next wait fails with -EAGAIN instead of
 * hanging.
 *
 * Open one within @timeout_ms (<= 0: the client's default), trying the
 * next endpoint while none is reachable: 0, or -EAGAIN (no endpoint
 * reachable in time). */
typedef struct EtcdKeepAlive EtcdKeepAlive;
int etcd_keepalive_open(Etcd *e, int64_t timeout_ms, EtcdKeepAlive **ret);
/* Refresh lease @id: 0 and *ret_ttl_s (the TTL etcd granted again), or
 * -ENOENT when the lease has expired or was revoked (etcd answers TTL 0),
 * -ETIMEDOUT when no answer came within @timeout_ms, -EAGAIN when the
 * stream broke (open a new one).  After an error the stream is dead. */
int etcd_keepalive_once(EtcdKeepAlive *k, int64_t id, int64_t timeout_ms, int64_t *ret_ttl_s);
void etcd_keepalive_close(EtcdKeepAlive *k);
DEFINE_POINTER_CLEANUP(EtcdKeepAlive, etcd_keepalive_close);

/* A Watch stream (bidirectional) on one key or a prefix, from
 * @start_revision (0: from now).  Owned by one thread, except
 * etcd_watch_cancel().  etcd_watch_open returns once etcd confirmed the
 * watch, within @timeout_ms (<= 0: the client's default) for the
 * connection and the confirmation together: 0, -EAGAIN (no endpoint
 * reachable, or no leader), -ETIMEDOUT (no confirmation in time),
 * -ERANGE (@start_revision compacted). */
typedef struct EtcdWatch EtcdWatch;

typedef struct EtcdEvent {
        bool deleted;            /* DELETE (kv holds the key and the deletion's mod_revision) or PUT */
        EtcdKv kv;
} EtcdEvent;

int etcd_watch_open(Etcd *e, const char *key, bool prefix, int64_t start_revision, int64_t timeout_ms,
                    EtcdWatch **ret);
/* Block for the next batch of events, at most @timeout_ms (<= 0: until
 * one comes or the watch is cancelled): >0 events in *ret
 * (etcd_events_free), 0 when the time ran out, -ECANCELED after
 * etcd_watch_cancel(), -EAGAIN when the stream broke (open a new one from
 * the last revision seen + 1; also when the member lost its leader),
 * -ERANGE when etcd compacted past
 * @start_revision (read afresh, then watch from the read's revision + 1). */
int etcd_watch_next(EtcdWatch *w, int64_t timeout_ms, EtcdEvent **ret, size_t *ret_n);
void etcd_events_free(EtcdEvent *ev, size_t n);
/* Any thread: a blocked or later etcd_watch_next() returns -ECANCELED. */
void etcd_watch_cancel(EtcdWatch *w);
void etcd_watch_free(EtcdWatch *w);
DEFINE_POINTER_CLEANUP(EtcdWatch, etcd_watch_free);
