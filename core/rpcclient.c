/* gRPC client on the C core (see rpcclient.h).
 *
 * One grpc_channel per RpcClient, shared by all threads.  Each call creates
 * its own GRPC_CQ_PLUCK queue (cheap, and a shared pluck queue would cap
 * concurrency at GRPC_MAX_COMPLETION_QUEUE_PLUCKERS), so any number of
 * threads can call at once.  Paths named through a service descriptor are
 * registered with the channel once and cached.
 *
 * A unary call is one batch of six ops.  RECV_INITIAL_METADATA is always
 * part of the batch that ends the call: without it the status only arrives
 * at the deadline (grpc-c-core.md pitfall 1).  A server stream sends its
 * request in one batch, then reads one message per batch (the first also
 * receives the initial metadata) until the end marker, then receives the
 * status.  A bidirectional stream sends its initial metadata alone (with
 * the caller's request metadata, rpc_bidi_open_meta), then
 * one message per batch (TAG_BATCH) while a read's RECV_MESSAGE batch
 * (TAG_RECV) may be in flight: the two are plucked by tag from the stream's
 * queue.  A read with a timeout that runs out leaves its batch pending
 * (the core cannot withdraw one) with its buffers in the stream, and the
 * next read plucks it; the status batch and the free collect it first.
 * Statuses become -errno once, here, through
 * rpc_errno_from_status(); the rich error model's google.rpc.Status, when
 * the server attached one, is copied raw into the RpcStatus.
 *
 * "Not sent" versus "lost": gRPC reports UNAVAILABLE both for a request
 * that never left (connection refused) and for one whose reply was lost.
 * With a connect timeout, a unary call first watches the channel's
 * connectivity state on its own queue until it is READY (asking it to
 * connect); only then is the call started.  A channel that reports
 * TRANSIENT_FAILURE or SHUTDOWN, or is not READY by the connect deadline,
 * fails the call before the call object exists, so nothing was written.
 * Once started, every failure counts as possibly seen by the server.
 *
 * What the server shares (library lifetime, addresses and the
 * development-mode rule, TLS credentials, channel arguments and the size
 * cap, packing and unpacking) lives in rpc.c.
 */
#include "rpcclient.h"

#include <errno.h>
#include <inttypes.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock.h"
#include "log.h"
#include "rpc-priv.h"

#define DEFAULT_TIMEOUT_MS 30000
#define RPC_CALL_META_MAX 8

static LockClass client_lock_class = LOCK_CLASS_INIT("rpc-client");

/* A method path registered with the channel (kept for its lifetime). */
typedef struct RegisteredPath {
        const ProtobufCMethodDescriptor *md; /* immutable */
        char *path;                          /* immutable */
        void *handle;                        /* immutable */
        struct RegisteredPath *next;         /* lock: cl->lock */
} RegisteredPath;

/* cl->lock protects the cache of registered paths; the rest is immutable. */
struct RpcClient {
        grpc_channel *ch;           /* immutable */
        char *target;               /* immutable */
        int64_t default_timeout_ms; /* immutable */
        int64_t connect_timeout_ms; /* immutable; 0 = no readiness check */
        bool wait_for_ready;        /* immutable */
        Lock lock;
        RegisteredPath *paths;      /* lock: cl->lock */
};

/* Owned by one thread (its reader, which for a bidi stream is also its
 * sender); only ->call is touched by rpc_stream_cancel from other threads. */
struct RpcStream {
        RpcClient *cl;
        grpc_call *call;                        /* immutable until freed */
        grpc_completion_queue *cq;
        const ProtobufCMessageDescriptor *in;   /* bidi: what rpc_bidi_send takes */
        const ProtobufCMessageDescriptor *out;
        char path[256];
        bool bidi;
        bool closed_send;                       /* bidi: SEND_CLOSE_FROM_CLIENT done */
        bool got_initial_md;
        bool recv_pending;                      /* a RECV_MESSAGE batch (TAG_RECV) is in flight */
        grpc_byte_buffer *recv_bb;              /* its buffer, filled at completion */
        grpc_metadata_array recv_md;            /* its initial metadata, when it asked */
        bool done;
        bool malformed;                         /* a message did not parse */
        int result;
        RpcStatus status;
};

static char tag_batch, tag_watch, tag_recv;
#define TAG_BATCH ((void *) &tag_batch)
#define TAG_WATCH ((void *) &tag_watch)
#define TAG_RECV ((void *) &tag_recv)

