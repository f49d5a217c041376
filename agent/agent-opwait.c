/* Waiting for an agent operation on the client (see agent-opwait.h).
 *
 * agent_op_wait() opens one WatchOperation stream with the whole deadline
 * and reads until a message says done.  A stream refused for lack of room
 * (RESOURCE_EXHAUSTED), or one that ended without a done message, falls
 * back to GetOperation every 20 ms, doubling up to 500 ms, until the
 * deadline.  agent_op_call() maps each operation method to where its
 * reply keeps the operation id and state and where the Operation keeps a
 * result of the same type (a table), so one function serves them all.
 */
#include "agent-opwait.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "deadline.h"
#include "err.h"

#define DEFAULT_TIMEOUT_MS 60000

static void set_status(RpcStatus *st, RpcCode code, const char *details) {
        if (!st)
                return;
        memset(st, 0, sizeof(*st));
        st->code = code;
        snprintf(st->details, sizeof(st->details), "%s", details);
}

/* The outcome of a done operation @op: 0, or its failure as -errno. */
static int outcome(const Drover__V1__Operation *op, RpcStatus *ret_status) {
        if (op->state == DROVER__V1__OPERATION_STATE__OPERATION_STATE_SUCCEEDED) {
                set_status(ret_status, RPC_OK, "");
                return 0;
        }
        RpcCode code = op->error_code > 0 && op->error_code < RPC_CODE_MAX ? (RpcCode) op->error_code : RPC_UNKNOWN;
        set_status(ret_status, code, op->error);
        return err_set(rpc_errno_from_status(code), "operation %s (%s of %s): %s: %s", op->op_id, op->kind,
                       op->guest, rpc_code_to_string(code), op->error);
}

/* GetOperation until done or @d passes. */
static int poll_operation(RpcClient *cl, const char *op_id, Deadline d, Drover__V1__Operation **last,
                          RpcStatus *ret_status) {
        Drover__V1__OperationRef ref = DROVER__V1__OPERATION_REF__INIT;
        int64_t pause = 20;
        ref.op_id = (char *) op_id;
        for (;;) {
                Drover__V1__Operation *op = NULL;
                int64_t left = deadline_remaining_ms(d);
                if (left <= 0)
                        break;
                int r = rpc_client_unary(cl, &drover__v1__agent__descriptor, "GetOperation", &ref.base, left,
                                         (ProtobufCMessage **) &op, ret_status);
                if (r < 0)
                        return r;
                if (*last)
                        drover__v1__operation__free_unpacked(*last, NULL);
                *last = op;
                if (op->done)
                        return outcome(op, ret_status);
                left = deadline_remaining_ms(d);
                sleep_ms(MIN(pause, MAX(left, 0)));
                pause = MIN(pause * 2, 500);
        }
        set_status(ret_status, RPC_DEADLINE_EXCEEDED, "operation still running at the client's timeout");
        return err_set(-ETIMEDOUT, "operation %s still running at the client's timeout", op_id);
}

int agent_op_wait(RpcClient *cl, const char *op_id, int64_t timeout_ms, Drover__V1__Operation **ret,
                  RpcStatus *ret_status) {
        Drover__V1__OperationRef ref = DROVER__V1__OPERATION_REF__INIT;
        Drover__V1__Operation *last = NULL;
        RpcStream *st = NULL;
        Deadline d = deadline_in_ms(timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS);
        int r;

        ref.op_id = (char *) op_id;
        r = rpc_stream_open(cl, &drover__v1__agent__descriptor, "WatchOperation", &ref.base,
                            MAX(deadline_remaining_ms(d), 1), &st);
        while (r >= 0) {
                Drover__V1__Operation *op;
                r = rpc_stream_read(st, (ProtobufCMessage **) &op);
                if (r <= 0)
                        break;
                if (last)
                        drover__v1__operation__free_unpacked(last, NULL);
                last = op;
                if (op->done)
                        break;
        }
        if (last && last->done)
                r = outcome(last, ret_status);
        else if (r == 0 || r == -ENOBUFS) /* ended without done, or no stream to spare: poll */
                r = poll_operation(cl, op_id, d, &last, ret_status);
        else if (st && rpc_stream_status(st)) {
                const RpcStatus *s = rpc_stream_status(st);
                if (ret_status)
                        *ret_status = *s;
        } else
                set_status(ret_status, rpc_status_from_errno(r), err_str(r));
        rpc_stream_free(st);
        if (ret)
                *ret = last;
        else if (last)
                drover__v1__operation__free_unpacked(last, NULL);
        return r;
}

/* Where an operation method's reply keeps the operation, and where the
 * Operation keeps the result of the reply's type. */
