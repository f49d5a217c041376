/* The etcd client's insides shared by its two files: etcd.c (connections,
 * endpoints, unary calls: KV, Txn, Lease) and etcd-stream.c (the
 * LeaseKeepAlive and Watch streams).  Not for other callers: they use
 * etcd.h.
 */
#pragma once

#include <stdatomic.h>

#include "etcd.h"
#include "etcd/etcdserverpb/rpc.pb-c.h"
#include "lock.h"
#include "rpcclient.h"

/* One endpoint's gRPC client, shared by the calls and streams using it. */
typedef struct EtcdConn {
        RpcClient *cl;    /* immutable */
        atomic_int refs;  /* atomic; the Etcd's table holds one */
} EtcdConn;

/* e->lock protects the connection table; cur is atomic so that
 * etcd_endpoint() reads it without the lock. */
struct Etcd {
        int n;                                     /* immutable */
        char *endpoints[ETCD_MAX_ENDPOINTS];       /* immutable */
        RpcClientOptions copts;                    /* immutable */
        RpcTls tls;                                /* immutable; copts.tls points here */
        int64_t default_timeout_ms;                /* immutable */
        atomic_int cur;                            /* atomic: the endpoint in use */
        Lock lock;
        EtcdConn *conns[ETCD_MAX_ENDPOINTS];       /* lock: e->lock */
};

/* A reference to the current endpoint's connection (replaced first when
 * its channel has given up), and its index.  Drop it with
 * etcd_conn_unref().  Any thread; takes e->lock briefly. */
int etcd_conn_get(Etcd *e, EtcdConn **ret, int *ret_idx);
void etcd_conn_unref(EtcdConn *c);

/* Endpoint @idx failed: use the next one for the following calls, unless
 * another thread has moved on already. */
void etcd_conn_failed(Etcd *e, int idx);

/* Whether a call or stream that failed with @r and status @st (may be
 * NULL) means the endpoint is not serving us. */
bool etcd_endpoint_failed(int r, const RpcStatus *st);

/* The project's -errno for an etcd call @what on endpoint @idx that failed
 * with @r and @st (the mapping in etcd.c's opening comment), err_set(). */
int etcd_error(Etcd *e, int idx, const char *what, int r, const RpcStatus *st);

/* -EINVAL unless @key is a non-empty string. */
int etcd_check_key(const char *key, const char *what);

/* @key's bytes (no NUL), pointing into @key. */
ProtobufCBinaryData etcd_key_bytes(const char *key);

/* The range_end that makes [key, end) every key starting with @key, in
 * @buf (strlen(key) + 1 bytes). */
ProtobufCBinaryData etcd_prefix_end(const char *key, uint8_t *buf);

/* A malloc'ed copy of @pb (NULL: an empty one) into *ret. */
int etcd_kv_from_pb(const Mvccpb__KeyValue *pb, EtcdKv *ret);
