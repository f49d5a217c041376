/* gRPC server on the C core (see rpcserver.h).
 *
 * Shape (shared/reference/grpc-c-core.md §2, §9): one notification
 * completion queue polled by a pool of worker threads; for every registered
 * method `requests_per_method` pre-armed grpc_server_request_registered_call
 * requests (payload read together with the call), plus two catch-all
 * grpc_server_request_call requests that answer UNIMPLEMENTED for paths we
 * do not serve (without them such calls would hang until their deadline).
 * Each request carries an RpcCall with its own GRPC_CQ_NEXT queue; when a
 * request fires, the worker re-arms one for the same method and then serves
 * the call synchronously: it starts RECV_CLOSE_ON_SERVER first (so that
 * cancellation becomes visible as an event on the call's queue), parses,
 * runs the handler, sends the status and waits for the close event.
 *
 * The call's queue also carries wake-ups: rpc_call_wake() from any thread
 * starts an empty batch, which the core completes at once.  All batches on
 * one call are serialised by call->lock, and `ended` under the same lock
 * turns wakes after teardown into no-ops.
 *
 * Shutdown: stop re-arming, grpc_server_shutdown_and_notify, wait up to the
 * grace period for the notification, then grpc_server_cancel_all_calls and
 * wait for the handlers to return; destroy the server, shut the queue down
 * and join the workers.
 *
 * What the client shares (library lifetime, the status tables, addresses
 * and the development-mode rule, TLS credentials, channel arguments,
 * packing, the UTF-8 check of requests) lives in rpc.c.
 */
#include "rpcserver.h"

#include <errno.h>
#include <grpc/support/alloc.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "deadline.h"
#include "err.h"
#include "lock.h"
#include "log.h"
#include "rpc-priv.h"

#define DEFAULT_THREADS 8
#define CATCH_ALL_REQUESTS 2
#define STUCK_LOG_MS 5000

static LockClass server_lock_class = LOCK_CLASS_INIT("rpc-server");
static LockClass call_lock_class = LOCK_CLASS_INIT("rpc-call");

static char tag_close, tag_wake, tag_send, tag_status;
#define TAG_CLOSE ((void *) &tag_close)
#define TAG_WAKE ((void *) &tag_wake)
#define TAG_SEND ((void *) &tag_send)
#define TAG_STATUS ((void *) &tag_status)

/* A served path.  The catch-all has no descriptor and no handler. */
typedef struct RpcMethod {
        char *path;                             /* immutable: "/pkg.Svc/Method" */
        const ProtobufCMethodDescriptor *desc;  /* immutable; NULL for the catch-all */
        RpcUnaryFn unary;                       /* immutable */
        RpcStreamFn stream;                     /* immutable */
        void *user;                             /* immutable */
        void *handle;                           /* immutable: grpc registration */
} RpcMethod;

/* srv->lock protects the lifecycle flags, the pending-request count and
 * the list of calls being served. */
struct RpcServer {
        grpc_server *server;            /* immutable until shutdown (owner thread) */
        grpc_completion_queue *cq;      /* immutable until shutdown (owner thread) */
        RpcServerOptions opts;          /* immutable */
        RpcMethod **methods;            /* immutable once started */
        size_t n_methods;               /* immutable once started */
        RpcMethod catch_all;            /* immutable */
        pthread_t *workers;             /* owner thread */
        size_t n_workers;               /* owner thread */
        Lock lock;
        Cond cond;                      /* signals shutdown_done */
        bool started;                   /* lock: srv->lock */
        bool shutting_down;             /* lock: srv->lock */
        bool shutdown_done;             /* lock: srv->lock */
        bool destroyed;                 /* owner thread; written under srv->lock */
        int n_cancelled;                /* lock: srv->lock */
        unsigned n_pending;             /* lock: srv->lock; armed requests */
        RpcCall *active;                /* lock: srv->lock */
        unsigned n_active;              /* lock: srv->lock */
        char shutdown_tag;              /* its address is the shutdown tag */
        bool lib_ref;                   /* immutable */
};

/* call->lock serialises grpc_call_start_batch on the call (the handler
 * thread and wakers) and protects the two flags marked with it.  Fields
 * without a rule belong to the worker serving the call. */
