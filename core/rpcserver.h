/* gRPC server: protobuf-c handlers served by a pool of worker threads.
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
 * handler occupies its worker for the whole call, so concurrency equals the
 * number of workers: long operations belong in jobs, not in handlers.
 *
 * Errors map to a status once, here: rpc_call_fail_errno() turns a -errno
 * and its err_set() detail into a status, using rpc_status_from_errno().
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

typedef struct RpcServerOptions {
        unsigned threads;             /* worker threads; 0 = 8 */
        unsigned requests_per_method; /* calls pre-accepted per method; 0 = threads */
        size_t max_request_bytes;     /* 0 = RPC_DEFAULT_MAX_MESSAGE (4 MiB); larger requests get RESOURCE_EXHAUSTED */
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

/* One row of a service's method table: set exactly one of @unary/@stream. */
typedef struct RpcMethodDef {
        const char *name; /* as in the .proto: "Echo" */
        RpcUnaryFn unary;
        RpcStreamFn stream;
} RpcMethodDef;

/* Create a stopped server with no listeners.  @opts may be NULL.
 * Returns 0 and *ret_srv, or -errno. */
int rpc_server_new(const RpcServerOptions *opts, RpcServer **ret_srv);

/* Register the handlers in @defs for methods of @svc (a protoc-c service
 * descriptor, which must outlive the server).  Methods of @svc without a
 * row answer UNIMPLEMENTED.  @user is passed to every handler.  Before
 * rpc_server_start() only.  Returns 0, -ENOENT (a name not in @svc), -EINVAL
 * (not exactly one handler), -EEXIST (registered twice) or -EBUSY (started). */
int rpc_server_add_service(RpcServer *srv, const ProtobufCServiceDescriptor *svc,
                           const RpcMethodDef *defs, size_t n_defs, void *user);

/* Listen on @addr: "host:port" (port 0 picks one), "[v6]:port",
 * "unix:/path", "unix:///path" or "unix-abstract:name".  With @tls NULL the
 * listener is plaintext (development mode): allowed only on loopback TCP and
 * unix addresses, with a log_warning(); anything else is -EPERM.  Before
 * rpc_server_start() only.
 * Returns the bound TCP port (> 0), 0 for a unix socket, or -errno:
 * -EADDRINUSE (TCP port taken, or a live process listens on the unix path:
 * it is never stolen), -EEXIST (the path exists and is not a socket),
 * -EINVAL (bad address or TLS material), -EPERM, -EBUSY (started). */
int rpc_server_listen(RpcServer *srv, const char *addr, const RpcTls *tls);

/* Start the workers and begin accepting calls.  Returns 0 or -errno. */
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

/* ---- Inside a handler (handler thread only unless noted) -------------- */

typedef enum RpcWait {
        RPC_WAIT_TIMEOUT,   /* @timeout_ms passed */
        RPC_WAIT_WOKEN,     /* rpc_call_wake() was called since the last WOKEN */
        RPC_WAIT_CANCELLED, /* the call is over: client cancel, deadline, shutdown */
} RpcWait;

/* Set the status details (printf-style) and return @code, for
 * `return rpc_call_fail(c, RPC_NOT_FOUND, "vm %s", name);`. */
RpcCode rpc_call_fail(RpcCall *call, RpcCode code, const char *fmt, ...) _printf_(3, 4);
/* Fail with rpc_status_from_errno(@negerrno) and this thread's err_str()
 * detail (then cleared); returns the code. */
RpcCode rpc_call_fail_errno(RpcCall *call, int negerrno);

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
/* The verified client certificate's identity (subject alternative name or
 * common name) copied into @buf; -ENOENT on a plaintext call. */
int rpc_call_peer_identity(RpcCall *call, char *buf, size_t size);
