/* The etcd client's streams (etcd.h): LeaseKeepAlive and Watch, etcd's
 * bidirectional gRPC streams, on the connections of etcd.c (etcd-priv.h).
 *
 * A stream holds its connection's reference for its lifetime and bounds
 * every wait with rpc_stream_read_timeout.  Opening one has its own
 * deadline, shorter than the stream's life (which has none): the wait for
 * a connection on each endpoint tried, and for a Watch etcd's
 * confirmation (created), so nothing written after etcd_watch_open
 * returns can be missed.
 *
 * Every stream carries etcd's require-leader metadata ("hasleader" =
 * "true", clientv3.WithRequireLeader; the key is rpctypes.
 * MetadataRequireLeaderKey in etcd 3.4): a member without a leader
 * refuses the stream (UNAVAILABLE "etcdserver: no leader") and, after
 * three election timeouts without one, cancels those open (a Watch ends
 * CANCELLED "etcdserver: watch canceled", a LeaseKeepAlive UNAVAILABLE).
 * Without it a watch on a member cut off from its quorum stays silent.
 * A CANCELLED end we did not ask for is such a refusal: -EAGAIN, and the
 * client moves to the next endpoint.
 */
#include "etcd-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"

#define LEASE_SVC (&etcdserverpb__lease__descriptor)
#define WATCH_SVC (&etcdserverpb__watch__descriptor)

static const RpcCallMeta require_leader[] = { { "hasleader", "true" } };

struct EtcdKeepAlive {
        Etcd *e;
        EtcdConn *conn; /* reference held */
        int idx;
        RpcStream *st;
        int dead;       /* 0, or the error that ended the stream */
};

struct EtcdWatch {
        Etcd *e;
        EtcdConn *conn;        /* reference held */
        int idx;
        RpcStream *st;         /* immutable once open (etcd_watch_cancel reads it) */
        atomic_bool cancelled; /* atomic */
        int dead;              /* owner only: 0, or the error that ended the stream */
};


/* Open a bidi stream of @svc/@method on the current endpoint, trying the
 * next ones while none could be reached (nothing was sent), all before
 * @dl.  The stream and the connection reference it holds. */
static int stream_open(Etcd *e, const ProtobufCServiceDescriptor *svc, const char *method, Deadline dl,
                       RpcStream **ret_st, EtcdConn **ret_conn, int *ret_idx) {
        int r = -EAGAIN;

        for (int attempt = 0; attempt < e->n; attempt++) {
                EtcdConn *c;
                int idx;

                int64_t left = deadline_remaining_ms(dl);
                if (attempt > 0 && left <= 0)
                        break;
                if ((r = etcd_conn_get(e, &c, &idx)) < 0)
                        return r;
                r = rpc_bidi_open_meta(c->cl, svc, method, -1, require_leader, ELEMENTSOF(require_leader),
                                       MAX(left, 1), ret_st);
                if (r == 0) {
                        *ret_conn = c;
                        *ret_idx = idx;
                        return 0;
                }
                etcd_conn_unref(c);
                if (r != -ECONNREFUSED && r != -EHOSTUNREACH && r != -EAGAIN)
                        return etcd_error(e, idx, method, r, NULL);
                etcd_conn_failed(e, idx);
                r = etcd_error(e, idx, method, r, NULL);
        }
        return r;
}

/* A stream read or send failed with @r: its -errno for the caller
 * (-ETIMEDOUT for a read timeout, -ECANCELED when @cancelled: we cancelled
 * it; else -EAGAIN: the stream is broken), moving to the next endpoint
 * when this one is not serving (etcd ending a stream we did not cancel
 * means it has no leader). */
static int stream_failed(Etcd *e, int idx, RpcStream *st, const char *what, int r, bool cancelled) {
        const RpcStatus *status = rpc_stream_status(st);

        if (r == -ETIMEDOUT && !status)
                return err_set(-ETIMEDOUT, "etcd %s: %s: no answer in time", e->endpoints[idx], what);
        if (cancelled)
                return err_set(-ECANCELED, "etcd %s: %s: cancelled", e->endpoints[idx], what);
        if (etcd_endpoint_failed(r, status) || (status && status->code == RPC_CANCELLED))
                etcd_conn_failed(e, idx);
        if (r == 0)
                return err_set(-EAGAIN, "etcd %s: %s: the stream ended", e->endpoints[idx], what);
        return err_prefix(-EAGAIN, "etcd %s: %s: the stream broke", e->endpoints[idx], what);
}

