/* gRPC server on the C core (see rpcserver.h): lanes, acceptors, workers,
 * listeners and the lifecycle.  One call, from parse to close, and the
 * handler-side API live in rpcserver-call.c.
 *
 * Shape (shared/reference/grpc-c-core.md §2, §9), once per lane: a
 * notification completion queue registered with the server; for every
 * method of the lane `requests` pre-armed
 * grpc_server_request_registered_call requests (payload read together
 * with the call) whose notifications arrive on the lane's queue; one
 * acceptor thread that only takes completed requests off that queue,
 * stamps them and appends them to the lane's FIFO of accepted calls; and
 * `threads` workers that take calls from the FIFO and serve them
 * synchronously.  Lane 0 also keeps two catch-all grpc_server_request_call
 * requests that answer UNIMPLEMENTED for paths we do not serve (without
 * them such calls would hang until their deadline).  Nothing of one lane
 * is reachable from another, so a lane cannot take another's workers.
 *
 * Re-arming: the acceptor re-arms a request for the same method as it
 * queues a call, so calls leave gRPC as they arrive, unless the FIFO holds
 * `max_queued` calls; then the method is owed a request, and a worker
 * taking a call pays one debt.  Per method, armed + owed stays `requests`,
 * so the FIFO stays below max_queued + the lane's armed requests.
 *
 * Pickup: a worker checks the call's deadline before anything else; an
 * expired call is answered DEADLINE_EXCEEDED without its handler.  Each
 * lane counts under its own lock (never held across a gRPC call) what
 * rpc_server_lane_stats() reports.
 *
 * Shutdown: stop re-arming, grpc_server_shutdown_and_notify on lane 0's
 * queue (its acceptor, which never runs a handler, reports it), wait up to
 * the grace period for the notification, then grpc_server_cancel_all_calls
 * and wait for the handlers and the queued calls to finish; destroy the
 * server, shut every lane's queue down (the acceptor then tells its
 * workers to stop once the FIFO is empty) and join every thread.
 *
 * Listeners: all TLS, or all plaintext (development mode, local addresses
 * only); a call learns which when its request is armed, and a plaintext
 * server's callers have every role.  The role check itself is the call's
 * (rpcserver-call.c), before its request is parsed.
 *
 * What the client shares (library lifetime, the status tables, addresses
 * and the development-mode rule, TLS credentials, channel arguments,
 * packing, the UTF-8 check of requests) lives in rpc.c.
 */
#include "rpcserver.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
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
#include "rpcserver-priv.h"

#define DEFAULT_THREADS 8
#define QUEUE_PER_THREAD 4
#define CATCH_ALL_REQUESTS 2
#define STUCK_LOG_MS 5000

_Static_assert(RPC_LANE_WAIT_BUCKETS == LOCK_HIST_BUCKETS, "lane waits use lock.h's histogram scale");

static LockClass server_lock_class = LOCK_CLASS_INIT("rpc-server");
static LockClass lane_lock_class = LOCK_CLASS_INIT("rpc-lane");

/* lane->lock protects the FIFO of accepted calls, the worker counts, the
 * stop flag, the owed requests of the lane's methods and the statistics.
 * It is never held across a gRPC call or a handler. */
struct RpcLane {
        RpcServer *srv;                 /* immutable */
        char name[RPC_LANE_NAME_MAX];   /* immutable */
        unsigned threads;               /* immutable: workers to start */
        unsigned requests;              /* immutable: armed per method */
        unsigned max_queued;            /* immutable */
        grpc_completion_queue *cq;      /* immutable until shutdown (owner thread) */
        pthread_t acceptor;             /* owner thread */
        bool acceptor_running;          /* owner thread */
        pthread_t *workers;             /* owner thread */
        Lock lock;
        Cond cond;                      /* a call was queued, or stopping */
        RpcCall *head, *tail;           /* lock: lane->lock; accepted calls, oldest first */
        unsigned n_workers;             /* lock: lane->lock; threads started */
        unsigned queued;                /* lock: lane->lock */
        unsigned busy;                  /* lock: lane->lock */
        unsigned owed;                  /* lock: lane->lock; sum of the methods' owed */
        bool stopping;                  /* lock: lane->lock; the queue was shut down */
        uint64_t served;                /* lock: lane->lock */
        uint64_t refused;               /* lock: lane->lock */
        uint64_t waited;                /* lock: lane->lock */
        uint64_t wait_total_ns;         /* lock: lane->lock */
        uint64_t wait_max_ns;           /* lock: lane->lock */
        uint64_t wait_hist[RPC_LANE_WAIT_BUCKETS]; /* lock: lane->lock */
};

