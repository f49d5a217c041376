/* gRPC server: protobuf-c handlers served by lanes of worker threads.
 *
 * Callers see protobuf-c messages, an opaque RpcCall and our own RpcCode
 * (rpc.h), never a gRPC header.
 *
 * A service is registered from its protoc-c ProtobufCServiceDescriptor plus
 * a table naming a handler for each method, so paths and message types come
 * from the .proto and cannot drift.  Unary and server-streaming methods are
 * supported.  The layer parses the request (INVALID_ARGUMENT when the bytes
 * do not parse, a string is not UTF-8 or no message was sent), enforces the
 * request size cap (RESOURCE_EXHAUSTED), answers UNIMPLEMENTED for any method
 * without a handler, packs the reply, sends the status and frees everything
 * when the call ends.  Handlers never free a message.
 *
 * Handlers are plain blocking C running on a worker thread; each call has
 * its own completion queue, so a handler can wait for time, for a wake-up
 * from another thread (event streams), or for the call to be cancelled
 * (client cancel, deadline, server shutdown) with rpc_call_wait().  A
 * handler occupies its worker for the whole call: long operations belong in
 * jobs, not in handlers.
 *
 * Lanes keep slow calls from starving quick ones.  A lane is a named set
 * of worker threads with its own completion queue, its own pre-accepted
 * requests and its own queue of accepted calls; every method belongs to
 * exactly one lane (RpcMethodDef.lane) and is only ever accepted on and
 * served by that lane, so a lane whose workers are all busy delays its own
 * calls and nobody else's.  A server without a lane table has one lane,
 * "default", sized by RpcServerOptions.threads, as before lanes existed.
 * Typical use (the agent):
 *
 *     RpcServerOptions so = { .n_lanes = 4, .lanes = {
 *             [0] = { .name = "queries", .threads = 4 },
 *             [1] = { .name = "peer", .threads = 8 },
 *             [2] = { .name = "control", .threads = 8 },
 *             [3] = { .name = "streams", .threads = 16 } } };
 *     static const RpcMethodDef defs[] = {
 *             { .name = "ListGuests", .unary = list_guests, .lane = 0,
 *               .roles = RPC_ROLES_COORDINATOR | RPC_ROLES_OPERATOR | RPC_ROLES_READER },
 *             { .name = "WatchEvents", .stream = watch_events, .lane = 3, .roles = ... }, ... };
 *
 * Lane 0 also answers calls to unknown paths (UNIMPLEMENTED, no handler),
 * so it should be a lane of quick calls.  A stream holds a worker of its
 * lane for its whole life: give streams a lane of their own, sized for the
 * streams allowed at once.
 *
 * A call whose deadline passed while it waited for a worker is answered
 * DEADLINE_EXCEEDED without running its handler (the client has given up
 * on it anyway); one its client cancelled meanwhile is answered CANCELLED
 * unrun.  Both count as refused in the lane's statistics.  A call
 * waits in two places: inside gRPC when no request of its method is armed,
 * and in the lane's queue once a request took it.  The lane's acceptor
 * thread never runs handlers, so a call leaves gRPC as soon as it arrives
 * unless the lane's queue is full (RpcLaneOptions.max_queued); the wait in
 * the statistics runs from that moment (accepted) to a worker taking the
 * call, and the time inside gRPC before acceptance is not seen.  The
 * deadline check covers both, since the deadline is the client's.
 *
 * Errors map to a status once, here: rpc_call_fail_errno() turns a -errno
 * and its err_set() detail into a status, using rpc_status_from_errno().
 * A status can also carry typed details (the gRPC rich error model:
 * rpc_call_fail_status_bin(), and rpc_call_fail_detail() in proto/).
 *
 * Authorization: every row of a method table names the roles that may
 * call it.  A worker establishes the caller (rpc_call_identity()) before
 * it parses the request, and a caller holding none of the method's roles
 * is answered PERMISSION_DENIED ("method M needs role R; caller C has
 * roles W") without its handler; the refusal is logged with the caller's
 * name and roles (at most 10 lines per 10 s per process, then a count of
 * the ones not logged).  Calls to unknown paths answer UNIMPLEMENTED
 * whoever calls.
 *
 * Transport security as in rpc.h: TLS with client certificates, which the
 * server requires and verifies, or the loopback-only development mode.
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "rpc.h"

/* ---- Server ---------------------------------------------------------- */