struct RpcCall {
        atomic_int refs;                /* atomic */
        RpcServer *srv;                 /* immutable */
        RpcMethod *method;              /* immutable */
        grpc_completion_queue *cq;      /* immutable while served; the call's own queue */
        grpc_call *call;                /* written by the core at accept, then immutable */
        gpr_timespec deadline;          /* ditto */
        grpc_metadata_array md;         /* ditto */
        grpc_byte_buffer *payload;      /* ditto */
        grpc_call_details details;      /* ditto (catch-all only) */
        int close_cancelled;            /* RECV_CLOSE_ON_SERVER output */
        bool closed;                    /* the close event arrived: the call is over */
        bool woken;                     /* a wake event arrived and was not yet reported */
        bool sent_initial_md;
        const char *status_details;     /* arena */
        uint64_t started_ns;
        Lock lock;
        bool wake_pending;              /* lock: call->lock; a wake batch is queued */
        bool ended;                     /* lock: call->lock; torn down, wakes are no-ops */
        RpcCall *prev, *next;           /* lock: srv->lock (active list) */
};

static RpcCall *call_new(RpcServer *srv, RpcMethod *m) {
        RpcCall *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        atomic_init(&c->refs, 1);
        c->srv = srv;
        c->method = m;
        c->cq = grpc_completion_queue_create_for_next(NULL);
        grpc_metadata_array_init(&c->md);
        grpc_call_details_init(&c->details);
        lock_init(&c->lock, &call_lock_class);
        return c;
}

RpcCall *rpc_call_ref(RpcCall *c) {
        int old = atomic_fetch_add(&c->refs, 1);
        assert(old > 0);
        return c;
}

void rpc_call_unref(RpcCall *c) {
        if (!c)
                return;
        int old = atomic_fetch_sub(&c->refs, 1);
        assert(old > 0);
        if (old > 1)
                return;
        assert(!c->cq);
        lock_destroy(&c->lock);
        free(c);
}

/* Release everything gRPC about @c (which may never have been accepted),
 * then drop the server's reference. */
static void call_release(RpcCall *c) {
        lock_acquire(&c->lock);
        c->ended = true;
        lock_release(&c->lock);
        grpc_metadata_array_destroy(&c->md);
        grpc_call_details_destroy(&c->details);
        if (c->payload)
                grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        if (c->call)
                grpc_call_unref(c->call);
        grpc_completion_queue_shutdown(c->cq);
        while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(c->cq);
        c->cq = NULL;
        rpc_call_unref(c);
}

static grpc_call_error call_start_batch(RpcCall *c, const grpc_op *ops, size_t n, void *tag) {
        lock_acquire(&c->lock);
        grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
        lock_release(&c->lock);
        return e;
}

/* Record a stray event on the call's queue. */
static void call_absorb(RpcCall *c, void *tag) {
        if (tag == TAG_CLOSE)
                c->closed = true;
        else if (tag == TAG_WAKE) {
                lock_acquire(&c->lock);
                c->wake_pending = false;
                lock_release(&c->lock);
                c->woken = true;
        }
}

/* Wait for the batch @tag on the call's queue; returns its success flag. */
static bool call_wait_tag(RpcCall *c, void *tag) {
        for (;;) {
                grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                assert(ev.type == GRPC_OP_COMPLETE);
                call_absorb(c, ev.tag);
                if (ev.tag == tag)
                        return ev.success != 0;
        }
}

RpcWait rpc_call_wait(RpcCall *c, int64_t timeout_ms) {
        gpr_timespec dl = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC) : rpc_deadline_ms(timeout_ms);

        for (;;) {
                if (c->closed)
                        return RPC_WAIT_CANCELLED;
                if (c->woken) {
                        c->woken = false;
                        return RPC_WAIT_WOKEN;
                }
                grpc_event ev = grpc_completion_queue_next(c->cq, dl, NULL);
                if (ev.type == GRPC_QUEUE_TIMEOUT)
                        return RPC_WAIT_TIMEOUT;
                assert(ev.type == GRPC_OP_COMPLETE);
                call_absorb(c, ev.tag);
        }
}

bool rpc_call_cancelled(RpcCall *c) {
        while (!c->closed) {
                grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type != GRPC_OP_COMPLETE)
                        break;
                call_absorb(c, ev.tag);
        }
        return c->closed;
}

