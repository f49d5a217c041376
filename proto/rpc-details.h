/* Typed error details: the gRPC rich error model on top of libdrover-rpc.
 *
 * A failing call may carry a google.rpc.Status {code, message, details}
 * (proto/google/rpc/status.proto) in its trailing metadata
 * `grpc-status-details-bin`; each detail is a message packed in a
 * google.protobuf.Any whose type_url is "type.googleapis.com/" and the
 * message's full name (e.g. "type.googleapis.com/drover.v1.BlockedGuests").
 * Any gRPC client can read it (grpcio's rpc_status, grpc-go's
 * status.FromError); clients that do not still see the plain status.
 *
 * The server side builds the Status from one protobuf-c message and hands
 * the bytes to rpc_call_fail_status_bin() (rpcserver.h); the client side
 * finds a detail of a given type in an RpcStatus (rpcclient.h), which
 * holds the raw bytes.  This lives beside the generated code (like
 * health.c), since core/ does not see the generated messages.
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "rpcclient.h"
#include "rpcserver.h"

#define RPC_DETAIL_TYPE_URL_PREFIX "type.googleapis.com/"

/* The size of the google.rpc.Status that rpc_call_fail_detail() would
 * send for @detail and a message of @message_len bytes: a caller whose
 * detail may grow without bound (a list) trims it until this is at most
 * RPC_STATUS_DETAILS_MAX, beyond which the detail would not be sent. */
size_t rpc_detail_status_size(const ProtobufCMessage *detail, size_t message_len);

/* Fail the call with @code and the printf-style message, attaching
 * @detail (any protobuf-c message; packed at once, so it may live on the
 * stack or in the call's arena) as the one detail of a google.rpc.Status
 * with the same code and message.  A Status over RPC_STATUS_DETAILS_MAX
 * bytes is not attached (see rpc_call_fail_status_bin).  Returns @code,
 * for `return rpc_call_fail_detail(c, RPC_FAILED_PRECONDITION, &d.base,
 * "...")`.  On the handler's thread. */
RpcCode rpc_call_fail_detail(RpcCall *call, RpcCode code, const ProtobufCMessage *detail, const char *fmt, ...)
        _printf_(4, 5);

/* Find the first detail of type @d in the google.rpc.Status that @st
 * carries and unpack it.  Returns 0 and *ret (the caller frees it with
 * protobuf_c_message_free_unpacked(*ret, NULL)), -ENOENT when @st carries
 * no Status or none of that type, -EBADMSG (with a detail) when the
 * Status or the detail does not parse.  @st is not changed. */
int rpc_status_detail(const RpcStatus *st, const ProtobufCMessageDescriptor *d, ProtobufCMessage **ret);
