/* gRPC server: protobuf-c handlers served by a pool of worker threads.
 *
 * This module and rpcclient.c are the only code that calls grpc_* or
 * protobuf_c_*; callers see protobuf-c messages, an opaque RpcCall and our
 * own RpcCode (numerically equal to gRPC's status codes), never a gRPC
 * header.
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
 * Transport security (ARCHITECTURE.md §7): TLS with client certificates
 * (the server requires and verifies them), or a plaintext development mode
 * that is accepted only on loopback TCP or unix socket addresses and logs a
 * warning.
 *
 * The first RpcServer or RpcClient routes gRPC's own log lines into log.h
 * (gRPC errors at info, everything else at debug; GRPC_VERBOSITY still
 * filters at the source) and, if SIGPIPE is at its default disposition,
 * ignores it process-wide: a peer closing a socket must never kill a daemon.
 *
 * The shared vocabulary (RpcCode, RpcTls, the errno mapping) is declared
 * here; rpcclient.h includes this header.
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"

/* ---- Shared by client and server ------------------------------------- */

/* gRPC status codes, same numbers as grpc_status_code. */
typedef enum RpcCode {
        RPC_OK = 0,
        RPC_CANCELLED = 1,
        RPC_UNKNOWN = 2,
        RPC_INVALID_ARGUMENT = 3,
        RPC_DEADLINE_EXCEEDED = 4,
        RPC_NOT_FOUND = 5,
        RPC_ALREADY_EXISTS = 6,
        RPC_PERMISSION_DENIED = 7,
        RPC_RESOURCE_EXHAUSTED = 8,
        RPC_FAILED_PRECONDITION = 9,
        RPC_ABORTED = 10,
        RPC_OUT_OF_RANGE = 11,
        RPC_UNIMPLEMENTED = 12,
        RPC_INTERNAL = 13,
        RPC_UNAVAILABLE = 14,
        RPC_DATA_LOSS = 15,
        RPC_UNAUTHENTICATED = 16,
        RPC_CODE_MAX,
} RpcCode;

/* "NOT_FOUND" etc.; "?" for values out of range. */
const char *rpc_code_to_string(RpcCode code);
/* Parse "NOT_FOUND" (case-insensitive); -EINVAL when unknown. */
int rpc_code_from_string(const char *s);

/* The status a handler error becomes.  Grouping follows the gRPC code
 * definitions (and absl's errno table):
 *   0                                   OK
 *   ENOENT ESRCH ENODEV ENXIO           NOT_FOUND
 *   EEXIST EALREADY                     ALREADY_EXISTS
 *   EINVAL EBADMSG EDOM E2BIG ENAMETOOLONG ENOTDIR EISDIR   INVALID_ARGUMENT
 *   ETIMEDOUT ETIME                     DEADLINE_EXCEEDED
 *   EPERM EACCES EROFS                  PERMISSION_DENIED
 *   ENOSPC ENOMEM ENOBUFS EMSGSIZE EMFILE ENFILE EDQUOT EUSERS  RESOURCE_EXHAUSTED
 *   EBUSY ENOTEMPTY ENOTCONN EISCONN ETXTBSY ESHUTDOWN   FAILED_PRECONDITION
 *       (the resource is held or in the wrong state: a blind retry does not
 *       help; wait for the holder's job to end, or abort it)
 *   EAGAIN ECONNREFUSED ECONNRESET ECONNABORTED EHOSTUNREACH EHOSTDOWN
 *   ENETUNREACH ENETDOWN EPIPE EINTR    UNAVAILABLE (transient: retry with backoff)
 *   EDEADLK ESTALE                      ABORTED
 *   ERANGE EOVERFLOW EFBIG              OUT_OF_RANGE
 *   EOPNOTSUPP ENOSYS EAFNOSUPPORT EPROTONOSUPPORT   UNIMPLEMENTED
 *       (gRPC: "not implemented or not supported/enabled in this service";
 *       like an unknown method, retrying cannot help)
 *   ECANCELED                           CANCELLED
 *   EKEYREJECTED EKEYEXPIRED ENOKEY     UNAUTHENTICATED
 *   anything else (EIO, EPROTO, ...)    INTERNAL
 * A positive value is taken as its negative. */
RpcCode rpc_status_from_errno(int negerrno);

/* The -errno a client sees for a status (0 for OK).  The inverse of the
 * first errno of each group above, so errno -> status -> errno is the
 * identity for ENOENT, EEXIST, EINVAL, ETIMEDOUT, EPERM, EBUSY, EAGAIN,
 * EDEADLK, ERANGE, EOPNOTSUPP, ECANCELED; EACCES comes back as EPERM and
 * ENOSPC/ENOMEM as ENOBUFS.  The other codes: UNKNOWN and INTERNAL ->
 * -EREMOTEIO (the peer failed), DATA_LOSS -> -EBADMSG, UNAUTHENTICATED ->
 * -EKEYREJECTED, RESOURCE_EXHAUSTED -> -ENOBUFS. */
int rpc_errno_from_status(RpcCode code);

/* Take / drop a reference on the gRPC library (grpc_init/grpc_shutdown).
 * Every RpcServer and RpcClient holds one; a process that creates and frees
 * them repeatedly should hold one itself for its lifetime, so gRPC is not
 * torn down and restarted each time the last object goes (that costs
 * thread start-up, and after an aborted oversized request we measured the
 * restarted library's final grpc_shutdown stalling for ~10 s).  The first
 * reference routes gRPC's log into log.h and ignores SIGPIPE if it is at its
 * default.  The last unref must come after every server and client is freed. */
void rpc_lib_ref(void);
void rpc_lib_unref(void);

/* TLS material: paths of PEM files.  A server requires all three and
 * demands a client certificate signed by @ca_file.  A client requires
 * @ca_file (the CA that signed the server's certificate) and presents
 * @cert_file/@key_file when both are set. */
typedef struct RpcTls {
        const char *cert_file;  /* certificate chain */
        const char *key_file;   /* private key */
        const char *ca_file;    /* CA bundle that verifies the peer */
        const char *server_name; /* client only: name expected in the server's
                                  * certificate when it differs from the
                                  * target's host; NULL = the host */
} RpcTls;

/* ---- Server ---------------------------------------------------------- */

typedef struct RpcServer RpcServer;
typedef struct RpcCall RpcCall;

typedef struct RpcServerOptions {
        unsigned threads;             /* worker threads; 0 = 8 */
        unsigned requests_per_method; /* calls pre-accepted per method; 0 = threads */
        size_t max_request_bytes;     /* 0 = 4 MiB; larger requests get RESOURCE_EXHAUSTED */
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