void rpc_call_wake(RpcCall *c) {
        lock_acquire(&c->lock);
        if (!c->ended && !c->wake_pending && c->call &&
            grpc_call_start_batch(c->call, NULL, 0, TAG_WAKE, NULL) == GRPC_CALL_OK)
                c->wake_pending = true;
        lock_release(&c->lock);
}

int64_t rpc_call_remaining_ms(RpcCall *c) {
        gpr_timespec d = c->deadline;

        if (d.tv_sec == INT64_MAX || gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
                return -1;
        d = gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC);
        gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
        if (left.tv_sec < 0)
                return 0;
        return (int64_t) left.tv_sec * 1000 + (left.tv_nsec + 999999) / 1000000;
}

void *rpc_call_alloc(RpcCall *c, size_t size) {
        void *p = grpc_call_arena_alloc(c->call, size ? size : 1);
        memset(p, 0, size);
        return p;
}

char *rpc_call_strdup(RpcCall *c, const char *s) {
        size_t n = strlen(s) + 1;
        char *p = grpc_call_arena_alloc(c->call, n);
        memcpy(p, s, n);
        return p;
}

const char *rpc_call_method(RpcCall *c) {
        return c->method->path;
}

const char *rpc_call_metadata(RpcCall *c, const char *key, size_t *ret_len) {
        size_t klen = strlen(key);
        for (size_t i = 0; i < c->md.count; i++) {
                grpc_slice k = c->md.metadata[i].key;
                if (GRPC_SLICE_LENGTH(k) == klen && memcmp(GRPC_SLICE_START_PTR(k), key, klen) == 0) {
                        /* Not a copy: small slices keep their bytes inline. */
                        const grpc_slice *v = &c->md.metadata[i].value;
                        if (ret_len)
                                *ret_len = GRPC_SLICE_LENGTH(*v);
                        return (const char *) GRPC_SLICE_START_PTR(*v);
                }
        }
        return NULL;
}

void rpc_call_peer(RpcCall *c, char *buf, size_t size) {
        char *peer = grpc_call_get_peer(c->call);
        snprintf(buf, size, "%s", peer ? peer : "?");
        gpr_free(peer);
}

int rpc_call_peer_identity(RpcCall *c, char *buf, size_t size) {
        grpc_auth_context *ctx = grpc_call_auth_context(c->call);
        int r = -ENOENT;

        if (ctx) {
                grpc_auth_property_iterator it = grpc_auth_context_peer_identity(ctx);
                const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
                if (p && p->value) {
                        rpc_copy_span(buf, size, p->value, p->value_length);
                        r = 0;
                }
                grpc_auth_context_release(ctx);
        }
        if (r < 0)
                return err_set(r, "the call carries no verified client certificate");
        return 0;
}

RpcCode rpc_call_fail(RpcCall *c, RpcCode code, const char *fmt, ...) {
        char buf[ERR_MSG_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        c->status_details = rpc_call_strdup(c, buf);
        return code;
}

RpcCode rpc_call_fail_errno(RpcCall *c, int negerrno) {
        RpcCode code = rpc_status_from_errno(negerrno);
        if (code == RPC_OK)
                return rpc_call_fail(c, RPC_INTERNAL, "handler failed without an error code");
        rpc_call_fail(c, code, "%s", err_str(negerrno));
        err_clear();
        return code;
}

int rpc_call_send(RpcCall *c, const ProtobufCMessage *msg) {
        grpc_op ops[2];
        size_t n = 0;

        if (!c->method->stream || !msg || msg->descriptor != c->method->desc->output)
                return err_set(-EINVAL, "rpc_call_send on %s: not a stream or wrong message type",
                               c->method->path);
        if (c->closed)
                return err_set(-ECANCELED, "%s: the call is over", c->method->path);
        memset(ops, 0, sizeof(ops));
        if (!c->sent_initial_md) {
                ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
                c->sent_initial_md = true;
        }
        grpc_byte_buffer *bb = rpc_pack(msg);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
        grpc_call_error e = call_start_batch(c, ops, n, TAG_SEND);
        bool ok = e == GRPC_CALL_OK && call_wait_tag(c, TAG_SEND);
        grpc_byte_buffer_destroy(bb);
        if (!ok)
                return err_set(-ECANCELED, "%s: the call is over (cancelled, deadline or shutdown)",
                               c->method->path);
        return 0;
}

/* Send the final status (and @resp when not NULL) and wait for it. */
static void call_finish(RpcCall *c, RpcCode code, const ProtobufCMessage *resp) {
        grpc_op ops[3];
        size_t n = 0;
        grpc_byte_buffer *bb = NULL;

        if ((int) code < 0 || code >= RPC_CODE_MAX)
                code = rpc_call_fail(c, RPC_INTERNAL, "handler returned invalid status %d", (int) code);
        if (code == RPC_OK)
                c->status_details = NULL;
        else if (!c->status_details)
                c->status_details = rpc_code_to_string(code);
        grpc_slice details = grpc_slice_from_copied_string(c->status_details ? c->status_details : "");
        memset(ops, 0, sizeof(ops));
        if (!c->sent_initial_md) {
                ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
                c->sent_initial_md = true;
        }
        if (resp && code == RPC_OK) {
                bb = rpc_pack(resp);
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n++].data.send_message.send_message = bb;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code) code;
        ops[n++].data.send_status_from_server.status_details = &details;
        if (call_start_batch(c, ops, n, TAG_STATUS) == GRPC_CALL_OK)
                call_wait_tag(c, TAG_STATUS);
        if (bb)
                grpc_byte_buffer_destroy(bb);
        grpc_slice_unref(details);
}

