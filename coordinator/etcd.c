/* The etcd client (see etcd.h): etcd's v3 gRPC API (proto/etcd/, etcd
 * 3.4) on the project's gRPC client.
 *
 * The coordinator's replicated store and its leader election reach etcd
 * only through this client: this file has the connections, the endpoints
 * and the unary calls (KV, Txn, Lease); etcd-stream.c the streams
 * (etcd-priv.h is what the two share).  An Etcd keeps one RpcClient per
 * endpoint, each wrapped in a refcounted EtcdConn, and an index to the one
 * in use.  A call takes a reference to the current connection under the
 * lock, runs without it, and drops it; so a connection can be replaced
 * (gRPC's reconnect backoff grows to minutes, so a client whose channel
 * has given up is swapped for a fresh one when it comes round again)
 * while other threads still use the old one.  Every RpcClient has a short
 * connect timeout: a call first waits for a connection and fails "not
 * sent" when none comes up.  A call that failed UNAVAILABLE, not sent, or
 * at its deadline moves the index to the next endpoint (only if no other
 * thread moved it already).  A call that was not sent is tried again on
 * the next endpoint within the same deadline, and so is a read (Range)
 * after any UNAVAILABLE; a write that may have reached etcd is never
 * repeated here.
 *
 * Endpoints are "host:port" as the gRPC layer takes them; an etcd URL's
 * "http://" or "https://" (and a trailing '/') is stripped at open, and
 * must agree with the TLS options (etcd.h).
 *
 * etcd's refusals map once, here: NOT_FOUND -ENOENT, UNAVAILABLE (no
 * connection, no leader, etcd's own request timeout) -EAGAIN,
 * DEADLINE_EXCEEDED -ETIMEDOUT, OUT_OF_RANGE (a revision compacted or
 * not there yet) -ERANGE, INVALID_ARGUMENT / RESOURCE_EXHAUSTED /
 * FAILED_PRECONDITION -EINVAL, anything else -EIO.  Requests
 * larger than etcd's default --max-request-bytes (1.5 MiB) and
 * transactions with more than ETCD_MAX_TXN_OPS compares or operations are
 * refused before sending.
 */
#include "etcd-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deadline.h"

#define DEFAULT_TIMEOUT_MS 5000
#define CONNECT_TIMEOUT_MS 2000
#define MAX_REQUEST_BYTES (1536 * 1024) /* etcd's default --max-request-bytes */

#define KV_SVC (&etcdserverpb__kv__descriptor)
#define LEASE_SVC (&etcdserverpb__lease__descriptor)

static LockClass etcd_lock_class = LOCK_CLASS_INIT("etcd");

/* ---- connections --------------------------------------------------------- */

void etcd_conn_unref(EtcdConn *c) {
        if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
                rpc_client_free(c->cl);
                free(c);
        }
}

static int conn_new(Etcd *e, int idx, EtcdConn **ret) {
        EtcdConn *c = calloc(1, sizeof(*c));
        if (!c)
                return err_set(-ENOMEM, "out of memory");
        int r = rpc_client_new(e->endpoints[idx], &e->copts, &c->cl);
        if (r < 0) {
                free(c);
                return err_prefix(r, "etcd endpoint %s", e->endpoints[idx]);
        }
        atomic_init(&c->refs, 1);
        *ret = c;
        return 0;
}

/* A reference to the current endpoint's connection (replaced first when
 * its channel has given up), and its index. */
int etcd_conn_get(Etcd *e, EtcdConn **ret, int *ret_idx) {
        int idx = atomic_load(&e->cur);
        EtcdConn *fresh = NULL, *old = NULL;

        lock_acquire(&e->lock);
        bool broken = !e->conns[idx] || rpc_client_broken(e->conns[idx]->cl);
        lock_release(&e->lock);
        if (broken) {
                /* Made without the lock: it reads the TLS files. */
                int r = conn_new(e, idx, &fresh);
                if (r < 0)
                        return r;
        }
        lock_acquire(&e->lock);
        if (fresh && (!e->conns[idx] || rpc_client_broken(e->conns[idx]->cl))) {
                old = e->conns[idx];
                e->conns[idx] = TAKE_PTR(fresh);
        }
        EtcdConn *c = e->conns[idx];
        atomic_fetch_add(&c->refs, 1);
        lock_release(&e->lock);
        etcd_conn_unref(old);
        etcd_conn_unref(fresh);
        *ret = c;
        *ret_idx = idx;
        return 0;
}

