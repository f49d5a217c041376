/* Client side of the agent's operations: wait for one, on the client.
 *
 * Start, Shutdown, Migrate and the guest-agent calls of drover-agent answer
 * at once with an operation id (agent-ops.h, docs/agent.md "Operations").
 * A client that wants the old blocking behaviour waits here: it follows
 * the operation with WatchOperation (one stream, woken by the agent on
 * every change) and, when the agent has no stream to spare
 * (RESOURCE_EXHAUSTED), polls GetOperation with a growing pause instead.
 * Every wait is bounded by the caller's timeout.
 *
 * drover-agentctl (--wait) and the tests use it; it is the one home of the
 * "call, then wait for its operation" logic.  Received messages belong to
 * the caller (free them with their free_unpacked).
 */
#pragma once

#include <stdint.h>

#include "agent.pb-c.h"
#include "rpcclient.h"

/* Follow operation @op_id on the agent behind @cl until it is done, for at
 * most @timeout_ms (<= 0: 60 s).  Returns 0 when it succeeded; when it
 * failed, the -errno of its status code, with *ret_status (when not NULL)
 * holding its code and error text and err_set() detail likewise; or the
 * -errno of the wait itself (-ETIMEDOUT when @timeout_ms passed, the
 * agent's status otherwise, e.g. NOT_FOUND for an unknown id).  *ret (when
 * not NULL) is the last Operation read, also on failure (NULL when none
 * was); the caller frees it. */
int agent_op_wait(RpcClient *cl, const char *op_id, int64_t timeout_ms, Drover__V1__Operation **ret,
                  RpcStatus *ret_status);

/* A unary call of @method on drover.v1.Agent that, for the methods that
 * answer with an operation (Start, Shutdown, GuestPing, GuestInfo,
 * GuestSetTime, GuestGetTime), waits for it (agent_op_wait) and returns
 * what the blocking call used to: the operation's result in the method's
 * response type (Start, Shutdown: the guest's status after it), or its
 * failure as the call's status.  Any other method is a plain
 * rpc_client_unary(); Migrate too (its wait is agent_op_migrate()).
 * @timeout_ms (<= 0: 60 s) covers the call and the wait. */
int agent_op_call(RpcClient *cl, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                  ProtobufCMessage **ret_resp, RpcStatus *ret_status);

/* Migrate with @req and, when @wait, wait until the migration ended; the
 * returned MigrationResult is the migration's record (success false for a
 * migration that failed: that is a result, not an error).  NULL on an RPC
 * error or a timeout (*ret_status says which, err_set() likewise).  Without
 * @wait, the record when the call answered (done false).  The caller frees
 * it with drover__v1__migration_result__free_unpacked(). */
Drover__V1__MigrationResult *agent_op_migrate(RpcClient *cl, const Drover__V1__MigrateRequest *req, bool wait,
                                              int64_t timeout_ms, RpcStatus *ret_status);
