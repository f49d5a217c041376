/* What the two halves of the gRPC server share: the method and call
 * records, and the call half's entry points.
 *
 * rpcserver.c owns the server, its lanes (acceptors, workers, queues,
 * statistics) and the lifecycle; rpcserver-call.c owns one call: its
 * private completion queue, the handler-side API of rpcserver.h
 * (rpc_call_*) and serving it from parse to close.  rpcserver.c calls into
 * rpcserver-call.c, never the reverse: a call knows its server and lane
 * only as pointers it passes back.  Only these two files include this
 * header.
 */
#pragma once

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lock.h"
#include "rpcserver.h"

typedef struct RpcLane RpcLane;

/* A served path.  The catch-all has no descriptor and no handler. */
typedef struct RpcMethod {
        char *path;                             /* immutable: "/pkg.Svc/Method" */
        const ProtobufCMethodDescriptor *desc;  /* immutable; NULL for the catch-all */
        RpcUnaryFn unary;                       /* immutable */
        RpcStreamFn stream;                     /* immutable */
        void *user;                             /* immutable */
        RpcRoles roles;                         /* immutable: who may call it; 0 for the catch-all */
        void *handle;                           /* immutable: grpc registration */
        RpcLane *lane;                          /* immutable once started */
        unsigned owed;                          /* lock: lane->lock; requests not re-armed (queue full) */
} RpcMethod;

/* call->lock serialises grpc_call_start_batch on the call (the handler
 * thread and wakers) and protects the two flags marked with it.  Fields
 * without a rule belong to the thread holding the call: the gRPC core
 * until the request completes, then the lane's acceptor until it queues
 * the call, then the worker that takes it. */
struct RpcCall {
        atomic_int refs;                /* atomic */
        RpcServer *srv;                 /* immutable */
        RpcMethod *method;              /* immutable */
        grpc_completion_queue *cq;      /* immutable while served; the call's own queue */
        grpc_call *call;                /* written by the core at accept, then immutable */
        gpr_timespec deadline;          /* ditto (the acceptor copies the catch-all's) */
        grpc_metadata_array md;         /* ditto */
        grpc_byte_buffer *payload;      /* ditto */
        grpc_call_details details;      /* ditto (catch-all only) */
        int close_cancelled;            /* RECV_CLOSE_ON_SERVER output */
        bool closed;                    /* the close event arrived: the call is over */
        bool woken;                     /* a wake event arrived and was not yet reported */
        bool sent_initial_md;
        const char *status_details;     /* arena */
        const void *status_bin;         /* arena; the rich error model's google.rpc.Status, or NULL */
        size_t status_bin_len;
        uint64_t accepted_ns;           /* when the acceptor took it from the core */
        uint64_t started_ns;            /* when a worker took it */
        bool plaintext_server;          /* immutable: the server listens without TLS (dev mode) */
        RpcIdentity identity;           /* the worker's, before dispatch; then immutable */
        Lock lock;
        bool wake_pending;              /* lock: call->lock; a wake batch is queued */
        bool ended;                     /* lock: call->lock; torn down, wakes are no-ops */
        RpcCall *qnext;                 /* lock: lane->lock (the lane's queue) */
        RpcCall *prev, *next;           /* lock: srv->lock (active list) */
};

/* A request context for @m on @srv with its own completion queue, holding
 * the server's reference; NULL when out of memory.  @plaintext_server: the
 * server's listeners are plaintext (development mode: callers without a
 * certificate have every role). */
RpcCall *rpcsrv_call_new(RpcServer *srv, RpcMethod *m, bool plaintext_server);
/* Release everything gRPC about @c (which may never have been accepted),
 * then drop the server's reference. */
void rpcsrv_call_release(RpcCall *c);
/* Whether the client's deadline of an accepted call has passed. */
bool rpcsrv_call_expired(RpcCall *c);
/* Serve an accepted call on this (worker) thread: arm the close event,
 * establish the caller and check the method's roles (PERMISSION_DENIED
 * without the handler when it has none of them), parse the request and
 * run the handler (or, with @refusal not NULL, answer DEADLINE_EXCEEDED
 * with that detail without running it; or, when the client already
 * cancelled the call, answer CANCELLED without running it), send the
 * status and wait for the call to close.  Does not release @c.  Returns
 * whether the handler ran. */
bool rpcsrv_call_run(RpcCall *c, const char *refusal);