/* Endpoint @idx failed: use the next one for the following calls, unless
 * another thread has moved on already. */
void etcd_conn_failed(Etcd *e, int idx) {
        int expected = idx;
        atomic_compare_exchange_strong(&e->cur, &expected, (idx + 1) % e->n);
}

/* Whether status @st (of a call or stream that failed with @r) means the
 * endpoint is not serving us. */
bool etcd_endpoint_failed(int r, const RpcStatus *st) {
        if (r == -ECONNREFUSED || r == -EHOSTUNREACH)
                return true;
        return st && (st->code == RPC_UNAVAILABLE || st->code == RPC_DEADLINE_EXCEEDED);
}

/* The project's -errno for an etcd call that failed with @r and @st. */
int etcd_error(Etcd *e, int idx, const char *what, int r, const RpcStatus *st) {
        const char *ep = e->endpoints[idx];

        if (r == -ECONNREFUSED || r == -EHOSTUNREACH || (st && st->not_sent))
                return err_prefix(-EAGAIN, "etcd %s: %s: no connection", ep, what);
        if (!st)
                return err_prefix(r, "etcd %s: %s", ep, what);
        int out;
        switch (st->code) {
        case RPC_NOT_FOUND: out = -ENOENT; break;
        case RPC_UNAVAILABLE: out = -EAGAIN; break;
        case RPC_DEADLINE_EXCEEDED: out = -ETIMEDOUT; break;
        case RPC_OUT_OF_RANGE: out = -ERANGE; break;
        case RPC_INVALID_ARGUMENT:
        case RPC_RESOURCE_EXHAUSTED:
        case RPC_FAILED_PRECONDITION: out = -EINVAL; break;
        case RPC_CANCELLED: out = -ECANCELED; break;
        default: out = -EIO; break;
        }
        return err_set(out, "etcd %s: %s: %s: %s", ep, what, rpc_code_to_string(st->code), st->details);
}

/* One unary call of @svc/@method with endpoint failover (the file's
 * comment).  @idempotent: also repeat after an UNAVAILABLE that may have
 * been seen. */
static int etcd_unary(Etcd *e, const ProtobufCServiceDescriptor *svc, const char *method,
                      const ProtobufCMessage *req, int64_t timeout_ms, bool idempotent, ProtobufCMessage **ret) {
        Deadline dl = deadline_in_ms(timeout_ms > 0 ? timeout_ms : e->default_timeout_ms);
        int r = -EAGAIN;

        for (int attempt = 0; attempt < e->n; attempt++) {
                EtcdConn *c;
                RpcStatus st;
                int idx;

                int64_t left = deadline_remaining_ms(dl);
                if (attempt > 0 && left <= 0)
                        break;
                r = etcd_conn_get(e, &c, &idx);
                if (r < 0)
                        return r;
                memset(&st, 0, sizeof(st));
                r = rpc_client_unary(c->cl, svc, method, req, left > 0 ? left : 1, ret, &st);
                etcd_conn_unref(c);
                if (r == 0)
                        return 0;
                if (r == -EINVAL && st.code == RPC_OK)
                        return r; /* our own bad request: nothing was called */
                bool failed = etcd_endpoint_failed(r, &st);
                if (failed)
                        etcd_conn_failed(e, idx);
                bool not_sent = r == -ECONNREFUSED || r == -EHOSTUNREACH || st.not_sent;
                r = etcd_error(e, idx, method, r, &st);
                if (!failed || !(not_sent || (idempotent && st.code == RPC_UNAVAILABLE)))
                        return r;
        }
        return r;
}

/* ---- open, close ---------------------------------------------------------- */

static int copy_opt(const char *s, const char **ret) {
        *ret = NULL;
        if (s && !(*ret = strdup(s)))
                return err_set(-ENOMEM, "out of memory");
        return 0;
}

/* One endpoint of @list (@s, @len bytes, trimmed) without an etcd URL's
 * scheme and trailing '/', which must agree with @tls. */