int rpc_client_new(const char *target, const RpcClientOptions *opts, RpcClient **ret_cl) {
        RpcClientOptions o = opts ? *opts : (RpcClientOptions){ 0 };
        grpc_channel_credentials *creds;
        RpcPem pem = { 0 };
        RpcAddrKind kind;
        int r;

        r = rpc_addr_parse(target, &kind, NULL, 0, NULL, 0, NULL, 0);
        if (r < 0)
                return r;
        r = rpc_pem_prepare(o.tls, false, target, &pem);
        if (r < 0)
                return r;
        RpcClient *cl = calloc(1, sizeof(*cl));
        if (!cl || !(cl->target = strdup(target))) {
                free(cl);
                rpc_pem_clear(&pem);
                return err_set(-ENOMEM, "out of memory");
        }
        cl->default_timeout_ms = o.default_timeout_ms > 0 ? o.default_timeout_ms : DEFAULT_TIMEOUT_MS;
        cl->wait_for_ready = o.wait_for_ready;
        cl->connect_timeout_ms = o.connect_timeout_ms > 0 ? o.connect_timeout_ms : 0;
        lock_init(&cl->lock, &client_lock_class);

        rpc_lib_ref();
        RpcArgs args;
        creds = rpc_channel_creds(&pem);
        cl->ch = grpc_channel_create(target, creds,
                                     rpc_args_client(&args, o.max_response_bytes, o.tls ? o.tls->server_name : NULL));
        grpc_channel_credentials_release(creds);
        rpc_pem_clear(&pem);
        if (!cl->ch) {
                rpc_client_free(cl);
                return err_set(-EINVAL, "cannot create a gRPC channel to %s", target);
        }
        *ret_cl = cl;
        return 0;
}

void rpc_client_free(RpcClient *cl) {
        if (!cl)
                return;
        if (cl->ch)
                grpc_channel_destroy(cl->ch);
        while (cl->paths) {
                RegisteredPath *p = cl->paths;
                cl->paths = p->next;
                free(p->path);
                free(p);
        }
        lock_destroy(&cl->lock);
        free(cl->target);
        free(cl);
        rpc_lib_unref();
}

bool rpc_client_broken(RpcClient *cl) {
        grpc_connectivity_state s = grpc_channel_check_connectivity_state(cl->ch, 0);
        return s == GRPC_CHANNEL_TRANSIENT_FAILURE || s == GRPC_CHANNEL_SHUTDOWN;
}

/* The method descriptor and registered handle for @svc/@method. */
static int client_method(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method,
                         const ProtobufCMethodDescriptor **ret_md, RegisteredPath **ret_path) {
        const ProtobufCMethodDescriptor *md = method ? protobuf_c_service_descriptor_get_method_by_name(svc, method) : NULL;
        RegisteredPath *p;

        if (!md)
                return err_set(-EINVAL, "service %s has no method %s", svc->name, method ? method : "(null)");
        lock_acquire(&cl->lock);
        for (p = cl->paths; p && p->md != md; p = p->next)
                ;
        if (!p) {
                char buf[512];
                snprintf(buf, sizeof(buf), "/%s/%s", svc->name, md->name);
                p = calloc(1, sizeof(*p));
                if (p && !(p->path = strdup(buf))) {
                        free(p);
                        p = NULL;
                }
                if (p) {
                        p->md = md;
                        p->handle = grpc_channel_register_call(cl->ch, p->path, NULL, NULL);
                        p->next = cl->paths;
                        cl->paths = p;
                }
        }
        lock_release(&cl->lock);
        if (!p)
                return err_set(-ENOMEM, "out of memory");
        *ret_md = md;
        *ret_path = p;
        return 0;
}

static int64_t client_timeout(RpcClient *cl, int64_t timeout_ms) {
        return timeout_ms > 0 ? timeout_ms : cl->default_timeout_ms;
}

static grpc_call *client_call_create(RpcClient *cl, const char *path, void *handle,
                                     gpr_timespec dl, grpc_completion_queue *cq) {
        if (handle)
                return grpc_channel_create_registered_call(cl->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                                           handle, dl, NULL);
        grpc_slice m = grpc_slice_from_copied_string(path);
        grpc_call *call = grpc_channel_create_call(cl->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, dl, NULL);
        grpc_slice_unref(m);
        return call;
}