/* srv->lock protects the lifecycle flags, the pending-request count and
 * the list of calls being served.  It is taken after a lane's lock never:
 * nobody holds both. */
struct RpcServer {
        grpc_server *server;            /* immutable until shutdown (owner thread) */
        RpcServerOptions opts;          /* immutable */
        RpcLane lanes[RPC_MAX_LANES];   /* lanes[0..n_lanes-1] */
        unsigned n_lanes;               /* immutable */
        RpcMethod **methods;            /* immutable once started */
        size_t n_methods;               /* immutable once started */
        RpcMethod catch_all;            /* immutable; lane 0 */
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
        bool plaintext_listeners;       /* immutable once started: dev-mode listeners */
        bool tls_listeners;             /* immutable once started */
        char shutdown_tag;              /* its address is the shutdown tag */
        bool lib_ref;                   /* immutable */
};

/* ---- Lanes ----------------------------------------------------------- */

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

/* Arm one request for @m on its lane; frees the context if the server
 * stopped. */
static void server_arm(RpcServer *srv, RpcMethod *m) {
        RpcCall *c = rpcsrv_call_new(srv, m, srv->plaintext_listeners);
        grpc_call_error e = GRPC_CALL_ERROR;

        if (!c)
                return; /* the method has one request fewer; the others still serve */
        lock_acquire(&srv->lock);
        if (!srv->shutting_down) {
                if (m->handle)
                        e = grpc_server_request_registered_call(srv->server, m->handle, &c->call,
                                                                &c->deadline, &c->md, &c->payload,
                                                                c->cq, m->lane->cq, c);
                else
                        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md,
                                                     c->cq, m->lane->cq, c);
                if (e == GRPC_CALL_OK)
                        srv->n_pending++;
        }
        lock_release(&srv->lock);
        if (e != GRPC_CALL_OK)
                rpcsrv_call_release(c);
}

/* The lane's acceptor: takes completed requests off the lane's queue and
 * hands them to the workers; never blocks on anything but that queue. */
static void *lane_acceptor_main(void *arg) {
        RpcLane *lane = arg;
        RpcServer *srv = lane->srv;

        for (;;) {
                grpc_event ev = grpc_completion_queue_next(lane->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
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
                        rpcsrv_call_release(c);
                        continue;
                }
                RpcMethod *m = c->method; /* @c belongs to the workers once queued */
                c->accepted_ns = now_ns();
                if (!m->desc)
                        c->deadline = c->details.deadline;
                lock_acquire(&lane->lock);
                if (lane->tail)
                        lane->tail->qnext = c;
                else
                        lane->head = c;
                lane->tail = c;
                bool rearm = ++lane->queued < lane->max_queued;
                if (!rearm) {
                        m->owed++;
                        lane->owed++;
                }
                cond_signal(&lane->cond);
                lock_release(&lane->lock);
                if (rearm)
                        server_arm(srv, m);
        }
        lock_acquire(&lane->lock);
        lane->stopping = true;
        cond_broadcast(&lane->cond);
        lock_release(&lane->lock);
        return NULL;
}

