/* The internal interface of libdrover-rpc: what rpc.c provides to
 * rpcserver.c and rpcclient.c, exported for tests too.
 *
 * Address classification behind the development-mode rule, TLS files and
 * credentials, channel arguments and size caps, deadline conversion,
 * protobuf packing/unpacking and the UTF-8 check of received strings.
 * Only the rpc*.c and rpcserver*.c files and tests include this header: it pulls in
 * the gRPC and protobuf-c headers.
 */
#pragma once

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "rpc.h"

/* ---- Addresses ------------------------------------------------------- */

typedef enum RpcAddrKind {
        RPC_ADDR_UNIX,          /* unix:path, unix:///path */
        RPC_ADDR_UNIX_ABSTRACT, /* unix-abstract:name */
        RPC_ADDR_LOOPBACK,      /* 127.0.0.0/8, ::1, localhost */
        RPC_ADDR_REMOTE,        /* anything else: other IPs, host names, wildcards */
} RpcAddrKind;

/* Classify a server address or client target.  For unix kinds, copies the
 * path (or abstract name) into @path when not NULL.  For TCP kinds, copies
 * host and port into @host/@port when not NULL (host "" = all interfaces).
 * Returns 0 or -EINVAL (empty, or a path that does not fit sun_path). */
int rpc_addr_parse(const char *addr, RpcAddrKind *ret_kind, char *path, size_t path_size,
                   char *host, size_t host_size, char *port, size_t port_size);
/* True for unix and loopback addresses: where plaintext is allowed. */
bool rpc_addr_is_local(const char *addr);

/* The first @len bytes of @src as a NUL-terminated string in @dst
 * (truncated to @size - 1; nothing when @dst is NULL or @size 0). */
void rpc_copy_span(char *dst, size_t size, const char *src, size_t len);

/* ---- Security -------------------------------------------------------- */

/* PEM files read into memory (NUL-terminated, freed with rpc_pem_clear()).
 * All NULL: plaintext (development mode). */
typedef struct RpcPem {
        char *cert;
        char *key;
        char *ca;
} RpcPem;

/* The security of a listener (@server) or a client on @addr.  With @tls,
 * load its files: a server demands all three, a client the CA and
 * cert/key both or neither (error details prefixed "listen on ADDR" or
 * "client for ADDR").  With @tls NULL, apply the development-mode rule:
 * a plaintext @addr must be local (else -EPERM), and is logged as a
 * warning; *ret is then all NULL.  Makes no gRPC call.  Returns 0 or
 * -errno with a detail; on success the caller clears *ret. */
int rpc_pem_prepare(const RpcTls *tls, bool server, const char *addr, RpcPem *ret);
void rpc_pem_clear(RpcPem *pem);

/* gRPC credentials from a prepared @pem (insecure when it is all NULL).  A
 * server requires and verifies a client certificate; a client presents its
 * certificate when it has one.  The library must be referenced; the caller
 * releases the result.  NULL if gRPC refuses. */
grpc_server_credentials *rpc_server_creds(const RpcPem *pem);
grpc_channel_credentials *rpc_channel_creds(const RpcPem *pem);

/* The caller behind a server call's auth context (@ctx NULL: none).  A
 * TLS call ("transport_security_type" ssl or tls, peer authenticated) is
 * named by its certificate's common name and holds the roles of its
 * "peer_uri" properties that start with RPC_ROLE_URI_PREFIX; gRPC lists
 * only URI-type subject alternative names there, so a DNS name that looks
 * like a role URI grants nothing.  A call without TLS is the development
 * mode's when @plaintext_server (the server has only plaintext, local
 * listeners): every role, name "dev-mode"; otherwise no role, name
 * "unauthenticated".  Any thread. */
void rpc_identity_from_auth(const grpc_auth_context *ctx, bool plaintext_server, RpcIdentity *ret);

/* ---- Channel arguments and size caps --------------------------------- */

/* A configured message cap: 0 means RPC_DEFAULT_MAX_MESSAGE, and gRPC takes
 * at most INT32_MAX. */
size_t rpc_message_cap(size_t configured);

/* Channel arguments, built in place (the struct must not move while
 * gRPC reads them; it copies them at create time). */
typedef struct RpcArgs {
        grpc_arg args[2];
        grpc_channel_args chargs;
} RpcArgs;
/* A server's: no SO_REUSEPORT (a second server on our port must fail, not
 * share it), and requests capped at @max_receive bytes. */
const grpc_channel_args *rpc_args_server(RpcArgs *a, size_t max_receive);
/* A client's: replies capped at @max_receive bytes, and the name expected in
 * the server's certificate when @server_name is not NULL. */
const grpc_channel_args *rpc_args_client(RpcArgs *a, size_t max_receive, const char *server_name);

/* ---- Deadlines, slices, messages ------------------------------------- */

/* A gRPC monotonic deadline @ms from now (ms < 0: infinite). */
gpr_timespec rpc_deadline_ms(int64_t ms);

/* The status code of @code as our enum (out-of-range -> UNKNOWN). */
RpcCode rpc_code_from_grpc(grpc_status_code code);

/* A grpc slice as a NUL-terminated string in @buf (truncated). */
void rpc_slice_str(grpc_slice s, char *buf, size_t size);

/* Serialise @m into a new byte buffer (the caller destroys it). */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *m);
/* Flatten a received buffer into one slice (the caller unrefs it).
 * 0 or -EBADMSG. */
int rpc_bb_flatten(grpc_byte_buffer *bb, grpc_slice *ret);
/* Parse a received buffer as a @d, with @alloc (NULL: malloc; the caller
 * frees the result with protobuf_c_message_free_unpacked).  Returns 0 and
 * *ret, or -EBADMSG with a detail ("malformed NAME", or a compression
 * gRPC could not undo), or -EINVAL "NAME.field: contains a NUL byte" (a
 * string protobuf-c would silently cut). */
int rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d, ProtobufCAllocator *alloc,
               ProtobufCMessage **ret);

/* Check every string field of @m (recursively) for UTF-8, which proto3
 * demands and protobuf-c does not check (other languages' clients would
 * fail to read such a string back).  0, or -EINVAL naming the field. */
int rpc_check_strings(const ProtobufCMessage *m);