static bool client_batch(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n) {
        if (grpc_call_start_batch(call, ops, n, TAG_BATCH, NULL) != GRPC_CALL_OK)
                return false;
        /* The call's deadline bounds this wait. */
        grpc_event ev = grpc_completion_queue_pluck(cq, TAG_BATCH, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void client_cq_destroy(grpc_completion_queue *cq) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
}

/* Copy the rich error model's google.rpc.Status from @trailing into @st
 * (none: details_len 0). */
static void status_details_bin(const char *path, const grpc_metadata_array *trailing, RpcStatus *st) {
        const size_t klen = strlen(RPC_STATUS_DETAILS_KEY);

        st->details_len = 0;
        for (size_t i = 0; trailing && i < trailing->count; i++) {
                const grpc_metadata *m = &trailing->metadata[i];
                if (GRPC_SLICE_LENGTH(m->key) != klen ||
                    memcmp(GRPC_SLICE_START_PTR(m->key), RPC_STATUS_DETAILS_KEY, klen) != 0)
                        continue;
                size_t n = GRPC_SLICE_LENGTH(m->value);
                if (n > sizeof(st->details_bin)) {
                        log_debug("rpc %s: status details of %zu bytes dropped (at most %zu)", path, n,
                                  sizeof(st->details_bin));
                        return;
                }
                memcpy(st->details_bin, GRPC_SLICE_START_PTR(m->value), n);
                st->details_len = n;
                return;
        }
}

/* Fill @st from a received status and its trailing metadata; returns 0
 * or the mapped -errno with an err_set() detail naming @path. */
static int status_result(const char *path, grpc_status_code code, grpc_slice details,
                         const char *debug, const grpc_metadata_array *trailing, RpcStatus *st) {
        st->code = rpc_code_from_grpc(code);
        rpc_slice_str(details, st->details, sizeof(st->details));
        status_details_bin(path, st->code == RPC_OK ? NULL : trailing, st);
        if (st->code == RPC_OK)
                return 0;
        if (debug)
                log_debug("rpc %s: %s: %s", path, rpc_code_to_string(st->code), debug);
        return err_set(rpc_errno_from_status(st->code), "%s: %s: %s", path,
                       rpc_code_to_string(st->code), st->details);
}

/* Wait (on @cq) until the channel is READY, asking it to connect, at most
 * until @dl.  0 when it is; else the "not sent" failure in @st and the
 * return value.  Nothing is sent either way. */
static int client_wait_ready(RpcClient *cl, grpc_completion_queue *cq, const char *path, gpr_timespec dl,
                             RpcStatus *st) {
        grpc_connectivity_state s = grpc_channel_check_connectivity_state(cl->ch, 1);
        bool failed = false;
        while (s != GRPC_CHANNEL_READY) {
                if (s == GRPC_CHANNEL_TRANSIENT_FAILURE || s == GRPC_CHANNEL_SHUTDOWN) {
                        failed = true;
                        break;
                }
                grpc_channel_watch_connectivity_state(cl->ch, s, dl, cq, TAG_WATCH);
                grpc_event ev = grpc_completion_queue_pluck(cq, TAG_WATCH, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type != GRPC_OP_COMPLETE || !ev.success)
                        break; /* the deadline */
                s = grpc_channel_check_connectivity_state(cl->ch, 1);
        }
        if (s == GRPC_CHANNEL_READY)
                return 0;
        st->code = RPC_UNAVAILABLE;
        st->not_sent = true;
        st->details_len = 0;
        snprintf(st->details, sizeof(st->details), "%s", failed ?
                 "no connection: refused, unreachable or TLS handshake failed" : "no connection within the connect timeout");
        return err_set(failed ? -ECONNREFUSED : -EHOSTUNREACH, "%s: not sent to %s: %s", path, cl->target, st->details);
}

/* One unary exchange of bytes.  @req NULL sends no message. */
static int client_unary_bb(RpcClient *cl, const char *path, void *handle, grpc_byte_buffer *req,
                           int64_t timeout_ms, grpc_byte_buffer **ret_resp, RpcStatus *st) {
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        grpc_metadata_array md_initial, md_trailing;
        grpc_byte_buffer *resp = NULL;
        grpc_status_code code = GRPC_STATUS_UNKNOWN;
        grpc_slice details = grpc_empty_slice();
        const char *debug = NULL;
        grpc_op ops[6];
        size_t n = 0;
        int r;

        int64_t ms = client_timeout(cl, timeout_ms);
        gpr_timespec dl = rpc_deadline_ms(ms);
        st->not_sent = false;
        if (cl->connect_timeout_ms > 0 && !cl->wait_for_ready) {
                gpr_timespec cdl = rpc_deadline_ms(ms < cl->connect_timeout_ms ? ms : cl->connect_timeout_ms);
                if ((r = client_wait_ready(cl, cq, path, cdl, st)) < 0) {
                        client_cq_destroy(cq);
                        return r;
                }
        }
        grpc_call *call = client_call_create(cl, path, handle, dl, cq);
        if (!call) {
                client_cq_destroy(cq);
                st->code = RPC_INTERNAL;
                st->not_sent = true;
                st->details_len = 0;
                snprintf(st->details, sizeof(st->details), "cannot create a call");
                return err_set(-ENOMEM, "%s: cannot create a gRPC call", path);
        }
        grpc_metadata_array_init(&md_initial);
        grpc_metadata_array_init(&md_trailing);
        memset(ops, 0, sizeof(ops));
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n++].flags = cl->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
        if (req) {
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n++].data.send_message.send_message = req;
        }
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &resp;
        ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[n].data.recv_status_on_client.trailing_metadata = &md_trailing;
        ops[n].data.recv_status_on_client.status = &code;
        ops[n].data.recv_status_on_client.status_details = &details;
        ops[n++].data.recv_status_on_client.error_string = &debug;

        if (!client_batch(call, cq, ops, n)) {
                code = GRPC_STATUS_INTERNAL;
                grpc_slice_unref(details);
                details = grpc_slice_from_static_string("the call failed locally");
        }
        r = status_result(path, code, details, debug, &md_trailing, st);
        if (r == 0 && !resp)
                r = err_set(-EBADMSG, "%s: OK without a reply message", path);
        if (r == 0)
                *ret_resp = TAKE_PTR(resp);
        if (resp)
                grpc_byte_buffer_destroy(resp);
        gpr_free((void *) debug);
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&md_initial);
        grpc_metadata_array_destroy(&md_trailing);
        grpc_call_unref(call);
        client_cq_destroy(cq);
        return r;
}