static int endpoint_strip(const char *list, const char **s, size_t *len, bool tls) {
        static const struct {
                const char *scheme;
                bool tls;
        } schemes[] = { { "http://", false }, { "https://", true } };
        size_t n = *len;
        const char *p = *s;

        for (size_t i = 0; i < ELEMENTSOF(schemes); i++) {
                size_t sl = strlen(schemes[i].scheme);
                if (n < sl || strncasecmp(p, schemes[i].scheme, sl) != 0)
                        continue;
                if (schemes[i].tls != tls)
                        return err_set(-EINVAL, "etcd: endpoint %.*s: %s", (int) n, p,
                                       tls ? "http:// is plaintext but TLS options are given"
                                           : "https:// needs the TLS options (client certificate, key, CA)");
                p += sl;
                n -= sl;
                if (n > 0 && p[n - 1] == '/')
                        n--;
                break;
        }
        bool scheme = false;
        for (size_t i = 0; i + 3 <= n && !scheme; i++)
                scheme = memcmp(p + i, "://", 3) == 0;
        if (n == 0 || scheme)
                return err_set(-EINVAL, "etcd: endpoint %.*s in \"%s\" is not HOST:PORT, http://HOST:PORT or "
                               "https://HOST:PORT", (int) *len, *s, list);
        *s = p;
        *len = n;
        return 0;
}

static int parse_endpoints(Etcd *e, const char *list, bool tls) {
        if (!list || !*list)
                return err_set(-EINVAL, "etcd: no endpoints");
        const char *p = list;
        while (*p) {
                size_t len = strcspn(p, ",");
                const char *s = p;
                int r;
                while (len > 0 && (*s == ' ' || *s == '\t')) {
                        s++;
                        len--;
                }
                while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                        len--;
                if (len == 0)
                        return err_set(-EINVAL, "etcd: empty endpoint in \"%s\"", list);
                if ((r = endpoint_strip(list, &s, &len, tls)) < 0)
                        return r;
                if (e->n == ETCD_MAX_ENDPOINTS)
                        return err_set(-EINVAL, "etcd: more than %d endpoints in \"%s\"", ETCD_MAX_ENDPOINTS, list);
                if (!(e->endpoints[e->n] = strndup(s, len)))
                        return err_set(-ENOMEM, "out of memory");
                e->n++;
                p += strcspn(p, ",");
                if (*p == ',')
                        p++;
        }
        return 0;
}

int etcd_open(const EtcdOptions *o, Etcd **ret) {
        int r;

        if (!o || !ret)
                return err_set(-EINVAL, "etcd: no options");
        Etcd *e = calloc(1, sizeof(*e));
        if (!e)
                return err_set(-ENOMEM, "out of memory");
        lock_init(&e->lock, &etcd_lock_class);
        atomic_init(&e->cur, 0);
        e->default_timeout_ms = o->default_timeout_ms > 0 ? o->default_timeout_ms : DEFAULT_TIMEOUT_MS;
        r = parse_endpoints(e, o->endpoints, o->tls != NULL);
        if (r == 0 && o->tls) {
                if ((r = copy_opt(o->tls->cert_file, &e->tls.cert_file)) == 0 &&
                    (r = copy_opt(o->tls->key_file, &e->tls.key_file)) == 0 &&
                    (r = copy_opt(o->tls->ca_file, &e->tls.ca_file)) == 0)
                        r = copy_opt(o->tls->server_name, &e->tls.server_name);
                e->copts.tls = &e->tls;
        }
        e->copts.default_timeout_ms = e->default_timeout_ms;
        e->copts.connect_timeout_ms = e->default_timeout_ms < CONNECT_TIMEOUT_MS ? e->default_timeout_ms
                                                                                : CONNECT_TIMEOUT_MS;
        /* Every endpoint's client now, so that a bad address or TLS file
         * shows here; none connects before its first call. */
        for (int i = 0; r == 0 && i < e->n; i++)
                r = conn_new(e, i, &e->conns[i]);
        if (r < 0) {
                etcd_close(e);
                return r;
        }
        *ret = e;
        return 0;
}

void etcd_close(Etcd *e) {
        if (!e)
                return;
        for (int i = 0; i < ETCD_MAX_ENDPOINTS; i++) {
                etcd_conn_unref(e->conns[i]);
                free(e->endpoints[i]);
        }
        free((char *) e->tls.cert_file);
        free((char *) e->tls.key_file);
        free((char *) e->tls.ca_file);
        free((char *) e->tls.server_name);
        lock_destroy(&e->lock);
        free(e);
}

const char *etcd_endpoint(Etcd *e) {
        return e->endpoints[atomic_load(&e->cur)];
}

/* ---- keys and values ----------------------------------------------------- */

