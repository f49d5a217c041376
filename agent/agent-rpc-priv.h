/* What the two files of the Agent gRPC service share (agent-rpc.c: the
 * handler frame, guests, operations of guests, host statistics and the
 * method table; agent-rpc-migrate.c: migrations, the peer calls and the
 * operation reads).  Internal to the agent: nothing outside those two
 * files includes it.
 *
 * Every handler has the same frame (Handler): arpc_enter() or arpc_guest()
 * first, one of the arpc_end*() last; between them only the handler's own
 * logic.  Response memory lives in the call's arena. */
#pragma once

#include "agent-ops.h"
#include "agent-rpc.h"
#include "agent.pb-c.h"

/* The frame of one handler call; lives on the handler's stack. */
typedef struct Handler {
        RpcCall *c;
        Agent *a;
        Vm *vm;             /* the guest the request names, referenced; NULL for host-wide calls */
        char op[OP_ID_MAX]; /* the operation id (arpc_guest() with an op id only) */
} Handler;

/* The -errno whose status an agent error @r becomes (-ESRCH, "not
 * running", is a precondition for an existing guest: -EBUSY). */
int arpc_status_errno(int r);
/* Fail @c with @r mapped by arpc_status_errno() and this thread's detail. */
RpcCode arpc_fail(RpcCall *c, int r);
/* An operation's state in the proto's numbering. */
Drover__V1__OperationState arpc_op_state(AgentOpState s);
/* @o from snapshot @s, strings and ages in the call's arena. */
void arpc_fill_status(RpcCall *c, Drover__V1__GuestStatus *o, const VmSnapshot *s);

/* Begin a host-wide call: count it in flight. */
void arpc_enter(Handler *h, RpcCall *c, void *user);
/* End the call with @code: drop the guest reference, count it out. */
RpcCode arpc_end(Handler *h, RpcCode code);
/* End with the outcome @r of an agent call (OK, or the mapped -errno). */
RpcCode arpc_end_r(Handler *h, int r);
/* arpc_enter(), then the guest @guest (name or UUID) into h->vm and, with
 * @op_id not NULL, that operation id (or a new one) into h->op.  RPC_OK,
 * or a status with the call already ended (return it). */
RpcCode arpc_guest(Handler *h, RpcCall *c, void *user, const char *guest, const char *op_id);
/* arpc_end_r(), filling @resp (not NULL) with the guest's status on success. */
RpcCode arpc_end_status(Handler *h, int r, Drover__V1__GuestStatus *resp);

/* The shape shared by Undefine, Destroy, Suspend, Resume and
 * MigrateStartPostcopy: the guest @req names, @fn on it, then its status
 * into @resp (NULL: none). */
typedef int (*GuestOpFn)(Agent *a, Vm *vm, const char *op);
RpcCode arpc_guest_op(RpcCall *c, void *user, const Drover__V1__GuestRef *req, GuestOpFn fn,
                      Drover__V1__GuestStatus *resp);

/* arpc_enter() for a stream: admitted under the cap on open streams
 * (rpc_lanes.streams - 1), holding a reference on the call for the
 * subscription that wakes it.  RPC_OK, or RESOURCE_EXHAUSTED with the call
 * already ended. */
RpcCode arpc_stream_enter(Handler *h, RpcCall *c, void *user);
/* End a stream begun with arpc_stream_enter() with @code. */
RpcCode arpc_stream_end(Handler *h, RpcCode code);
/* A subscription callback: wake the stream call @opaque (an RpcCall). */
void arpc_wake_call(void *opaque);
/* Fill the reply @resp of a guest-agent call of @kind from @res. */
void arpc_fill_ga_reply(RpcCall *c, AgentOpKind kind, const AgentOpResult *res, ProtobufCMessage *resp);

/* agent-rpc-migrate.c: the handlers of the method table. */
RpcCode h_migrate(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_migrate_abort(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_migrate_tune(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_migrate_postcopy(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_get_migration(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_watch_migration(RpcCall *c, const ProtobufCMessage *req, void *user);
RpcCode h_prepare(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_finish(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_cancel(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_owner(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_recover(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_migrate_recover_now(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_get_operation(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user);
RpcCode h_watch_operation(RpcCall *c, const ProtobufCMessage *req, void *user);