int rpc_client_unary(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method,
                     const ProtobufCMessage *req, int64_t timeout_ms, ProtobufCMessage **ret_resp,
                     RpcStatus *ret_status) {
        const ProtobufCMethodDescriptor *md;
        RegisteredPath *p;
        RpcStatus st_local;
        RpcStatus *st = ret_status ? ret_status : &st_local;
        grpc_byte_buffer *resp = NULL;
        ProtobufCMessage *m;
        int r;

        r = client_method(cl, svc, method, &md, &p);
        if (r < 0)
                return r;
        if (!req || req->descriptor != md->input)
                return err_set(-EINVAL, "%s: the request is not a %s", p->path, md->input->name);
        grpc_byte_buffer *bb = rpc_pack(req);
        r = client_unary_bb(cl, p->path, p->handle, bb, timeout_ms, &resp, st);
        grpc_byte_buffer_destroy(bb);
        if (r < 0)
                return r;
        r = rpc_unpack(resp, md->output, NULL, &m);
        grpc_byte_buffer_destroy(resp);
        if (r < 0)
                return err_prefix(r, "%s: reply", p->path);
        *ret_resp = m;
        return 0;
}

int rpc_client_unary_raw(RpcClient *cl, const char *path, const void *data, size_t len,
                         int64_t timeout_ms, void **ret_data, size_t *ret_len,
                         RpcStatus *ret_status) {
        RpcStatus st_local;
        grpc_byte_buffer *req = NULL, *resp = NULL;
        grpc_slice bytes;
        int r;

        if (data) {
                grpc_slice s = grpc_slice_from_copied_buffer(data, len);
                req = grpc_raw_byte_buffer_create(&s, 1);
                grpc_slice_unref(s);
        }
        r = client_unary_bb(cl, path, NULL, req, timeout_ms, &resp, ret_status ? ret_status : &st_local);
        if (req)
                grpc_byte_buffer_destroy(req);
        if (r < 0)
                return r;
        r = rpc_bb_flatten(resp, &bytes);
        grpc_byte_buffer_destroy(resp);
        if (r < 0)
                return r;
        size_t n = GRPC_SLICE_LENGTH(bytes);
        void *out = n ? malloc(n) : NULL;
        if (n && !out) {
                grpc_slice_unref(bytes);
                return err_set(-ENOMEM, "out of memory");
        }
        if (n)
                memcpy(out, GRPC_SLICE_START_PTR(bytes), n);
        grpc_slice_unref(bytes);
        *ret_data = out;
        *ret_len = n;
        return 0;
}