void etcd_kv_clear(EtcdKv *kv) {
        if (!kv)
                return;
        free(kv->key);
        free(kv->value);
        *kv = (EtcdKv){ 0 };
}

void etcd_kvs_free(EtcdKv *kvs, size_t n) {
        for (size_t i = 0; kvs && i < n; i++)
                etcd_kv_clear(&kvs[i]);
        free(kvs);
}

static char *dup_bytes(const ProtobufCBinaryData *b) {
        char *s = malloc(b->len + 1);
        if (!s)
                return NULL;
        if (b->len)
                memcpy(s, b->data, b->len);
        s[b->len] = '\0';
        return s;
}

int etcd_kv_from_pb(const Mvccpb__KeyValue *pb, EtcdKv *ret) {
        EtcdKv kv = { 0 };
        static const ProtobufCBinaryData none = { 0, NULL };

        kv.key = dup_bytes(pb ? &pb->key : &none);
        kv.value = dup_bytes(pb ? &pb->value : &none);
        if (!kv.key || !kv.value) {
                etcd_kv_clear(&kv);
                return err_set(-ENOMEM, "out of memory");
        }
        if (pb) {
                kv.value_len = pb->value.len;
                kv.create_revision = pb->create_revision;
                kv.mod_revision = pb->mod_revision;
                kv.version = pb->version;
                kv.lease = pb->lease;
        }
        *ret = kv;
        return 0;
}

int etcd_check_key(const char *key, const char *what) {
        if (!key || !*key)
                return err_set(-EINVAL, "etcd: %s: %s key", what, key ? "empty" : "no");
        return 0;
}

ProtobufCBinaryData etcd_key_bytes(const char *key) {
        return (ProtobufCBinaryData){ .len = strlen(key), .data = (uint8_t *) key };
}

/* The range_end that makes [key, end) every key starting with @key:
 * @key with its last byte below 0xff incremented (and what follows cut),
 * or "\0" (no upper bound) when there is none.  In @buf (strlen(key)+1). */
ProtobufCBinaryData etcd_prefix_end(const char *key, uint8_t *buf) {
        size_t n = strlen(key);
        memcpy(buf, key, n);
        while (n > 0 && buf[n - 1] == 0xff)
                n--;
        if (n == 0) {
                buf[0] = 0;
                return (ProtobufCBinaryData){ .len = 1, .data = buf };
        }
        buf[n - 1]++;
        return (ProtobufCBinaryData){ .len = n, .data = buf };
}

int etcd_get(Etcd *e, const char *key, int64_t timeout_ms, EtcdKv *ret) {
        Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        int r;

        if ((r = etcd_check_key(key, "get")) < 0)
                return r;
        req.key = etcd_key_bytes(key);
        r = etcd_unary(e, KV_SVC, "Range", &req.base, timeout_ms, true, &m);
        if (r < 0)
                return r;
        Etcdserverpb__RangeResponse *resp = (Etcdserverpb__RangeResponse *) m;
        if (resp->n_kvs == 0)
                r = err_set(-ENOENT, "etcd: no key %s", key);
        else
                r = etcd_kv_from_pb(resp->kvs[0], ret);
        protobuf_c_message_free_unpacked(m, NULL);
        return r;
}

/* Byte order of two keys (etcd's), the shorter first among equals. */
static int bytes_cmp(ProtobufCBinaryData a, ProtobufCBinaryData b) {
        int c = memcmp(a.data, b.data, MIN(a.len, b.len));
        return c ? c : a.len < b.len ? -1 : a.len > b.len ? 1 : 0;
}

