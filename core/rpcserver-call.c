/* One call of the gRPC server (see rpcserver.h, "Inside a handler").
 *
 * Each accepted call carries its own GRPC_CQ_NEXT completion queue, so a
 * handler is plain blocking C: rpcsrv_call_run() starts RECV_CLOSE_ON_SERVER
 * first (so that cancellation becomes visible as an event on the call's
 * queue), parses the request into the call's arena, runs the handler, sends
 * the status and waits for the close event.  rpc_call_wait() waits on the
 * same queue for a timeout, a wake-up or the close.
 *
 * The call's queue also carries wake-ups: rpc_call_wake() from any thread
 * starts an empty batch, which the core completes at once.  All batches on
 * one call are serialised by call->lock, and `ended` under the same lock
 * turns wakes after teardown into no-ops.
 *
 * A failing status may carry the rich error model's google.rpc.Status
 * (rpc_call_fail_status_bin): call_finish() sends it as the trailing
 * metadata RPC_STATUS_DETAILS_KEY of the status batch.
 *
 * Authorization happens here, before the request is parsed: the caller
 * comes from the call's auth context (rpc_identity_from_auth, rpc.c) and
 * must hold one of the method's roles.  Refusals are logged through a
 * process-wide limiter (DENY_LOG_BURST lines per DENY_LOG_WINDOW_NS), so
 * a client hammering a method it may not call cannot flood the log.
 *
 * Which thread serves a call, when, and whether it is refused for an
 * expired deadline is decided in rpcserver.c (lanes); this file never
 * looks at the server or the lane.
 */
#include <errno.h>
#include <grpc/support/alloc.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "err.h"
#include "log.h"
#include "rpc-priv.h"
#include "rpcserver-priv.h"

#define DENY_LOG_BURST 10
#define DENY_LOG_WINDOW_NS (10ull * 1000 * 1000 * 1000)

static LockClass call_lock_class = LOCK_CLASS_INIT("rpc-call");

/* The refusal log's limiter, lock-free: a race between workers at a
 * window's turn can only let a line more or fewer through. */
static _Atomic uint64_t deny_window_ns; /* atomic; start of the current window */
static atomic_uint deny_logged;         /* atomic; lines logged in it */
static atomic_uint deny_unlogged;       /* atomic; refusals not logged since the last line */

static char tag_close, tag_wake, tag_send, tag_status;
#define TAG_CLOSE ((void *) &tag_close)
#define TAG_WAKE ((void *) &tag_wake)
#define TAG_SEND ((void *) &tag_send)
#define TAG_STATUS ((void *) &tag_status)