/* Wait for the pending receive to complete (@dl: its deadline for this
 * wait), or start one first.  0 with *ret_bb (NULL: the end of the stream
 * or a failed call), or -ETIMEDOUT with the receive still pending. */
static int stream_recv(RpcStream *s, gpr_timespec dl, grpc_byte_buffer **ret_bb) {
        if (!s->recv_pending) {
                grpc_op ops[2];
                size_t n = 0;

                memset(ops, 0, sizeof(ops));
                if (!s->got_initial_md) {
                        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
                        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->recv_md;
                }
                ops[n].op = GRPC_OP_RECV_MESSAGE;
                ops[n++].data.recv_message.recv_message = &s->recv_bb;
                if (grpc_call_start_batch(s->call, ops, n, TAG_RECV, NULL) != GRPC_CALL_OK) {
                        *ret_bb = NULL;
                        return 0;
                }
                s->recv_pending = true;
        }
        grpc_event ev = grpc_completion_queue_pluck(s->cq, TAG_RECV, dl, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
                return -ETIMEDOUT;
        s->recv_pending = false;
        if (ev.type == GRPC_OP_COMPLETE && ev.success)
                s->got_initial_md = true;
        *ret_bb = TAKE_PTR(s->recv_bb);
        return 0;
}

/* Receive the final status of a stream and record the result.  A pending
 * receive is collected first (the call is over or cancelled, so it
 * completes). */
static int stream_finish(RpcStream *s) {
        grpc_metadata_array md_initial, md_trailing;
        grpc_status_code code = GRPC_STATUS_UNKNOWN;
        grpc_slice details = grpc_empty_slice();
        const char *debug = NULL;
        grpc_byte_buffer *bb = NULL;
        grpc_op ops[2];
        size_t n = 0;

        if (s->recv_pending) {
                (void) stream_recv(s, gpr_inf_future(GPR_CLOCK_MONOTONIC), &bb);
                if (bb)
                        grpc_byte_buffer_destroy(bb);
        }
        grpc_metadata_array_init(&md_initial);
        grpc_metadata_array_init(&md_trailing);
        memset(ops, 0, sizeof(ops));
        if (!s->got_initial_md) {
                ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
                ops[n++].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
                s->got_initial_md = true;
        }
        ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[n].data.recv_status_on_client.trailing_metadata = &md_trailing;
        ops[n].data.recv_status_on_client.status = &code;
        ops[n].data.recv_status_on_client.status_details = &details;
        ops[n++].data.recv_status_on_client.error_string = &debug;
        if (!client_batch(s->call, s->cq, ops, n)) {
                code = GRPC_STATUS_INTERNAL;
                grpc_slice_unref(details);
                details = grpc_slice_from_static_string("the call failed locally");
        }
        s->result = status_result(s->path, code, details, debug, &md_trailing, &s->status);
        s->done = true;
        gpr_free((void *) debug);
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&md_initial);
        grpc_metadata_array_destroy(&md_trailing);
        return s->result;
}

/* Repeat the recorded end of the stream (and its detail for this thread). */
static int stream_result(RpcStream *s) {
        if (s->malformed)
                return err_set(s->result, "%s: malformed message %s", s->path, s->out->name);
        if (s->result < 0)
                return err_set(s->result, "%s: %s: %s", s->path, rpc_code_to_string(s->status.code),
                               s->status.details);
        return 0;
}

/* A new stream of @md on its own queue, with deadline @dl; NULL when out
 * of memory or the call cannot be made (err_set). */
static RpcStream *stream_new(RpcClient *cl, const ProtobufCMethodDescriptor *md, RegisteredPath *p,
                             gpr_timespec dl) {
        RpcStream *s = calloc(1, sizeof(*s));
        if (!s) {
                err_set(-ENOMEM, "out of memory");
                return NULL;
        }
        s->cl = cl;
        s->in = md->input;
        s->out = md->output;
        snprintf(s->path, sizeof(s->path), "%s", p->path);
        grpc_metadata_array_init(&s->recv_md);
        s->cq = grpc_completion_queue_create_for_pluck(NULL);
        s->call = client_call_create(cl, p->path, p->handle, dl, s->cq);
        if (!s->call) {
                rpc_stream_free(s);
                err_set(-ENOMEM, "%s: cannot create a gRPC call", p->path);
                return NULL;
        }
        return s;
}