typedef struct OpMethod {
        const char *method;
        size_t id_offset;       /* char * in the reply */
        size_t state_offset;    /* Drover__V1__OperationState in the reply */
        size_t result_offset;   /* ProtobufCMessage * in Drover__V1__Operation */
} OpMethod;

#define OP_METHOD(name, type, field)                                                                   \
        { name, offsetof(type, operation_id), offsetof(type, operation_state),                         \
          offsetof(Drover__V1__Operation, field) }

static const OpMethod op_methods[] = {
        OP_METHOD("Start", Drover__V1__GuestStatus, guest_status),
        OP_METHOD("Shutdown", Drover__V1__GuestStatus, guest_status),
        OP_METHOD("GuestPing", Drover__V1__GuestPingResponse, guest_ping),
        OP_METHOD("GuestInfo", Drover__V1__GuestInfoResponse, guest_info),
        OP_METHOD("GuestSetTime", Drover__V1__GuestSetTimeResponse, guest_set_time),
        OP_METHOD("GuestGetTime", Drover__V1__GuestGetTimeResponse, guest_get_time),
};

int agent_op_call(RpcClient *cl, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                  ProtobufCMessage **ret_resp, RpcStatus *ret_status) {
        Deadline d = deadline_in_ms(timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS);
        const OpMethod *m = NULL;
        ProtobufCMessage *resp = NULL;

        for (size_t i = 0; i < ELEMENTSOF(op_methods); i++)
                if (strcmp(op_methods[i].method, method) == 0)
                        m = &op_methods[i];
        int r = rpc_client_unary(cl, &drover__v1__agent__descriptor, method, req, deadline_remaining_ms(d), &resp,
                                 ret_status);
        if (r < 0 || !m)
                goto out;
        const char *id = *(char **) ((char *) resp + m->id_offset);
        Drover__V1__OperationState state = *(Drover__V1__OperationState *) ((char *) resp + m->state_offset);
        if (!id || !id[0] || state == DROVER__V1__OPERATION_STATE__OPERATION_STATE_SUCCEEDED)
                goto out; /* an agent without operations, or a retry of one that succeeded */
        Drover__V1__Operation *op = NULL;
        r = agent_op_wait(cl, id, MAX(deadline_remaining_ms(d), 1), &op, ret_status);
        ProtobufCMessage **result = op ? (ProtobufCMessage **) ((char *) op + m->result_offset) : NULL;
        if (r >= 0 && result && *result) {
                protobuf_c_message_free_unpacked(resp, NULL);
                resp = *result;
                *result = NULL;
        }
        if (op)
                drover__v1__operation__free_unpacked(op, NULL);
out:
        if (r < 0 && resp) {
                protobuf_c_message_free_unpacked(resp, NULL);
                resp = NULL;
        }
        *ret_resp = resp;
        return r;
}

Drover__V1__MigrationResult *agent_op_migrate(RpcClient *cl, const Drover__V1__MigrateRequest *req, bool wait,
                                              int64_t timeout_ms, RpcStatus *ret_status) {
        Deadline d = deadline_in_ms(timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS);
        Drover__V1__MigrateResponse *resp = NULL;
        Drover__V1__MigrationResult *res = NULL;
        int r = rpc_client_unary(cl, &drover__v1__agent__descriptor, "Migrate", &req->base, deadline_remaining_ms(d),
                                 (ProtobufCMessage **) &resp, ret_status);
        if (r < 0)
                return NULL;
        res = resp->result;
        resp->result = NULL;
        if (wait && resp->operation_id[0]) {
                Drover__V1__Operation *op = NULL;
                r = agent_op_wait(cl, resp->operation_id, MAX(deadline_remaining_ms(d), 1), &op, ret_status);
                /* a failed migration is a result: only a wait that did not end is an error */
                if (op && op->done && op->migration) {
                        if (res)
                                drover__v1__migration_result__free_unpacked(res, NULL);
                        res = op->migration;
                        op->migration = NULL;
                        set_status(ret_status, RPC_OK, "");
                } else if (r >= 0 || (op && op->done)) {
                        r = err_set(-ENOENT, "migration %s ended but the agent no longer has its record",
                                    resp->operation_id);
                        set_status(ret_status, RPC_NOT_FOUND, err_msg());
                }
                if (op)
                        drover__v1__operation__free_unpacked(op, NULL);
                if (r < 0 && !(res && res->done)) {
                        if (res)
                                drover__v1__migration_result__free_unpacked(res, NULL);
                        res = NULL;
                }
        }
        drover__v1__migrate_response__free_unpacked(resp, NULL);
        return res;
}
