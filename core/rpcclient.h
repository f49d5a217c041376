/* gRPC client: blocking unary, server-streaming and bidirectional calls on
 * one channel.
 *
 * One RpcClient holds one gRPC channel to a target and is shared by any
 * number of threads: every call gets its own completion queue, so callers
 * never contend except inside the transport.  Every call has a deadline (the
 * caller's, or the client's default when the caller passes 0).
 *
 * Methods are named by the protoc-c service descriptor and the method name,
 * so request and reply types come from the .proto.  A call returns 0 on OK;
 * any other status becomes a -errno (rpc_errno_from_status()) with the
 * details in err_set() ("/pkg.Svc/Method: NOT_FOUND: vm x not found") and,
 * when asked for, the exact code and details in an RpcStatus.
 *
 * Security: TLS with the cluster CA, presenting a client certificate; or a
 * plaintext development mode, accepted only for loopback TCP and unix
 * targets and logged as a warning (RpcTls and the status vocabulary are in
 * rpc.h).
 *
 * Received messages belong to the caller: protobuf_c_message_free_unpacked(m,
 * NULL) or the generated foo__free_unpacked(m, NULL).  Sent messages are
 * typically stack-built FOO__INIT structs.
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "err.h"
#include "rpc.h"

typedef struct RpcClient RpcClient;
typedef struct RpcStream RpcStream;

typedef struct RpcClientOptions {
        const RpcTls *tls;          /* NULL: plaintext development mode (loopback/unix only) */
        int64_t default_timeout_ms; /* for calls that pass timeout_ms <= 0; 0 = 30 s */
        size_t max_response_bytes;  /* 0 = RPC_DEFAULT_MAX_MESSAGE (4 MiB); larger replies fail with RESOURCE_EXHAUSTED */
        bool wait_for_ready;        /* while the server is unreachable, queue calls until
                                     * their deadline instead of failing at once */
        int64_t connect_timeout_ms; /* > 0 (and without wait_for_ready): a unary call first
                                     * waits at most this long (never past its deadline) for
                                     * a connection, and fails before sending anything when
                                     * none is up; see RpcStatus.not_sent.  0: gRPC's own
                                     * behaviour, where a refused connection and a lost
                                     * reply are both UNAVAILABLE */
} RpcClientOptions;

/* The outcome of a call as the server (or the transport) reported it. */
typedef struct RpcStatus {
        RpcCode code;
        char details[ERR_MSG_MAX];
        bool not_sent; /* the call failed before its request left this process
                        * (no connection: refused, unreachable, TLS handshake
                        * failed), so the server cannot have seen it; false
                        * means "may have been seen" */
        /* The raw google.rpc.Status the server attached (trailing metadata
         * RPC_STATUS_DETAILS_KEY), details_len 0 when none (or when it was
         * larger than the buffer: dropped, logged at debug).  Inline, so an
         * RpcStatus owns nothing and needs no clearing; decode it with
         * rpc_status_detail() (proto/rpc-details.h). */
        size_t details_len;
        unsigned char details_bin[RPC_STATUS_DETAILS_MAX];
} RpcStatus;

/* Create a client for @target ("host:port", "[v6]:port", "unix:/path",
 * "unix-abstract:name").  The channel connects lazily, so an unreachable
 * server shows up as UNAVAILABLE (-EAGAIN) on the first call.  @opts may be
 * NULL (development mode, defaults).  Returns 0 and *ret_cl, or -EINVAL
 * (bad target or TLS material), -EPERM (plaintext to a non-local target). */
int rpc_client_new(const char *target, const RpcClientOptions *opts, RpcClient **ret_cl);

/* Whether the channel has given up for now: its last connection attempt
 * failed and it waits out gRPC's reconnect backoff (TRANSIENT_FAILURE), or
 * it is shut down.  A call made now would fail without being sent, for up
 * to the backoff (which grows to minutes), even if the server is back; a
 * caller that keeps clients makes a new one instead.  Does not try to
 * connect.  Any thread. */
bool rpc_client_broken(RpcClient *cl);

/* Free the client; no call or stream may be in progress.  Accepts NULL. */
void rpc_client_free(RpcClient *cl);
DEFINE_POINTER_CLEANUP(RpcClient, rpc_client_free);

/* Call unary method @method of @svc with @req (of the method's input type),
 * waiting at most @timeout_ms (<= 0: the client's default).  On success
 * returns 0 and *ret_resp (the caller frees it).  On failure returns -errno
 * with err_set() detail, and fills @ret_status when not NULL (also on
 * success, with RPC_OK); -EINVAL without a call for a bad method or type.
 * With a connect_timeout_ms, a call that found no connection fails with
 * -ECONNREFUSED (a connection attempt failed) or -EHOSTUNREACH (none
 * completed in time), code UNAVAILABLE and not_sent set: nothing was sent.
 * Any other failure may have reached the server. */
int rpc_client_unary(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method,
                     const ProtobufCMessage *req, int64_t timeout_ms, ProtobufCMessage **ret_resp,
                     RpcStatus *ret_status);