typedef struct RpcServer RpcServer;
typedef struct RpcCall RpcCall;

#define RPC_MAX_LANES 8
#define RPC_LANE_NAME_MAX 32 /* with the NUL */

/* One lane (see the top of this file). */
typedef struct RpcLaneOptions {
        const char *name;       /* shown in statistics, unique, < RPC_LANE_NAME_MAX; NULL = "laneN" */
        unsigned threads;       /* worker threads; 0 = 8 */
        unsigned requests;      /* calls pre-accepted per method of the lane; 0 = threads */
        unsigned max_queued;    /* accepted calls waiting for a worker before new ones are
                                 * left inside gRPC (unobserved); 0 = 4 x threads */
} RpcLaneOptions;

typedef struct RpcServerOptions {
        unsigned threads;             /* no lanes given: worker threads of the one lane; 0 = 8 */
        unsigned requests_per_method; /* no lanes given: calls pre-accepted per method; 0 = threads */
        size_t max_request_bytes;     /* 0 = RPC_DEFAULT_MAX_MESSAGE (4 MiB); larger requests get RESOURCE_EXHAUSTED */
        RpcLaneOptions lanes[RPC_MAX_LANES]; /* lanes[0..n_lanes-1]; threads and requests_per_method are then unused */
        unsigned n_lanes;             /* 0 = one lane "default" */
} RpcServerOptions;

/* Unary handler.  @req is the parsed request (read-only, alive until the
 * call ends).  @resp is a zeroed, initialised message of the method's output
 * type; fill it with memory from rpc_call_alloc()/rpc_call_strdup(), static
 * data or pointers into @req.  Return RPC_OK to send @resp, or the value of
 * rpc_call_fail()/rpc_call_fail_errno() (any other code is sent with its
 * name as details). */
typedef RpcCode (*RpcUnaryFn)(RpcCall *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                              void *user);
/* Server-streaming handler: send messages with rpc_call_send(), stop when it
 * fails or rpc_call_wait() says CANCELLED, then return a status as above. */
typedef RpcCode (*RpcStreamFn)(RpcCall *call, const ProtobufCMessage *req, void *user);

/* One row of a service's method table: set exactly one of @unary/@stream,
 * and the roles that may call the method (at least one). */
typedef struct RpcMethodDef {
        const char *name; /* as in the .proto: "Echo" */
        RpcUnaryFn unary;
        RpcStreamFn stream;
        unsigned lane;    /* index into RpcServerOptions.lanes; 0 = the first (or only) lane */
        RpcRoles roles;   /* callers holding any of these roles may call it (rpc.h) */
} RpcMethodDef;

/* Create a stopped server with no listeners.  @opts may be NULL.
 * Returns 0 and *ret_srv, or -errno: -EINVAL (more than RPC_MAX_LANES
 * lanes, a lane name too long or given twice), -ENOMEM. */
int rpc_server_new(const RpcServerOptions *opts, RpcServer **ret_srv);

/* Register the handlers in @defs for methods of @svc (a protoc-c service
 * descriptor, which must outlive the server).  Methods of @svc without a
 * row answer UNIMPLEMENTED.  @user is passed to every handler.  Before
 * rpc_server_start() only.  Returns 0, -ENOENT (a name not in @svc), -EINVAL
 * (not exactly one handler, no roles or roles we do not know, or a lane
 * the server does not have), -EEXIST (registered twice) or -EBUSY
 * (started). */
int rpc_server_add_service(RpcServer *srv, const ProtobufCServiceDescriptor *svc,
                           const RpcMethodDef *defs, size_t n_defs, void *user);