/* A method of @lane owed a request (one debt paid), or NULL. */
static RpcMethod *lane_take_owed_locked(RpcLane *lane) {
        RpcServer *srv = lane->srv;

        lock_assert_held(&lane->lock);
        if (lane->owed == 0)
                return NULL;
        for (size_t i = 0; i <= srv->n_methods; i++) {
                RpcMethod *m = i < srv->n_methods ? srv->methods[i] : &srv->catch_all;
                if (m->lane == lane && m->owed > 0) {
                        m->owed--;
                        lane->owed--;
                        return m;
                }
        }
        assert(!"lane owes a request no method is owed");
        return NULL;
}

static void lane_record_wait_locked(RpcLane *lane, uint64_t wait_ns) {
        int b = 0;

        lock_assert_held(&lane->lock);
        while (b < RPC_LANE_WAIT_BUCKETS - 1 && wait_ns >= lock_hist_bound_ns(b))
                b++;
        lane->wait_hist[b]++;
        lane->waited++;
        lane->wait_total_ns += wait_ns;
        if (wait_ns > lane->wait_max_ns)
                lane->wait_max_ns = wait_ns;
}

/* Serve @c, taken from @lane's queue by this worker: refuse it unrun if
 * its deadline passed, or its client cancelled it, while it waited. */
static void lane_serve(RpcLane *lane, RpcCall *c) {
        char refusal[160];

        c->started_ns = now_ns();
        uint64_t wait_ns = c->started_ns - c->accepted_ns;
        bool expired = rpcsrv_call_expired(c);
        if (expired)
                snprintf(refusal, sizeof(refusal),
                         "deadline expired while the call waited %.1f ms for a worker of lane %s",
                         (double) wait_ns / 1e6, lane->name);
        lock_acquire(&lane->lock);
        lane_record_wait_locked(lane, wait_ns);
        lock_release(&lane->lock);

        server_track(lane->srv, c, true);
        bool ran = rpcsrv_call_run(c, expired ? refusal : NULL);
        server_track(lane->srv, c, false);
        rpcsrv_call_release(c);

        lock_acquire(&lane->lock);
        if (ran)
                lane->served++;
        else
                lane->refused++;
        lane->busy--;
        lock_release(&lane->lock);
}

static void *lane_worker_main(void *arg) {
        RpcLane *lane = arg;

        for (;;) {
                lock_acquire(&lane->lock);
                while (!lane->head && !lane->stopping)
                        cond_wait(&lane->cond, &lane->lock, DEADLINE_NEVER);
                RpcCall *c = lane->head;
                if (!c) { /* stopping, and nothing left */
                        lock_release(&lane->lock);
                        break;
                }
                lane->head = c->qnext;
                if (!lane->head)
                        lane->tail = NULL;
                c->qnext = NULL;
                lane->queued--;
                lane->busy++;
                RpcMethod *owed = lane_take_owed_locked(lane);
                lock_release(&lane->lock);
                if (owed)
                        server_arm(lane->srv, owed);
                lane_serve(lane, c);
        }
        return NULL;
}

/* Fill in lane @i from @o (checked by lanes_check()) and register its
 * queue.  The lock and condition exist even when this fails. */
static int lane_init(RpcServer *srv, unsigned i, const RpcLaneOptions *o) {
        RpcLane *lane = &srv->lanes[i];

        lane->srv = srv;
        lock_init(&lane->lock, &lane_lock_class);
        cond_init(&lane->cond);
        if (o->name)
                snprintf(lane->name, sizeof(lane->name), "%s", o->name);
        else
                snprintf(lane->name, sizeof(lane->name), "lane%u", i);
        lane->threads = o->threads ? o->threads : DEFAULT_THREADS;
        lane->requests = o->requests ? o->requests : lane->threads;
        lane->max_queued = o->max_queued ? o->max_queued : QUEUE_PER_THREAD * lane->threads;
        lane->cq = grpc_completion_queue_create_for_next(NULL);
        if (!lane->cq)
                return err_set(-ENOMEM, "cannot create the completion queue of lane %s", lane->name);
        grpc_server_register_completion_queue(srv->server, lane->cq, NULL);
        return 0;
}

