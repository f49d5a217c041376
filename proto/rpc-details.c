/* Typed error details (rpc-details.h): google.rpc.Status built and read
 * with the generated protobuf-c code of proto/google.
 *
 * Server: the detail is packed into a google.protobuf.Any, the Any into a
 * Status that repeats the call's code and message, and the Status bytes go
 * to rpc_call_fail_status_bin(), which sends them as the trailer.  Client:
 * the raw Status in an RpcStatus is unpacked, and the first Any whose
 * type_url is RPC_DETAIL_TYPE_URL_PREFIX + the wanted message's full name
 * is unpacked as that message.  Every buffer here is malloc'ed and freed
 * before returning; nothing is kept.
 */
#include "rpc-details.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "google/rpc/status.pb-c.h"

/* @detail's type URL into @buf (sized for any message name we define). */
static void type_url(const ProtobufCMessageDescriptor *d, char *buf, size_t size) {
        snprintf(buf, size, "%s%s", RPC_DETAIL_TYPE_URL_PREFIX, d->name);
}

/* A Status with @code, @message and @detail packed in @any (whose value
 * points to @value, of @value_len bytes, owned by the caller). */
static void status_build(Google__Rpc__Status *st, Google__Protobuf__Any *any, Google__Protobuf__Any **anys,
                         char *url, RpcCode code, const char *message, uint8_t *value, size_t value_len) {
        any->type_url = url;
        any->value.data = value;
        any->value.len = value_len;
        anys[0] = any;
        st->code = (int32_t) code;
        st->message = (char *) message;
        st->n_details = 1;
        st->details = anys;
}

size_t rpc_detail_status_size(const ProtobufCMessage *detail, size_t message_len) {
        Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
        Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, *anys[1];
        char url[256];
        _cleanup_free_ char *message = calloc(1, message_len + 1);

        if (!message)
                return SIZE_MAX;
        memset(message, 'x', message_len);
        type_url(detail->descriptor, url, sizeof(url));
        /* the value's bytes do not matter for the size, only their count */
        status_build(&st, &any, anys, url, RPC_FAILED_PRECONDITION, message, NULL,
                     protobuf_c_message_get_packed_size(detail));
        return google__rpc__status__get_packed_size(&st);
}

RpcCode rpc_call_fail_detail(RpcCall *c, RpcCode code, const ProtobufCMessage *detail, const char *fmt, ...) {
        Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
        Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, *anys[1];
        char message[ERR_MSG_MAX], url[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        size_t vlen = protobuf_c_message_get_packed_size(detail);
        _cleanup_free_ uint8_t *value = malloc(vlen ? vlen : 1);
        if (!value)
                return rpc_call_fail(c, code, "%s", message);
        protobuf_c_message_pack(detail, value);
        type_url(detail->descriptor, url, sizeof(url));
        status_build(&st, &any, anys, url, code, message, value, vlen);
        size_t len = google__rpc__status__get_packed_size(&st);
        _cleanup_free_ uint8_t *bin = malloc(len ? len : 1);
        if (!bin)
                return rpc_call_fail(c, code, "%s", message);
        google__rpc__status__pack(&st, bin);
        return rpc_call_fail_status_bin(c, code, message, bin, len);
}

int rpc_status_detail(const RpcStatus *st, const ProtobufCMessageDescriptor *d, ProtobufCMessage **ret) {
        char url[256];
        int r = -ENOENT;

        if (!st || st->details_len == 0)
                return -ENOENT;
        Google__Rpc__Status *s = google__rpc__status__unpack(NULL, st->details_len, st->details_bin);
        if (!s)
                return err_set(-EBADMSG, "malformed google.rpc.Status in %s", RPC_STATUS_DETAILS_KEY);
        type_url(d, url, sizeof(url));
        for (size_t i = 0; i < s->n_details && r == -ENOENT; i++) {
                const Google__Protobuf__Any *a = s->details[i];
                if (strcmp(a->type_url, url) != 0)
                        continue;
                ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, a->value.len, a->value.data);
                if (!m)
                        r = err_set(-EBADMSG, "malformed %s in the status details", d->name);
                else {
                        *ret = m;
                        r = 0;
                }
        }
        google__rpc__status__free_unpacked(s, NULL);
        return r;
}