/* The mode of every unix socket a server listens on, whatever the umask:
 * read-write for the daemon's user and group, nothing for others. */
#define RPC_UNIX_SOCKET_MODE 0660

/* Listen on @addr: "host:port" (port 0 picks one), "[v6]:port",
 * "unix:/path", "unix:///path" or "unix-abstract:name".  With @tls NULL the
 * listener is plaintext (development mode: its callers have every role):
 * allowed only on loopback TCP and unix addresses, with a log_warning();
 * anything else is -EPERM, and so is a plaintext listener on a server with
 * TLS listeners or the reverse (-EINVAL).  Before rpc_server_start() only.
 * A unix socket file gets RPC_UNIX_SOCKET_MODE.
 * Returns the bound TCP port (> 0), 0 for a unix socket, or -errno:
 * -EADDRINUSE (TCP port taken, or a live process listens on the unix path:
 * it is never stolen), -EEXIST (the path exists and is not a socket),
 * -EINVAL (bad address or TLS material), -EPERM, -EBUSY (started). */
int rpc_server_listen(RpcServer *srv, const char *addr, const RpcTls *tls);

/* Start every lane (its acceptor and workers) and begin accepting calls.
 * Returns 0 or -errno (a thread could not be started: nothing is accepted;
 * rpc_server_shutdown()/rpc_server_free() still clean up). */
int rpc_server_start(RpcServer *srv);

/* Stop accepting calls, give calls in flight up to @grace_ms to finish,
 * then cancel the rest (their clients see UNAVAILABLE, their handlers see
 * rpc_call_send() fail and rpc_call_wait() return CANCELLED) and wait for
 * the handlers to return.  Idempotent; call from a non-worker thread.
 * Returns the number of calls that had to be cancelled (0 = clean).
 * A handler that ignores cancellation blocks this (logged once after 5 s). */
int rpc_server_shutdown(RpcServer *srv, int64_t grace_ms);

/* Shut down (grace 0) if needed and free.  Accepts NULL. */
void rpc_server_free(RpcServer *srv);
DEFINE_POINTER_CLEANUP(RpcServer, rpc_server_free);

/* ---- Lane statistics (any thread, between rpc_server_new and _free) --- */

#define RPC_LANE_WAIT_BUCKETS 8

typedef struct RpcLaneStats {
        char name[RPC_LANE_NAME_MAX];
        unsigned workers;         /* worker threads running */
        unsigned busy;            /* workers serving a call (handler or refusal) */
        unsigned queued;          /* accepted calls waiting for a worker */
        uint64_t served;          /* calls whose handler ran (or that got a protocol error) */
        uint64_t refused_expired; /* calls answered unrun at pickup: deadline passed (DEADLINE_EXCEEDED) or client cancelled (CANCELLED) */
        uint64_t waited;          /* calls taken by a worker (served + refused + in service) */
        uint64_t wait_total_ns;   /* sum of their waits, accepted -> taken by a worker */
        uint64_t wait_max_ns;     /* the longest of them */
        uint64_t wait_hist[RPC_LANE_WAIT_BUCKETS]; /* bucket i: waits < lock_hist_bound_ns(i) (lock.h:
                                                    * < 1 us, < 10 us, .. < 1 s), the last: 1 s or more */
} RpcLaneStats;

/* Number of lanes (>= 1). */
unsigned rpc_server_n_lanes(RpcServer *srv);
/* The index of the lane named @name, or -ENOENT. */
int rpc_server_lane_find(RpcServer *srv, const char *name);
/* A consistent snapshot of lane @lane's counters into *ret (taken under
 * the lane's lock, which is never held across I/O or a handler).  Returns
 * 0 or -ENOENT (no such lane). */
int rpc_server_lane_stats(RpcServer *srv, unsigned lane, RpcLaneStats *ret);

/* ---- Inside a handler (handler thread only unless noted) -------------- */