int etcd_keepalive_open(Etcd *e, int64_t timeout_ms, EtcdKeepAlive **ret) {
        Deadline dl = deadline_in_ms(timeout_ms > 0 ? timeout_ms : e->default_timeout_ms);
        EtcdKeepAlive *k = calloc(1, sizeof(*k));
        if (!k)
                return err_set(-ENOMEM, "out of memory");
        k->e = e;
        int r = stream_open(e, LEASE_SVC, "LeaseKeepAlive", dl, &k->st, &k->conn, &k->idx);
        if (r < 0) {
                free(k);
                return r;
        }
        *ret = k;
        return 0;
}

int etcd_keepalive_once(EtcdKeepAlive *k, int64_t id, int64_t timeout_ms, int64_t *ret_ttl_s) {
        Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        int r;

        if (k->dead)
                return err_set(k->dead, "etcd %s: keepalive: the stream is dead", k->e->endpoints[k->idx]);
        req.id = id;
        r = rpc_bidi_send(k->st, &req.base);
        if (r == 0)
                r = rpc_stream_read_timeout(k->st, timeout_ms > 0 ? timeout_ms : k->e->default_timeout_ms, &m);
        if (r <= 0) {
                r = stream_failed(k->e, k->idx, k->st, "keepalive", r, false);
                k->dead = r;
                return r;
        }
        Etcdserverpb__LeaseKeepAliveResponse *resp = (Etcdserverpb__LeaseKeepAliveResponse *) m;
        if (resp->ttl <= 0) {
                r = err_set(-ENOENT, "etcd: lease %" PRId64 " has expired or was revoked", id);
                k->dead = r;
        } else if (resp->id != id) {
                r = err_set(-EIO, "etcd: keepalive of lease %" PRId64 " answered for %" PRId64, id, resp->id);
                k->dead = r;
        } else if (ret_ttl_s) {
                *ret_ttl_s = resp->ttl;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return r < 0 ? r : 0;
}

void etcd_keepalive_close(EtcdKeepAlive *k) {
        if (!k)
                return;
        rpc_stream_free(k->st);
        etcd_conn_unref(k->conn);
        free(k);
}

void etcd_events_free(EtcdEvent *ev, size_t n) {
        for (size_t i = 0; ev && i < n; i++)
                etcd_kv_clear(&ev[i].kv);
        free(ev);
}

/* The end of a watch told by etcd (canceled): -ERANGE when compacted. */
static int watch_canceled(EtcdWatch *w, const Etcdserverpb__WatchResponse *resp) {
        const char *ep = w->e->endpoints[w->idx];
        if (resp->compact_revision > 0)
                return err_set(-ERANGE, "etcd %s: watch: compacted up to revision %" PRId64, ep,
                               resp->compact_revision);
        return err_set(-EAGAIN, "etcd %s: watch cancelled by etcd: %s", ep,
                       resp->cancel_reason && *resp->cancel_reason ? resp->cancel_reason : "no reason");
}

/* Read the next WatchResponse within @dl (NULL deadline: none). 1 and
 * *ret, 0 when the time ran out, or the stream's end (w->dead set). */
static int watch_read(EtcdWatch *w, const Deadline *dl, Etcdserverpb__WatchResponse **ret) {
        ProtobufCMessage *m = NULL;
        int64_t left = dl ? deadline_remaining_ms(*dl) : -1;
        int r = rpc_stream_read_timeout(w->st, dl && left < 0 ? 0 : left, &m);

        if (r == 1) {
                *ret = (Etcdserverpb__WatchResponse *) m;
                return 1;
        }
        r = stream_failed(w->e, w->idx, w->st, "watch", r, atomic_load(&w->cancelled));
        if (r == -ETIMEDOUT)
                return 0;
        w->dead = r;
        return r;
}

int etcd_watch_open(Etcd *e, const char *key, bool prefix, int64_t start_revision, int64_t timeout_ms,
                    EtcdWatch **ret) {
        Deadline dl = deadline_in_ms(timeout_ms > 0 ? timeout_ms : e->default_timeout_ms);
        Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
        Etcdserverpb__WatchCreateRequest create = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
        Etcdserverpb__WatchResponse *resp = NULL;
        int r;

        if ((r = etcd_check_key(key, "watch")) < 0)
                return r;
        if (start_revision < 0)
                return err_set(-EINVAL, "etcd: watch %s from revision %" PRId64, key, start_revision);
        _cleanup_free_ uint8_t *end = malloc(strlen(key) + 1);
        EtcdWatch *w = calloc(1, sizeof(*w));
        if (!end || !w) {
                free(w);
                return err_set(-ENOMEM, "out of memory");
        }
        w->e = e;
        atomic_init(&w->cancelled, false);
        r = stream_open(e, WATCH_SVC, "Watch", dl, &w->st, &w->conn, &w->idx);
        if (r < 0) {
                free(w);
                return r;
        }
        create.key = etcd_key_bytes(key);
        if (prefix)
                create.range_end = etcd_prefix_end(key, end);
        create.start_revision = start_revision;
        req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
        req.create_request = &create;
        r = rpc_bidi_send(w->st, &req.base);
        if (r < 0)
                r = stream_failed(e, w->idx, w->st, "watch", r, false);
        /* Wait for etcd to confirm, so that later writes are seen. */
        if (r == 0) {
                r = watch_read(w, &dl, &resp);
                if (r == 0)
                        r = err_set(-ETIMEDOUT, "etcd %s: watch %s: not confirmed in time", e->endpoints[w->idx], key);
        }
        if (r > 0) {
                r = 0;
                if (resp->canceled)
                        r = watch_canceled(w, resp);
                else if (!resp->created)
                        r = err_set(-EIO, "etcd %s: watch %s: no confirmation", e->endpoints[w->idx], key);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        if (r < 0) {
                etcd_watch_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

static int events_from_pb(const Etcdserverpb__WatchResponse *resp, EtcdEvent **ret, size_t *ret_n) {
        EtcdEvent *ev = calloc(resp->n_events, sizeof(*ev));
        if (!ev)
                return err_set(-ENOMEM, "out of memory");
        for (size_t i = 0; i < resp->n_events; i++) {
                ev[i].deleted = resp->events[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE;
                int r = etcd_kv_from_pb(resp->events[i]->kv, &ev[i].kv);
                if (r < 0) {
                        etcd_events_free(ev, i);
                        return r;
                }
        }
        *ret = ev;
        *ret_n = resp->n_events;
        return (int) resp->n_events;
}

int etcd_watch_next(EtcdWatch *w, int64_t timeout_ms, EtcdEvent **ret, size_t *ret_n) {
        Deadline dl = deadline_in_ms(timeout_ms);

        for (;;) {
                Etcdserverpb__WatchResponse *resp = NULL;

                if (atomic_load(&w->cancelled))
                        return err_set(-ECANCELED, "etcd: watch cancelled");
                if (w->dead)
                        return err_set(w->dead, "etcd %s: watch: the stream is dead", w->e->endpoints[w->idx]);
                int r = watch_read(w, timeout_ms > 0 ? &dl : NULL, &resp);
                if (r <= 0)
                        return r;
                if (resp->canceled) {
                        r = w->dead = watch_canceled(w, resp);
                } else if (resp->n_events > 0) {
                        r = events_from_pb(resp, ret, ret_n);
                        if (r < 0)
                                w->dead = r;
                }
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                if (r != 0)
                        return r;
                /* A progress or confirmation reply: keep waiting. */
        }
}

void etcd_watch_cancel(EtcdWatch *w) {
        atomic_store(&w->cancelled, true);
        rpc_stream_cancel(w->st);
}

void etcd_watch_free(EtcdWatch *w) {
        if (!w)
                return;
        rpc_stream_free(w->st);
        etcd_conn_unref(w->conn);
        free(w);
}