/* Run the send batch @ops on a new stream; on failure the stream's status
 * (the call already failed: unreachable, deadline) is returned and @s freed. */
static int stream_start(RpcStream *s, const grpc_op *ops, size_t n) {
        if (client_batch(s->call, s->cq, ops, n))
                return 0;
        int r = stream_finish(s);
        if (r == 0)
                r = err_set(-EPROTO, "%s: the request could not be sent", s->path);
        rpc_stream_free(s);
        return r;
}

int rpc_stream_open(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method,
                    const ProtobufCMessage *req, int64_t timeout_ms, RpcStream **ret_stream) {
        const ProtobufCMethodDescriptor *md;
        RegisteredPath *p;
        grpc_op ops[3];
        int r;

        r = client_method(cl, svc, method, &md, &p);
        if (r < 0)
                return r;
        if (!req || req->descriptor != md->input)
                return err_set(-EINVAL, "%s: the request is not a %s", p->path, md->input->name);
        RpcStream *s = stream_new(cl, md, p, rpc_deadline_ms(client_timeout(cl, timeout_ms)));
        if (!s)
                return -ENOMEM;
        grpc_byte_buffer *bb = rpc_pack(req);
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].flags = cl->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = bb;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        r = stream_start(s, ops, 3);
        grpc_byte_buffer_destroy(bb);
        if (r < 0)
                return r;
        *ret_stream = s;
        return 0;
}

int rpc_bidi_open(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method, int64_t timeout_ms,
                  RpcStream **ret_stream) {
        return rpc_bidi_open_meta(cl, svc, method, timeout_ms, NULL, 0, 0, ret_stream);
}

/* Whether gRPC takes @m as request metadata (checked before any call). */
static bool meta_legal(const RpcCallMeta *m) {
        if (!m->key || !m->value || strncmp(m->key, "grpc-", 5) == 0)
                return false;
        size_t kl = strlen(m->key);
        if (kl >= 4 && strcmp(m->key + kl - 4, "-bin") == 0)
                return false;
        grpc_slice k = grpc_slice_from_static_string(m->key), v = grpc_slice_from_static_string(m->value);
        return grpc_header_key_is_legal(k) && grpc_header_nonbin_value_is_legal(v);
}

int rpc_bidi_open_meta(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const char *method, int64_t timeout_ms,
                       const RpcCallMeta *meta, size_t n_meta, int64_t open_timeout_ms, RpcStream **ret_stream) {
        grpc_metadata md[RPC_CALL_META_MAX];
        const ProtobufCMethodDescriptor *md_desc;
        RegisteredPath *p;
        grpc_op op;
        int r;

        r = client_method(cl, svc, method, &md_desc, &p);
        if (r < 0)
                return r;
        if (n_meta > RPC_CALL_META_MAX || (n_meta && !meta))
                return err_set(-EINVAL, "%s: %zu metadata entries (at most %d)", p->path, n_meta, RPC_CALL_META_MAX);
        for (size_t i = 0; i < n_meta; i++)
                if (!meta_legal(&meta[i]))
                        return err_set(-EINVAL, "%s: metadata '%s' is not a plain gRPC header", p->path,
                                       meta[i].key ? meta[i].key : "(null)");
        gpr_timespec dl = rpc_deadline_ms(timeout_ms < 0 ? -1 : client_timeout(cl, timeout_ms));
        RpcStream *s = stream_new(cl, md_desc, p, dl);
        if (!s)
                return -ENOMEM;
        s->bidi = true;
        if (cl->connect_timeout_ms > 0 && !cl->wait_for_ready) {
                int64_t ms = cl->connect_timeout_ms;
                if (timeout_ms > 0)
                        ms = MIN(ms, timeout_ms);
                if (open_timeout_ms > 0)
                        ms = MIN(ms, open_timeout_ms);
                r = client_wait_ready(cl, s->cq, p->path, rpc_deadline_ms(ms), &s->status);
                if (r < 0) {
                        rpc_stream_free(s);
                        return r;
                }
        }
        memset(md, 0, sizeof(md));
        for (size_t i = 0; i < n_meta; i++) {
                md[i].key = grpc_slice_from_copied_string(meta[i].key);
                md[i].value = grpc_slice_from_copied_string(meta[i].value);
        }
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_INITIAL_METADATA;
        op.flags = cl->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
        op.data.send_initial_metadata.count = n_meta;
        op.data.send_initial_metadata.metadata = n_meta ? md : NULL;
        r = stream_start(s, &op, 1);
        for (size_t i = 0; i < n_meta; i++) {
                grpc_slice_unref(md[i].key);
                grpc_slice_unref(md[i].value);
        }
        if (r < 0)
                return r;
        *ret_stream = s;
        return 0;
}