static void *arena_alloc(void *data, size_t size) {
        return grpc_call_arena_alloc(data, size ? size : 1);
}

static void arena_free(void *data, void *p) {
}

static RpcCode call_dispatch(RpcCall *c, ProtobufCMessage **ret_resp) {
        RpcMethod *m = c->method;
        ProtobufCAllocator alloc = { .alloc = arena_alloc, .free = arena_free, .allocator_data = c->call };
        ProtobufCMessage *req;

        if (!m->desc) {
                char path[256];
                rpc_slice_str(c->details.method, path, sizeof(path));
                return rpc_call_fail(c, RPC_UNIMPLEMENTED, "unknown method %s", path);
        }
        if (!m->unary && !m->stream)
                return rpc_call_fail(c, RPC_UNIMPLEMENTED, "method %s is not served here", m->path);
        if (!c->payload)
                return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "missing request message");
        if (rpc_unpack(c->payload, m->desc->input, &alloc, &req) < 0 || rpc_check_strings(req) < 0)
                return rpc_call_fail_errno(c, -EINVAL); /* INVALID_ARGUMENT with the detail */
        if (m->stream)
                return m->stream(c, req, m->user);
        ProtobufCMessage *resp = grpc_call_arena_alloc(c->call, m->desc->output->sizeof_message);
        protobuf_c_message_init(m->desc->output, resp);
        *ret_resp = resp;
        return m->unary(c, req, resp, m->user);
}

static void server_track(RpcServer *srv, RpcCall *c, bool add) {
        lock_acquire(&srv->lock);
        if (add) {
                c->next = srv->active;
                if (c->next)
                        c->next->prev = c;
                srv->active = c;
                srv->n_active++;
        } else {
                if (c->prev)
                        c->prev->next = c->next;
                else
                        srv->active = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                c->prev = c->next = NULL;
                srv->n_active--;
        }
        lock_release(&srv->lock);
}

static void call_serve(RpcCall *c) {
        ProtobufCMessage *resp = NULL;
        grpc_op op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER };

        c->started_ns = now_ns();
        if (!c->method->desc)
                c->deadline = c->details.deadline;
        server_track(c->srv, c, true);
        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
        if (call_start_batch(c, &op, 1, TAG_CLOSE) != GRPC_CALL_OK)
                c->closed = true; /* cannot happen; treat as over */
        RpcCode code = call_dispatch(c, &resp);
        call_finish(c, code, resp);
        if (!c->closed)
                call_wait_tag(c, TAG_CLOSE);
        server_track(c->srv, c, false);
        call_release(c);
}

/* Arm one request for @m; frees the context if the server stopped. */
static void server_arm(RpcServer *srv, RpcMethod *m) {
        RpcCall *c = call_new(srv, m);
        grpc_call_error e = GRPC_CALL_ERROR;

        if (!c)
                return; /* the method has one request fewer; the others still serve */
        lock_acquire(&srv->lock);
        if (!srv->shutting_down) {
                if (m->handle)
                        e = grpc_server_request_registered_call(srv->server, m->handle, &c->call,
                                                                &c->deadline, &c->md, &c->payload,
                                                                c->cq, srv->cq, c);
                else
                        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md,
                                                     c->cq, srv->cq, c);
                if (e == GRPC_CALL_OK)
                        srv->n_pending++;
        }
        lock_release(&srv->lock);
        if (e != GRPC_CALL_OK)
                call_release(c);
}