/* The same with raw bytes and a free-form @path ("/pkg.Svc/Method"), for
 * tests and tools.  @data NULL sends no message at all (only a half-close);
 * (non-NULL, 0) sends an empty message.  On success *ret_data (malloc'ed,
 * may be NULL for an empty reply) and *ret_len. */
int rpc_client_unary_raw(RpcClient *cl, const char *path, const void *data, size_t len,
                         int64_t timeout_ms, void **ret_data, size_t *ret_len,
                         RpcStatus *ret_status);

/* Open a server-streaming call: sends @req and returns the stream.  The
 * deadline (@timeout_ms, <= 0: the default) covers the whole stream.
 * Returns 0 and *ret_stream, or -errno as rpc_client_unary(). */
int rpc_stream_open(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method,
                    const ProtobufCMessage *req, int64_t timeout_ms, RpcStream **ret_stream);

/* Open a bidirectional stream of @method (both directions streamed; a
 * server-streaming method can be opened this way too, its one request sent
 * with rpc_bidi_send and rpc_bidi_close_send).  Only the headers are sent
 * here; messages follow with rpc_bidi_send, replies come through
 * rpc_stream_read/_read_timeout.  @timeout_ms covers the whole stream:
 * > 0 that deadline, 0 the client's default, < 0 none (the stream lives
 * until it is cancelled, freed or ended by the server; bound each wait with
 * rpc_stream_read_timeout).  With a connect_timeout_ms the open first waits
 * for a connection and, when none comes up, fails with -ECONNREFUSED or
 * -EHOSTUNREACH as a unary call does (nothing sent).  Returns 0 and
 * *ret_stream, or -errno as rpc_client_unary().
 *
 * Threads: the stream's owner thread does every send, read, close and the
 * free (gRPC allows one batch of a kind at a time on a call); any thread
 * may rpc_stream_cancel. */
int rpc_bidi_open(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method, int64_t timeout_ms,
                  RpcStream **ret_stream);

/* One request metadata entry (a gRPC header) sent when a stream opens:
 * @key lower-case ASCII ([0-9a-z_.-], not "grpc-..." nor ending in
 * "-bin"), @value printable ASCII.  Copied at the open. */
typedef struct RpcCallMeta {
        const char *key;
        const char *value;
} RpcCallMeta;

/* rpc_bidi_open with more: @meta (@n_meta entries, may be 0) sent with the
 * headers, and @open_timeout_ms > 0 bounding the wait for a connection
 * (never longer than the client's connect_timeout_ms; 0: that alone), for
 * a caller whose stream lives longer than it may wait to open it.
 * At most 8 entries; -EINVAL (nothing called) for more or for an entry
 * gRPC would refuse. */
int rpc_bidi_open_meta(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method, int64_t timeout_ms,
                       const RpcCallMeta *meta, size_t n_meta, int64_t open_timeout_ms, RpcStream **ret_stream);

/* Send one message (of the method's input type) on a bidi stream; blocks
 * until gRPC has taken it (flow control, bounded by the stream's deadline
 * or a cancel).  0, -EINVAL (wrong type, not bidi, after
 * rpc_bidi_close_send), or the stream's end: its -errno (-ECANCELED,
 * -EAGAIN, ...) or -EPIPE when it ended with OK.  A receive left pending by
 * rpc_stream_read_timeout is unaffected. */
int rpc_bidi_send(RpcStream *st, const ProtobufCMessage *msg);

/* Half-close a bidi stream: no more messages from us; replies keep coming.
 * 0 (also when already closed or ended) or -errno as rpc_bidi_send. */
int rpc_bidi_close_send(RpcStream *st);

/* Block for the next message.  Returns 1 and *ret_msg (the caller frees
 * it), 0 when the stream ended with OK, or -errno when it ended with another
 * status (err_set() detail; -ECANCELED after rpc_stream_cancel(), -ETIMEDOUT
 * at the deadline, -EAGAIN when the server went away) or a reply did not
 * parse (-EBADMSG, the call is cancelled).  After the end every call returns
 * the same result.  One reader thread at a time. */
int rpc_stream_read(RpcStream *st, ProtobufCMessage **ret_msg);

/* rpc_stream_read waiting at most @timeout_ms (< 0: no limit; 0: only what
 * has arrived).  -ETIMEDOUT when that time ran out: the receive stays
 * pending (the gRPC core cannot withdraw it) and the next read of either
 * kind collects it, so no message is lost and the stream stays usable.
 * The stream's own deadline also ends it with -ETIMEDOUT; tell the two
 * apart with rpc_stream_status() (NULL: only the read timed out). */
int rpc_stream_read_timeout(RpcStream *st, int64_t timeout_ms, ProtobufCMessage **ret_msg);

/* Cancel the stream (either kind): a blocked or later rpc_stream_read() returns
 * -ECANCELED and the server's handler sees cancellation.  Any thread, while
 * the stream is not being freed. */
void rpc_stream_cancel(RpcStream *st);

/* The final status once rpc_stream_read() returned <= 0, else NULL. */
const RpcStatus *rpc_stream_status(RpcStream *st);

/* Cancel if still open and free.  Accepts NULL. */
void rpc_stream_free(RpcStream *st);
DEFINE_POINTER_CLEANUP(RpcStream, rpc_stream_free);