int etcd_range(Etcd *e, const EtcdRange *q, int64_t timeout_ms, EtcdKv **ret, size_t *ret_n,
               int64_t *ret_revision, bool *ret_more) {
        Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        int r;

        if (!q || (r = etcd_check_key(q->prefix, "range")) < 0)
                return q ? r : err_set(-EINVAL, "etcd: range: no request");
        if (q->revision < 0 || (q->before && !*q->before))
                return err_set(-EINVAL, "etcd: range %s: revision %" PRId64 " or an empty end key", q->prefix,
                               q->revision);
        size_t pl = strlen(q->prefix), al = q->after ? strlen(q->after) : 0;
        _cleanup_free_ uint8_t *end = malloc(pl + 1);
        _cleanup_free_ uint8_t *from = malloc(al + 1);
        if (!end || !from)
                return err_set(-ENOMEM, "out of memory");
        req.key = etcd_key_bytes(q->prefix);
        req.range_end = etcd_prefix_end(q->prefix, end);
        bool bounded = !(req.range_end.len == 1 && req.range_end.data[0] == 0);
        /* The first key after @after is @after and a NUL byte. */
        if (q->after && strcmp(q->after, q->prefix) >= 0) {
                memcpy(from, q->after, al + 1);
                req.key = (ProtobufCBinaryData){ .len = al + 1, .data = from };
        }
        /* (A start at or past the end is an empty range for etcd.) */
        if (q->before && (!bounded || bytes_cmp(etcd_key_bytes(q->before), req.range_end) < 0))
                req.range_end = etcd_key_bytes(q->before);
        req.revision = q->revision;
        req.limit = (int64_t) q->limit;
        req.keys_only = q->keys_only;
        req.sort_order = q->descend ? ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND
                                    : ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
        req.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;
        r = etcd_unary(e, KV_SVC, "Range", &req.base, timeout_ms, true, &m);
        if (r < 0)
                return r;
        Etcdserverpb__RangeResponse *resp = (Etcdserverpb__RangeResponse *) m;
        EtcdKv *kvs = calloc(resp->n_kvs ? resp->n_kvs : 1, sizeof(*kvs));
        size_t n = 0;
        if (!kvs)
                r = err_set(-ENOMEM, "out of memory");
        for (; r == 0 && n < resp->n_kvs; n++)
                r = etcd_kv_from_pb(resp->kvs[n], &kvs[n]);
        if (r == 0) {
                *ret = kvs;
                *ret_n = n;
                /* etcd's header has the store's revision now, even for a
                 * read at an older one. */
                if (ret_revision)
                        *ret_revision = q->revision > 0 ? q->revision : resp->header ? resp->header->revision : 0;
                if (ret_more)
                        *ret_more = resp->more;
        } else {
                etcd_kvs_free(kvs, n);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return r;
}

int etcd_range_prefix(Etcd *e, const char *prefix, size_t limit, bool keys_only, int64_t timeout_ms,
                      EtcdKv **ret, size_t *ret_n, int64_t *ret_revision) {
        EtcdRange q = { .prefix = prefix, .limit = limit, .keys_only = keys_only };
        return etcd_range(e, &q, timeout_ms, ret, ret_n, ret_revision, NULL);
}

/* A put of @key and @value_len bytes fits etcd's request limit. */
static int check_put(const char *key, const void *value, size_t value_len) {
        int r = etcd_check_key(key, "put");
        if (r < 0)
                return r;
        if (!value && value_len > 0)
                return err_set(-EINVAL, "etcd: put %s: no value", key);
        if (value_len > MAX_REQUEST_BYTES || strlen(key) + value_len > MAX_REQUEST_BYTES)
                return err_set(-EINVAL, "etcd: put %s: %zu bytes is more than etcd takes (%d)", key, value_len,
                               MAX_REQUEST_BYTES);
        return 0;
}

int etcd_put(Etcd *e, const char *key, const void *value, size_t value_len, int64_t lease, int64_t timeout_ms) {
        Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        int r;

        if ((r = check_put(key, value, value_len)) < 0)
                return r;
        req.key = etcd_key_bytes(key);
        req.value = (ProtobufCBinaryData){ .len = value_len, .data = (uint8_t *) value };
        req.lease = lease;
        r = etcd_unary(e, KV_SVC, "Put", &req.base, timeout_ms, false, &m);
        if (r < 0)
                return r;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
}

int etcd_delete(Etcd *e, const char *key, bool prefix, int64_t timeout_ms) {
        Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        int r;

        if ((r = etcd_check_key(key, "delete")) < 0)
                return r;
        _cleanup_free_ uint8_t *end = malloc(strlen(key) + 1);
        if (!end)
                return err_set(-ENOMEM, "out of memory");
        req.key = etcd_key_bytes(key);
        if (prefix)
                req.range_end = etcd_prefix_end(key, end);
        r = etcd_unary(e, KV_SVC, "DeleteRange", &req.base, timeout_ms, false, &m);
        if (r < 0)
                return r;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
}

/* ---- transactions ------------------------------------------------------------ */

/* The protobuf form of a Txn, built on the heap (up to 2 x 128 entries). */
typedef struct TxnBuild {
        Etcdserverpb__Compare *cmp;
        Etcdserverpb__Compare **cmpp;
        Etcdserverpb__RequestOp *op;
        Etcdserverpb__RequestOp **opp;
        Etcdserverpb__PutRequest *put;
        Etcdserverpb__DeleteRangeRequest *del;
        uint8_t **ends;
        size_t n_ops;
} TxnBuild;

static void txn_build_clear(TxnBuild *b) {
        for (size_t i = 0; b->ends && i < b->n_ops; i++)
                free(b->ends[i]);
        free(b->ends);
        free(b->cmp);
        free(b->cmpp);
        free(b->op);
        free(b->opp);
        free(b->put);
        free(b->del);
}

static int txn_cmp(const EtcdCmp *c, Etcdserverpb__Compare *pb) {
        static const Etcdserverpb__Compare__CompareResult results[] = {
                [ETCD_CMP_EQUAL] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
                [ETCD_CMP_GREATER] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
                [ETCD_CMP_LESS] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
                [ETCD_CMP_NOT_EQUAL] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
        };
        int r = etcd_check_key(c->key, "txn compare");
        if (r < 0)
                return r;
        if ((unsigned) c->result > ETCD_CMP_NOT_EQUAL)
                return err_set(-EINVAL, "etcd: txn compare on %s: bad result %d", c->key, (int) c->result);
        etcdserverpb__compare__init(pb);
        pb->key = etcd_key_bytes(c->key);
        pb->result = results[c->result];
        switch (c->target) {
        case ETCD_CMP_VERSION:
                pb->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
                pb->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
                pb->version = c->number;
                break;
        case ETCD_CMP_CREATE_REVISION:
                pb->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
                pb->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
                pb->create_revision = c->number;
                break;
        case ETCD_CMP_MOD_REVISION:
                pb->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
                pb->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
                pb->mod_revision = c->number;
                break;
        case ETCD_CMP_VALUE:
                if (!c->value && c->value_len > 0)
                        return err_set(-EINVAL, "etcd: txn compare on %s: no value", c->key);
                pb->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
                pb->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
                pb->value = (ProtobufCBinaryData){ .len = c->value_len, .data = (uint8_t *) c->value };
                break;
        case ETCD_CMP_LEASE:
                pb->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
                pb->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
                pb->lease = c->number;
                break;
        default:
                return err_set(-EINVAL, "etcd: txn compare on %s: bad target %d", c->key, (int) c->target);
        }
        return 0;
}

static int txn_op(TxnBuild *b, size_t i, const EtcdOp *o, size_t *bytes) {
        Etcdserverpb__RequestOp *pb = &b->op[i];
        int r;

        etcdserverpb__request_op__init(pb);
        switch (o->kind) {
        case ETCD_OP_PUT:
                if ((r = check_put(o->key, o->value, o->value_len)) < 0)
                        return r;
                etcdserverpb__put_request__init(&b->put[i]);
                b->put[i].key = etcd_key_bytes(o->key);
                b->put[i].value = (ProtobufCBinaryData){ .len = o->value_len, .data = (uint8_t *) o->value };
                b->put[i].lease = o->lease;
                pb->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
                pb->request_put = &b->put[i];
                *bytes += strlen(o->key) + o->value_len;
                return 0;
        case ETCD_OP_DELETE:
        case ETCD_OP_DELETE_PREFIX:
                if ((r = etcd_check_key(o->key, "txn delete")) < 0)
                        return r;
                etcdserverpb__delete_range_request__init(&b->del[i]);
                b->del[i].key = etcd_key_bytes(o->key);
                if (o->kind == ETCD_OP_DELETE_PREFIX) {
                        if (!(b->ends[i] = malloc(strlen(o->key) + 1)))
                                return err_set(-ENOMEM, "out of memory");
                        b->del[i].range_end = etcd_prefix_end(o->key, b->ends[i]);
                }
                pb->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
                pb->request_delete_range = &b->del[i];
                *bytes += 2 * strlen(o->key);
                return 0;
        }
        return err_set(-EINVAL, "etcd: txn: bad operation kind %d", (int) o->kind);
}

static int txn_build(TxnBuild *b, const EtcdCmp *cmps, size_t n_cmps, const EtcdOp *ops, size_t n_ops,
                     Etcdserverpb__TxnRequest *req) {
        size_t bytes = 0;
        int r;

        if (n_cmps > ETCD_MAX_TXN_OPS || n_ops > ETCD_MAX_TXN_OPS)
                return err_set(-EINVAL, "etcd: txn of %zu compares and %zu operations (at most %d each)", n_cmps,
                               n_ops, ETCD_MAX_TXN_OPS);
        if ((n_cmps && !cmps) || (n_ops && !ops))
                return err_set(-EINVAL, "etcd: txn without its compares or operations");
        b->cmp = calloc(n_cmps + 1, sizeof(*b->cmp));
        b->cmpp = calloc(n_cmps + 1, sizeof(*b->cmpp));
        b->op = calloc(n_ops + 1, sizeof(*b->op));
        b->opp = calloc(n_ops + 1, sizeof(*b->opp));
        b->put = calloc(n_ops + 1, sizeof(*b->put));
        b->del = calloc(n_ops + 1, sizeof(*b->del));
        b->ends = calloc(n_ops + 1, sizeof(*b->ends));
        b->n_ops = n_ops;
        if (!b->cmp || !b->cmpp || !b->op || !b->opp || !b->put || !b->del || !b->ends)
                return err_set(-ENOMEM, "out of memory");
        for (size_t i = 0; i < n_cmps; i++) {
                if ((r = txn_cmp(&cmps[i], &b->cmp[i])) < 0)
                        return r;
                b->cmpp[i] = &b->cmp[i];
                bytes += strlen(cmps[i].key) + cmps[i].value_len;
        }
        for (size_t i = 0; i < n_ops; i++) {
                if ((r = txn_op(b, i, &ops[i], &bytes)) < 0)
                        return r;
                b->opp[i] = &b->op[i];
        }
        if (bytes > MAX_REQUEST_BYTES)
                return err_set(-EINVAL, "etcd: txn of %zu bytes is more than etcd takes (%d)", bytes,
                               MAX_REQUEST_BYTES);
        req->n_compare = n_cmps;
        req->compare = b->cmpp;
        req->n_success = n_ops;
        req->success = b->opp;
        return 0;
}

int etcd_txn(Etcd *e, const EtcdCmp *cmps, size_t n_cmps, const EtcdOp *ops, size_t n_ops, int64_t timeout_ms,
             int64_t *ret_revision) {
        Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
        TxnBuild b = { 0 };
        ProtobufCMessage *m = NULL;

        int r = txn_build(&b, cmps, n_cmps, ops, n_ops, &req);
        if (r == 0)
                r = etcd_unary(e, KV_SVC, "Txn", &req.base, timeout_ms, false, &m);
        txn_build_clear(&b);
        if (r < 0)
                return r;
        Etcdserverpb__TxnResponse *resp = (Etcdserverpb__TxnResponse *) m;
        r = resp->succeeded ? 1 : 0;
        if (ret_revision)
                *ret_revision = resp->header ? resp->header->revision : 0;
        protobuf_c_message_free_unpacked(m, NULL);
        return r;
}

/* ---- leases ------------------------------------------------------------------ */

int etcd_lease_grant(Etcd *e, int64_t ttl_s, int64_t timeout_ms, int64_t *ret_id, int64_t *ret_ttl_s) {
        Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
        ProtobufCMessage *m = NULL;

        if (ttl_s <= 0)
                return err_set(-EINVAL, "etcd: lease TTL %" PRId64 " s", ttl_s);
        req.ttl = ttl_s;
        int r = etcd_unary(e, LEASE_SVC, "LeaseGrant", &req.base, timeout_ms, false, &m);
        if (r < 0)
                return r;
        Etcdserverpb__LeaseGrantResponse *resp = (Etcdserverpb__LeaseGrantResponse *) m;
        if (resp->error && *resp->error)
                r = err_set(-EIO, "etcd: lease grant: %s", resp->error);
        else if (resp->id == 0)
                r = err_set(-EIO, "etcd: lease grant: no lease id in the reply");
        if (r == 0) {
                *ret_id = resp->id;
                if (ret_ttl_s)
                        *ret_ttl_s = resp->ttl;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return r;
}

int etcd_lease_revoke(Etcd *e, int64_t id, int64_t timeout_ms) {
        Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
        ProtobufCMessage *m = NULL;

        req.id = id;
        int r = etcd_unary(e, LEASE_SVC, "LeaseRevoke", &req.base, timeout_ms, false, &m);
        if (r < 0)
                return r;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
}