static void *worker_main(void *arg) {
        RpcServer *srv = arg;

        for (;;) {
                grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        break;
                if (ev.type != GRPC_OP_COMPLETE)
                        continue;
                if (ev.tag == &srv->shutdown_tag) {
                        lock_acquire(&srv->lock);
                        srv->shutdown_done = true;
                        cond_broadcast(&srv->cond);
                        lock_release(&srv->lock);
                        continue;
                }
                RpcCall *c = ev.tag;
                lock_acquire(&srv->lock);
                srv->n_pending--;
                lock_release(&srv->lock);
                if (!ev.success) { /* request cancelled by shutdown */
                        call_release(c);
                        continue;
                }
                server_arm(srv, c->method);
                call_serve(c);
        }
        return NULL;
}

int rpc_server_new(const RpcServerOptions *opts, RpcServer **ret_srv) {
        RpcServer *srv = calloc(1, sizeof(*srv));
        if (!srv)
                return err_set(-ENOMEM, "out of memory");
        if (opts)
                srv->opts = *opts;
        if (srv->opts.threads == 0)
                srv->opts.threads = DEFAULT_THREADS;
        if (srv->opts.requests_per_method == 0)
                srv->opts.requests_per_method = srv->opts.threads;
        srv->opts.max_request_bytes = rpc_message_cap(srv->opts.max_request_bytes);
        lock_init(&srv->lock, &server_lock_class);
        cond_init(&srv->cond);
        srv->catch_all.path = "(unknown)";

        rpc_lib_ref();
        srv->lib_ref = true;
        RpcArgs args;
        srv->server = grpc_server_create(rpc_args_server(&args, srv->opts.max_request_bytes), NULL);
        srv->cq = grpc_completion_queue_create_for_next(NULL);
        if (!srv->server || !srv->cq) {
                rpc_server_free(srv);
                return err_set(-ENOMEM, "cannot create the gRPC server");
        }
        grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
        *ret_srv = srv;
        return 0;
}

int rpc_server_add_service(RpcServer *srv, const ProtobufCServiceDescriptor *svc,
                           const RpcMethodDef *defs, size_t n_defs, void *user) {
        if (srv->started || srv->destroyed)
                return err_set(-EBUSY, "add_service: the server is already started");
        for (size_t i = 0; i < n_defs; i++) {
                const RpcMethodDef *d = &defs[i];
                const ProtobufCMethodDescriptor *md =
                        d->name ? protobuf_c_service_descriptor_get_method_by_name(svc, d->name) : NULL;
                char path[512];

                if (!md)
                        return err_set(-ENOENT, "service %s has no method %s", svc->name,
                                       d->name ? d->name : "(null)");
                if (!d->unary == !d->stream)
                        return err_set(-EINVAL, "%s.%s: give exactly one of unary/stream", svc->name, d->name);
                snprintf(path, sizeof(path), "/%s/%s", svc->name, md->name);
                for (size_t j = 0; j < srv->n_methods; j++)
                        if (strcmp(srv->methods[j]->path, path) == 0)
                                return err_set(-EEXIST, "method %s registered twice", path);
                RpcMethod *m = calloc(1, sizeof(*m));
                RpcMethod **grown = realloc(srv->methods, (srv->n_methods + 1) * sizeof(*grown));
                if (grown)
                        srv->methods = grown;
                if (!m || !grown || !(m->path = strdup(path))) {
                        free(m);
                        return err_set(-ENOMEM, "out of memory");
                }
                m->desc = md;
                m->unary = d->unary;
                m->stream = d->stream;
                m->user = user;
                m->handle = grpc_server_register_method(srv->server, m->path, NULL,
                                                        GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
                if (!m->handle) {
                        free(m->path);
                        free(m);
                        return err_set(-EEXIST, "gRPC refused to register %s", path);
                }
                srv->methods[srv->n_methods++] = m;
        }
        return 0;
}

/* A live process listening on the unix socket is never replaced (gRPC
 * would unlink it and bind); a stale socket file is left to gRPC. */
static int check_unix_free(const char *addr, const char *path, bool abstract) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t len;
        struct stat st;
        _cleanup_close_ int fd = -1;

        if (abstract) {
                memcpy(sa.sun_path + 1, path, strlen(path));
                len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path));
        } else {
                if (lstat(path, &st) < 0)
                        return errno == ENOENT ? 0 : err_set(-errno, "cannot inspect %s: %s", path, strerror(errno));
                if (!S_ISSOCK(st.st_mode))
                        return err_set(-EEXIST, "cannot listen on %s: the path exists and is not a socket", addr);
                memcpy(sa.sun_path, path, strlen(path));
                len = (socklen_t) sizeof(sa);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return err_set(-errno, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *) &sa, len) == 0)
                return err_set(-EADDRINUSE, "cannot listen on %s: another process is listening there", addr);
        if (errno == ECONNREFUSED || errno == ENOENT)
                return 0;
        return err_set(-errno, "cannot check %s: %s", addr, strerror(errno));
}