RpcCall *rpcsrv_call_new(RpcServer *srv, RpcMethod *m, bool plaintext_server) {
        RpcCall *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        atomic_init(&c->refs, 1);
        c->srv = srv;
        c->method = m;
        c->plaintext_server = plaintext_server;
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

void rpcsrv_call_release(RpcCall *c) {
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

const RpcIdentity *rpc_call_identity(RpcCall *c) {
        return &c->identity;
}

int rpc_call_peer_cert_pem(RpcCall *c, char **ret) {
        grpc_auth_context *ctx = grpc_call_auth_context(c->call);
        char *pem = NULL;

        if (ctx) {
                grpc_auth_property_iterator it =
                        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
                const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
                if (p && p->value && p->value_length)
                        pem = strndup(p->value, p->value_length);
                grpc_auth_context_release(ctx);
        }
        if (!pem)
                return err_set(-ENOENT, "the call carries no verified client certificate");
        *ret = pem;
        return 0;
}

RpcCode rpc_call_fail(RpcCall *c, RpcCode code, const char *fmt, ...) {
        char buf[ERR_MSG_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        c->status_details = rpc_call_strdup(c, buf);
        /* details of an earlier failure would contradict this one */
        c->status_bin = NULL;
        c->status_bin_len = 0;
        return code;
}

RpcCode rpc_call_fail_status_bin(RpcCall *c, RpcCode code, const char *message, const void *status_bin,
                                 size_t len) {
        rpc_call_fail(c, code, "%s", message);
        if (len > RPC_STATUS_DETAILS_MAX)
                log_warning("%s: status details of %zu bytes not sent (at most %u)", c->method->path, len,
                            RPC_STATUS_DETAILS_MAX);
        else if (status_bin && len) {
                void *p = grpc_call_arena_alloc(c->call, len);
                memcpy(p, status_bin, len);
                c->status_bin = p;
                c->status_bin_len = len;
        }
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
        /* the rich error model's trailer: lowercase key, raw bytes (the
         * transport base64-encodes -bin values) */
        grpc_metadata trailer = { 0 };
        size_t n_trailers = 0;
        if (code != RPC_OK && c->status_bin) {
                trailer.key = grpc_slice_from_static_string(RPC_STATUS_DETAILS_KEY);
                trailer.value = grpc_slice_from_copied_buffer(c->status_bin, c->status_bin_len);
                n_trailers = 1;
        }
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
        ops[n].data.send_status_from_server.trailing_metadata_count = n_trailers;
        ops[n].data.send_status_from_server.trailing_metadata = n_trailers ? &trailer : NULL;
        ops[n++].data.send_status_from_server.status_details = &details;
        if (call_start_batch(c, ops, n, TAG_STATUS) == GRPC_CALL_OK)
                call_wait_tag(c, TAG_STATUS);
        if (bb)
                grpc_byte_buffer_destroy(bb);
        grpc_slice_unref(details);
        if (n_trailers)
                grpc_slice_unref(trailer.value);
}

static void *arena_alloc(void *data, size_t size) {
        return grpc_call_arena_alloc(data, size ? size : 1);
}

static void arena_free(void *data, void *p) {
}

/* Whether a refusal may be logged now; *ret_unlogged: the refusals not
 * logged before it (to be reported with it). */
static bool deny_log_admit(unsigned *ret_unlogged) {
        uint64_t now = now_ns(), start = atomic_load(&deny_window_ns);

        if (now - start >= DENY_LOG_WINDOW_NS && atomic_compare_exchange_strong(&deny_window_ns, &start, now))
                atomic_store(&deny_logged, 0);
        if (atomic_fetch_add(&deny_logged, 1) < DENY_LOG_BURST) {
                *ret_unlogged = atomic_exchange(&deny_unlogged, 0);
                return true;
        }
        atomic_fetch_add(&deny_unlogged, 1);
        return false;
}

/* Establish the caller and refuse it unless it holds one of the method's
 * roles: RPC_OK to go on, else PERMISSION_DENIED with the details set. */
static RpcCode call_authorize(RpcCall *c) {
        RpcMethod *m = c->method;
        grpc_auth_context *ctx = grpc_call_auth_context(c->call);
        char need[64], have[64], peer[128], more[64] = "";
        unsigned unlogged;

        rpc_identity_from_auth(ctx, c->plaintext_server, &c->identity);
        if (ctx)
                grpc_auth_context_release(ctx);
        if (c->identity.roles & m->roles)
                return RPC_OK;
        rpc_roles_format(m->roles, " or ", need, sizeof(need));
        rpc_roles_format(c->identity.roles, "+", have, sizeof(have));
        if (deny_log_admit(&unlogged)) {
                rpc_call_peer(c, peer, sizeof(peer));
                if (unlogged)
                        snprintf(more, sizeof(more), " (%u earlier refusals not logged)", unlogged);
                log_warning("permission denied: %s from '%s' at %s, roles %s%s: needs role %s%s", m->path,
                            c->identity.name, peer, have,
                            c->identity.unknown_roles ? " and unknown role URIs" : "", need, more);
        }
        return rpc_call_fail(c, RPC_PERMISSION_DENIED, "method %s needs role %s; caller '%s' has roles %s", m->path,
                             need, c->identity.name, have);
}

static RpcCode call_dispatch(RpcCall *c, ProtobufCMessage **ret_resp) {
        RpcMethod *m = c->method;
        ProtobufCAllocator alloc = { .alloc = arena_alloc, .free = arena_free, .allocator_data = c->call };
        ProtobufCMessage *req;
        RpcCode code;

        if (!m->desc) {
                char path[256];
                rpc_slice_str(c->details.method, path, sizeof(path));
                return rpc_call_fail(c, RPC_UNIMPLEMENTED, "unknown method %s", path);
        }
        if (!m->unary && !m->stream)
                return rpc_call_fail(c, RPC_UNIMPLEMENTED, "method %s is not served here", m->path);
        if ((code = call_authorize(c)) != RPC_OK)
                return code;
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

bool rpcsrv_call_expired(RpcCall *c) {
        gpr_timespec d = c->deadline;

        if (d.tv_sec == INT64_MAX || gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
                return false;
        d = gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC);
        return gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), d) >= 0;
}

bool rpcsrv_call_run(RpcCall *c, const char *refusal) {
        ProtobufCMessage *resp = NULL;
        grpc_op op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER };
        RpcCode code;
        bool ran = false;

        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
        if (call_start_batch(c, &op, 1, TAG_CLOSE) != GRPC_CALL_OK)
                c->closed = true; /* cannot happen; treat as over */
        if (refusal)
                code = rpc_call_fail(c, RPC_DEADLINE_EXCEEDED, "%s", refusal);
        else if (rpc_call_cancelled(c))
                /* the client gave up while the call waited: nobody reads the answer */
                code = rpc_call_fail(c, RPC_CANCELLED, "cancelled while the call waited for a worker");
        else {
                code = call_dispatch(c, &resp);
                ran = true;
        }
        call_finish(c, code, resp);
        if (!c->closed)
                call_wait_tag(c, TAG_CLOSE);
        return ran;
}