/* One send batch of a bidi stream; a failure ends the stream with its
 * status. */
static int bidi_batch(RpcStream *s, const grpc_op *op) {
        if (client_batch(s->call, s->cq, op, 1))
                return 0;
        int r = stream_finish(s);
        return r < 0 ? r : err_set(-EPIPE, "%s: the stream has ended", s->path);
}

int rpc_bidi_send(RpcStream *s, const ProtobufCMessage *msg) {
        grpc_op op;

        if (!s->bidi || !msg || msg->descriptor != s->in)
                return err_set(-EINVAL, "%s: not a %s on a bidirectional stream", s->path, s->in->name);
        if (s->done)
                return s->result < 0 ? stream_result(s) : err_set(-EPIPE, "%s: the stream has ended", s->path);
        if (s->closed_send)
                return err_set(-EINVAL, "%s: send after close", s->path);
        grpc_byte_buffer *bb = rpc_pack(msg);
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = bb;
        int r = bidi_batch(s, &op);
        grpc_byte_buffer_destroy(bb);
        return r;
}

int rpc_bidi_close_send(RpcStream *s) {
        grpc_op op;

        if (!s->bidi)
                return err_set(-EINVAL, "%s: not a bidirectional stream", s->path);
        if (s->done || s->closed_send)
                return 0;
        s->closed_send = true;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        return bidi_batch(s, &op);
}

int rpc_stream_read_timeout(RpcStream *s, int64_t timeout_ms, ProtobufCMessage **ret_msg) {
        grpc_byte_buffer *bb = NULL;

        if (s->done)
                return stream_result(s);
        if (stream_recv(s, rpc_deadline_ms(timeout_ms), &bb) < 0)
                return err_set(-ETIMEDOUT, "%s: no message within %" PRId64 " ms", s->path, timeout_ms);
        if (!bb)
                return stream_finish(s);

        ProtobufCMessage *m = NULL;
        int r = rpc_unpack(bb, s->out, NULL, &m);
        grpc_byte_buffer_destroy(bb);
        if (r < 0) {
                grpc_call_cancel(s->call, NULL);
                stream_finish(s);
                s->malformed = true;
                s->result = -EBADMSG;
                s->status.code = RPC_INTERNAL;
                snprintf(s->status.details, sizeof(s->status.details), "malformed message %s", s->out->name);
                return stream_result(s);
        }
        *ret_msg = m;
        return 1;
}

int rpc_stream_read(RpcStream *s, ProtobufCMessage **ret_msg) {
        return rpc_stream_read_timeout(s, -1, ret_msg);
}

void rpc_stream_cancel(RpcStream *s) {
        if (s && s->call)
                grpc_call_cancel(s->call, NULL);
}

const RpcStatus *rpc_stream_status(RpcStream *s) {
        return s->done ? &s->status : NULL;
}

void rpc_stream_free(RpcStream *s) {
        if (!s)
                return;
        if (s->call) {
                if (!s->done) {
                        /* Keep the caller's error detail across our own cancel. */
                        char saved[ERR_MSG_MAX];
                        snprintf(saved, sizeof(saved), "%s", err_msg());
                        grpc_call_cancel(s->call, NULL);
                        stream_finish(s);
                        err_clear();
                        if (saved[0])
                                err_set(-EIO, "%s", saved);
                }
                grpc_call_unref(s->call);
        }
        if (s->recv_bb)
                grpc_byte_buffer_destroy(s->recv_bb);
        grpc_metadata_array_destroy(&s->recv_md);
        if (s->cq)
                client_cq_destroy(s->cq);
        free(s);
}