/* gRPC says only "failed": find out why with a bind of our own. */
static int explain_tcp_failure(const char *addr, const char *host, const char *port, bool tls) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
        struct addrinfo *res = NULL;
        int r = 0;

        if (!*port)
                return err_set(-EINVAL, "cannot listen on '%s': no port", addr);
        if (getaddrinfo(*host ? host : NULL, port, &hints, &res) != 0)
                return err_set(-EINVAL, "cannot listen on '%s': cannot resolve '%s'", addr, host);
        for (struct addrinfo *ai = res; ai && r == 0; ai = ai->ai_next) {
                int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
                if (fd < 0)
                        continue;
                if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
                        r = -errno;
                close(fd);
        }
        freeaddrinfo(res);
        if (r == -EADDRINUSE)
                return err_set(r, "cannot listen on %s: address already in use", addr);
        if (r < 0)
                return err_set(r, "cannot listen on %s: %s", addr, strerror(-r));
        return err_set(-EINVAL, "gRPC cannot listen on %s%s", addr,
                       tls ? " (bad TLS certificate or key?)" : "");
}

int rpc_server_listen(RpcServer *srv, const char *addr, const RpcTls *tls) {
        RpcAddrKind kind;
        char path[128], host[256], port[32];
        grpc_server_credentials *creds;
        RpcPem pem = { 0 };
        int r;

        if (srv->started || srv->destroyed)
                return err_set(-EBUSY, "listen: the server is already started");
        r = rpc_addr_parse(addr, &kind, path, sizeof(path), host, sizeof(host), port, sizeof(port));
        if (r < 0)
                return r;
        if (kind == RPC_ADDR_UNIX || kind == RPC_ADDR_UNIX_ABSTRACT) {
                r = check_unix_free(addr, path, kind == RPC_ADDR_UNIX_ABSTRACT);
                if (r < 0)
                        return r;
        }
        r = rpc_pem_prepare(tls, true, addr, &pem);
        if (r < 0)
                return r;
        creds = rpc_server_creds(&pem);
        int bound = grpc_server_add_http2_port(srv->server, addr, creds);
        grpc_server_credentials_release(creds);
        rpc_pem_clear(&pem);
        if (bound <= 0) {
                if (kind == RPC_ADDR_UNIX || kind == RPC_ADDR_UNIX_ABSTRACT)
                        return err_set(-EINVAL, "gRPC cannot listen on %s", addr);
                return explain_tcp_failure(addr, host, port, tls != NULL);
        }
        return kind == RPC_ADDR_UNIX || kind == RPC_ADDR_UNIX_ABSTRACT ? 0 : bound;
}