/* The lane table of @o is usable: a count we support, names that fit and
 * differ (a NULL name is "laneN", which no other lane may take). */
static int lanes_check(const RpcServerOptions *o) {
        char names[RPC_MAX_LANES][RPC_LANE_NAME_MAX];

        if (o->n_lanes > RPC_MAX_LANES)
                return err_set(-EINVAL, "%u lanes: at most %d", o->n_lanes, RPC_MAX_LANES);
        for (unsigned i = 0; i < o->n_lanes; i++) {
                const char *name = o->lanes[i].name;
                if (name && (!*name || strlen(name) >= RPC_LANE_NAME_MAX))
                        return err_set(-EINVAL, "lane %u: the name must have 1 to %d characters", i,
                                       RPC_LANE_NAME_MAX - 1);
                if (name)
                        snprintf(names[i], sizeof(names[i]), "%s", name);
                else
                        snprintf(names[i], sizeof(names[i]), "lane%u", i);
                for (unsigned j = 0; j < i; j++)
                        if (strcmp(names[i], names[j]) == 0)
                                return err_set(-EINVAL, "lane '%s' given twice", names[i]);
        }
        return 0;
}

/* Start @lane's acceptor and workers (signals blocked by the caller). */
static int lane_start(RpcLane *lane) {
        int e = pthread_create(&lane->acceptor, NULL, lane_acceptor_main, lane);
        if (e != 0)
                return err_set(-e, "cannot start the acceptor of lane %s: %s", lane->name, strerror(e));
        lane->acceptor_running = true;
        lane->workers = calloc(lane->threads, sizeof(pthread_t));
        if (!lane->workers)
                return err_set(-ENOMEM, "out of memory");
        for (unsigned i = 0; i < lane->threads; i++) {
                e = pthread_create(&lane->workers[i], NULL, lane_worker_main, lane);
                if (e != 0)
                        return err_set(-e, "cannot start the workers of lane %s: %s", lane->name, strerror(e));
                lock_acquire(&lane->lock);
                lane->n_workers++;
                lock_release(&lane->lock);
        }
        return 0;
}

unsigned rpc_server_n_lanes(RpcServer *srv) {
        return srv->n_lanes;
}

int rpc_server_lane_find(RpcServer *srv, const char *name) {
        for (unsigned i = 0; i < srv->n_lanes; i++)
                if (strcmp(srv->lanes[i].name, name) == 0)
                        return (int) i;
        return err_set(-ENOENT, "the server has no lane '%s'", name);
}

int rpc_server_lane_stats(RpcServer *srv, unsigned i, RpcLaneStats *ret) {
        if (i >= srv->n_lanes)
                return err_set(-ENOENT, "the server has no lane %u", i);
        RpcLane *lane = &srv->lanes[i];
        RpcLaneStats st = { 0 };

        memcpy(st.name, lane->name, sizeof(st.name));
        lock_acquire(&lane->lock);
        st.workers = lane->n_workers;
        st.busy = lane->busy;
        st.queued = lane->queued;
        st.served = lane->served;
        st.refused_expired = lane->refused;
        st.waited = lane->waited;
        st.wait_total_ns = lane->wait_total_ns;
        st.wait_max_ns = lane->wait_max_ns;
        memcpy(st.wait_hist, lane->wait_hist, sizeof(st.wait_hist));
        lock_release(&lane->lock);
        *ret = st;
        return 0;
}

/* ---- Server ---------------------------------------------------------- */