typedef enum RpcWait {
        RPC_WAIT_TIMEOUT,   /* @timeout_ms passed */
        RPC_WAIT_WOKEN,     /* rpc_call_wake() was called since the last WOKEN */
        RPC_WAIT_CANCELLED, /* the call is over: client cancel, deadline, shutdown */
} RpcWait;

/* Set the status details (printf-style) and return @code, for
 * `return rpc_call_fail(c, RPC_NOT_FOUND, "vm %s", name);`.  Drops the
 * rich error model's details of an earlier rpc_call_fail_status_bin(). */
RpcCode rpc_call_fail(RpcCall *call, RpcCode code, const char *fmt, ...) _printf_(3, 4);
/* Fail with rpc_status_from_errno(@negerrno) and this thread's err_str()
 * detail (then cleared); returns the code. */
RpcCode rpc_call_fail_errno(RpcCall *call, int negerrno);
/* Fail with @code, the status message @message, and the serialized
 * google.rpc.Status @status_bin (@len bytes; its code and message should
 * be @code and @message) sent as trailing metadata RPC_STATUS_DETAILS_KEY
 * with the status: the gRPC rich error model.  Both are copied into the
 * call.  More than RPC_STATUS_DETAILS_MAX bytes are not sent (the plain
 * status still is; logged at warning), nor is anything when the handler
 * returns RPC_OK after all.  Returns @code.  Handlers use the typed
 * rpc_call_fail_detail() (proto/rpc-details.h), which builds the Status. */
RpcCode rpc_call_fail_status_bin(RpcCall *call, RpcCode code, const char *message, const void *status_bin,
                                 size_t len);

/* Send one message of the method's output type on a server stream and wait
 * until the transport took it.  Returns 0, -ECANCELED when the call is over
 * (stop and return), -EINVAL (wrong message type or a unary call). */
int rpc_call_send(RpcCall *call, const ProtobufCMessage *msg);

/* Wait up to @timeout_ms (< 0: until woken or cancelled; the call's deadline
 * and server shutdown still end it). */
RpcWait rpc_call_wait(RpcCall *call, int64_t timeout_ms);
/* Whether the call is over (cancelled by the client, past its deadline or
 * cancelled by shutdown).  Does not block. */
bool rpc_call_cancelled(RpcCall *call);
/* Milliseconds until the client's deadline (0 when passed), -1 if none. */
int64_t rpc_call_remaining_ms(RpcCall *call);

/* Wake the handler's rpc_call_wait() (wakes coalesce until it returns
 * WOKEN).  Any thread, holding a reference; a no-op once the call ended. */
void rpc_call_wake(RpcCall *call);
/* References for registries that wake calls from other threads (atomic).
 * The server holds one while the handler runs. */
RpcCall *rpc_call_ref(RpcCall *call);
void rpc_call_unref(RpcCall *call);
DEFINE_POINTER_CLEANUP(RpcCall, rpc_call_unref);

/* Memory that lives until the call ends (the call's arena); never NULL
 * (aborts on exhaustion, like the gRPC core itself). */
void *rpc_call_alloc(RpcCall *call, size_t size);
char *rpc_call_strdup(RpcCall *call, const char *s);
/* "/pkg.Service/Method" (immutable). */
const char *rpc_call_method(RpcCall *call);
/* The value of request metadata @key (lowercase), not NUL-terminated, or
 * NULL.  Valid until the call ends. */
const char *rpc_call_metadata(RpcCall *call, const char *key, size_t *ret_len);
/* The peer address ("ipv4:127.0.0.1:4711", "unix:..."), copied into @buf. */
void rpc_call_peer(RpcCall *call, char *buf, size_t size);
/* The caller (rpc.h, RpcIdentity): its name and roles, established and
 * checked against the method's roles before the handler ran.  Immutable,
 * valid until the call ends. */
const RpcIdentity *rpc_call_identity(RpcCall *call);
/* The verified client certificate itself (PEM, malloc'ed into *ret: the
 * caller frees it); -ENOENT on a plaintext call. */
int rpc_call_peer_cert_pem(RpcCall *call, char **ret);