int rpc_server_start(RpcServer *srv) {
        sigset_t block, old;
        int r = 0;

        if (srv->started || srv->destroyed)
                return err_set(-EBUSY, "the server is already started");
        grpc_server_start(srv->server);
        lock_acquire(&srv->lock);
        srv->started = true;
        lock_release(&srv->lock);

        srv->workers = calloc(srv->opts.threads, sizeof(pthread_t));
        if (!srv->workers)
                return err_set(-ENOMEM, "out of memory");
        /* Workers never take SIGPIPE (nor the signals a daemon sigwait()s for). */
        sigemptyset(&block);
        sigaddset(&block, SIGPIPE);
        sigaddset(&block, SIGINT);
        sigaddset(&block, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        for (unsigned i = 0; i < srv->opts.threads; i++) {
                int e = pthread_create(&srv->workers[i], NULL, worker_main, srv);
                if (e != 0) {
                        r = err_set(-e, "cannot start worker threads: %s", strerror(e));
                        break;
                }
                srv->n_workers++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (srv->n_workers == 0)
                return r;
        for (size_t i = 0; i < srv->n_methods; i++)
                for (unsigned k = 0; k < srv->opts.requests_per_method; k++)
                        server_arm(srv, srv->methods[i]);
        for (unsigned k = 0; k < CATCH_ALL_REQUESTS; k++)
                server_arm(srv, &srv->catch_all);
        return 0;
}

/* Wait for the shutdown notification after cancelling every call; only a
 * handler that ignores cancellation keeps this waiting. */
static void server_wait_cancelled_locked(RpcServer *srv) {
        bool logged = false;

        lock_assert_held(&srv->lock);
        while (!srv->shutdown_done) {
                Deadline d = deadline_in_ms(STUCK_LOG_MS);
                while (!srv->shutdown_done && cond_wait(&srv->cond, &srv->lock, d) == 0)
                        ;
                if (srv->shutdown_done || logged)
                        continue;
                logged = true;
                for (RpcCall *c = srv->active; c; c = c->next)
                        log_warning("rpc server shutdown: handler for %s ignores cancellation "
                                    "(running %.1f s)",
                                    c->method->path, (double) (now_ns() - c->started_ns) / 1e9);
        }
}

int rpc_server_shutdown(RpcServer *srv, int64_t grace_ms) {
        lock_acquire(&srv->lock);
        if (srv->shutting_down || srv->destroyed) {
                int n = srv->n_cancelled;
                lock_release(&srv->lock);
                return n;
        }
        srv->shutting_down = true;
        bool started = srv->started && srv->n_workers > 0;
        lock_release(&srv->lock);

        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        if (!started) {
                /* No workers: collect the notification ourselves. */
                for (;;) {
                        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                        if (ev.type != GRPC_OP_COMPLETE || ev.tag == &srv->shutdown_tag)
                                break;
                        call_release(ev.tag);
                }
        } else {
                Deadline grace = deadline_in_ms(grace_ms < 0 ? 0 : grace_ms);
                lock_acquire(&srv->lock);
                while (!srv->shutdown_done && cond_wait(&srv->cond, &srv->lock, grace) == 0)
                        ;
                if (!srv->shutdown_done) {
                        srv->n_cancelled = (int) srv->n_active;
                        lock_release(&srv->lock);
                        grpc_server_cancel_all_calls(srv->server);
                        lock_acquire(&srv->lock);
                        server_wait_cancelled_locked(srv);
                }
                lock_release(&srv->lock);
        }
        grpc_server_destroy(srv->server);
        srv->server = NULL;
        grpc_completion_queue_shutdown(srv->cq);
        for (size_t i = 0; i < srv->n_workers; i++)
                pthread_join(srv->workers[i], NULL);
        if (!started) /* drain what the never-started queue still holds */
                while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                       GRPC_QUEUE_SHUTDOWN)
                        ;
        grpc_completion_queue_destroy(srv->cq);
        srv->cq = NULL;
        lock_acquire(&srv->lock);
        srv->destroyed = true;
        int n = srv->n_cancelled;
        lock_release(&srv->lock);
        return n;
}

void rpc_server_free(RpcServer *srv) {
        if (!srv)
                return;
        if (srv->server && srv->cq)
                rpc_server_shutdown(srv, 0);
        else {
                if (srv->server)
                        grpc_server_destroy(srv->server);
                if (srv->cq) {
                        grpc_completion_queue_shutdown(srv->cq);
                        grpc_completion_queue_destroy(srv->cq);
                }
        }
        for (size_t i = 0; i < srv->n_methods; i++) {
                free(srv->methods[i]->path);
                free(srv->methods[i]);
        }
        free(srv->methods);
        free(srv->workers);
        cond_destroy(&srv->cond);
        lock_destroy(&srv->lock);
        if (srv->lib_ref)
                rpc_lib_unref();
        free(srv);
}