int rpc_server_new(const RpcServerOptions *opts, RpcServer **ret_srv) {
        RpcServer *srv;
        int r;

        if (opts && (r = lanes_check(opts)) < 0)
                return r;
        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return err_set(-ENOMEM, "out of memory");
        if (opts)
                srv->opts = *opts;
        srv->opts.max_request_bytes = rpc_message_cap(srv->opts.max_request_bytes);
        lock_init(&srv->lock, &server_lock_class);
        cond_init(&srv->cond);
        srv->catch_all.path = "(unknown)";
        srv->catch_all.lane = &srv->lanes[0];

        rpc_lib_ref();
        srv->lib_ref = true;
        RpcArgs args;
        srv->server = grpc_server_create(rpc_args_server(&args, srv->opts.max_request_bytes), NULL);
        if (!srv->server) {
                rpc_server_free(srv);
                return err_set(-ENOMEM, "cannot create the gRPC server");
        }
        RpcLaneOptions one = { .name = "default", .threads = srv->opts.threads,
                               .requests = srv->opts.requests_per_method };
        unsigned n = srv->opts.n_lanes ? srv->opts.n_lanes : 1;
        for (unsigned i = 0; i < n; i++) {
                r = lane_init(srv, i, srv->opts.n_lanes ? &srv->opts.lanes[i] : &one);
                srv->n_lanes = i + 1; /* its lock exists: rpc_server_free() destroys it */
                if (r < 0) {
                        rpc_server_free(srv);
                        return err_set(r, "cannot create the gRPC server's completion queues");
                }
        }
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
                if (d->roles == 0 || (d->roles & ~RPC_ROLES_ALL))
                        return err_set(-EINVAL, "%s.%s: roles 0x%x: name at least one, and only known ones",
                                       svc->name, d->name, d->roles);
                if (d->lane >= srv->n_lanes)
                        return err_set(-EINVAL, "%s.%s: lane %u, but the server has %u", svc->name, d->name,
                                       d->lane, srv->n_lanes);
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
                m->roles = d->roles;
                m->lane = &srv->lanes[d->lane];
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
        if (tls ? srv->plaintext_listeners : srv->tls_listeners) /* never dev-mode roles beside TLS */
                return err_set(-EINVAL, "cannot listen on %s %s: the server has %s listeners", addr,
                               tls ? "with TLS" : "without TLS", tls ? "plaintext" : "TLS");
        r = rpc_pem_prepare(tls, true, addr, &pem);
        if (r < 0)
                return r;
        creds = rpc_server_creds(&pem);
        /* A unix socket is RPC_UNIX_SOCKET_MODE whatever the umask: bound
         * under umask 0177 (no window where anyone else may connect), then
         * opened to the group (docs/agent.md, "Sockets"). */
        mode_t old_umask = kind == RPC_ADDR_UNIX ? umask(0177) : 0;
        int bound = grpc_server_add_http2_port(srv->server, addr, creds);
        if (kind == RPC_ADDR_UNIX)
                umask(old_umask);
        grpc_server_credentials_release(creds);
        rpc_pem_clear(&pem);
        if (bound > 0 && kind == RPC_ADDR_UNIX && chmod(path, RPC_UNIX_SOCKET_MODE) < 0)
                return err_set(-errno, "setting the mode of %s to %o: %m", path, RPC_UNIX_SOCKET_MODE);
        if (bound <= 0) {
                if (kind == RPC_ADDR_UNIX || kind == RPC_ADDR_UNIX_ABSTRACT)
                        return err_set(-EINVAL, "gRPC cannot listen on %s", addr);
                return explain_tcp_failure(addr, host, port, tls != NULL);
        }
        if (tls)
                srv->tls_listeners = true;
        else
                srv->plaintext_listeners = true;
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

        /* Threads never take SIGPIPE (nor the signals a daemon sigwait()s for). */
        sigemptyset(&block);
        sigaddset(&block, SIGPIPE);
        sigaddset(&block, SIGINT);
        sigaddset(&block, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        for (unsigned i = 0; i < srv->n_lanes && r == 0; i++)
                r = lane_start(&srv->lanes[i]);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0)
                return r; /* nothing armed: no call is accepted */
        for (size_t i = 0; i < srv->n_methods; i++)
                for (unsigned k = 0; k < srv->methods[i]->lane->requests; k++)
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

/* Calls accepted and not yet taken by a worker, over every lane. */
static unsigned server_queued(RpcServer *srv) {
        unsigned n = 0;

        for (unsigned i = 0; i < srv->n_lanes; i++) {
                lock_acquire(&srv->lanes[i].lock);
                n += srv->lanes[i].queued;
                lock_release(&srv->lanes[i].lock);
        }
        return n;
}

int rpc_server_shutdown(RpcServer *srv, int64_t grace_ms) {
        lock_acquire(&srv->lock);
        if (srv->shutting_down || srv->destroyed) {
                int n = srv->n_cancelled;
                lock_release(&srv->lock);
                return n;
        }
        srv->shutting_down = true;
        lock_release(&srv->lock);

        RpcLane *first = &srv->lanes[0];
        grpc_server_shutdown_and_notify(srv->server, first->cq, &srv->shutdown_tag);
        if (!first->acceptor_running) {
                /* Never started: no thread, nothing armed; collect the
                 * notification ourselves. */
                for (;;) {
                        grpc_event ev = grpc_completion_queue_next(first->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                        if (ev.type != GRPC_OP_COMPLETE || ev.tag == &srv->shutdown_tag)
                                break;
                        rpcsrv_call_release(ev.tag);
                }
        } else {
                Deadline grace = deadline_in_ms(grace_ms < 0 ? 0 : grace_ms);
                lock_acquire(&srv->lock);
                while (!srv->shutdown_done && cond_wait(&srv->cond, &srv->lock, grace) == 0)
                        ;
                if (!srv->shutdown_done) {
                        lock_release(&srv->lock);
                        unsigned queued = server_queued(srv); /* lane locks: never under srv->lock */
                        lock_acquire(&srv->lock);
                        srv->n_cancelled = (int) (srv->n_active + queued);
                        lock_release(&srv->lock);
                        grpc_server_cancel_all_calls(srv->server);
                        lock_acquire(&srv->lock);
                        server_wait_cancelled_locked(srv);
                }
                lock_release(&srv->lock);
        }
        grpc_server_destroy(srv->server);
        srv->server = NULL;
        for (unsigned i = 0; i < srv->n_lanes; i++) {
                RpcLane *lane = &srv->lanes[i];
                grpc_completion_queue_shutdown(lane->cq);
                if (lane->acceptor_running)
                        pthread_join(lane->acceptor, NULL);
                else /* drain what a queue without an acceptor still holds */
                        while (grpc_completion_queue_next(lane->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                               GRPC_QUEUE_SHUTDOWN)
                                ;
                lane->acceptor_running = false;
                for (unsigned k = 0; k < lane->n_workers; k++) /* n_workers: written by this thread only */
                        pthread_join(lane->workers[k], NULL);
                grpc_completion_queue_destroy(lane->cq);
                lane->cq = NULL;
        }
        lock_acquire(&srv->lock);
        srv->destroyed = true;
        int n = srv->n_cancelled;
        lock_release(&srv->lock);
        return n;
}

void rpc_server_free(RpcServer *srv) {
        if (!srv)
                return;
        bool whole = srv->server && srv->n_lanes > 0;
        for (unsigned i = 0; i < srv->n_lanes; i++)
                whole = whole && srv->lanes[i].cq;
        if (whole)
                rpc_server_shutdown(srv, 0);
        else if (srv->server) /* rpc_server_new() failed half-way */
                grpc_server_destroy(srv->server);
        for (unsigned i = 0; i < srv->n_lanes; i++) {
                RpcLane *lane = &srv->lanes[i];
                if (lane->cq) { /* only after a failed rpc_server_new() */
                        grpc_completion_queue_shutdown(lane->cq);
                        grpc_completion_queue_destroy(lane->cq);
                }
                free(lane->workers);
                cond_destroy(&lane->cond);
                lock_destroy(&lane->lock);
        }
        for (size_t i = 0; i < srv->n_methods; i++) {
                free(srv->methods[i]->path);
                free(srv->methods[i]);
        }
        free(srv->methods);
        cond_destroy(&srv->cond);
        lock_destroy(&srv->lock);
        if (srv->lib_ref)
                rpc_lib_unref();
        free(srv);
}
