/* Internals shared by rpcserver.c and rpcclient.c, exported for tests.
 *
 * The address classification behind the development-mode rule, TLS
 * file loading and deadline conversion.  Only these two files and tests
 * include this header: it pulls in the gRPC headers.
 */
#pragma once

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdbool.h>

#include "rpcserver.h"

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

/* Dev-mode gate: 0 (with a log_warning) when @addr is local, else -EPERM
 * with a detail naming @what ("listener", "client"). */
int rpc_dev_mode_check(const char *addr, const char *what);

/* PEM files read into memory (NUL-terminated, freed with rpc_pem_clear()). */
typedef struct RpcPem {
        char *cert;
        char *key;
        char *ca;
} RpcPem;
/* Load the files named by @tls; @server demands all three, a client demands
 * the CA and cert/key both or neither.  0 or -errno with a detail. */
int rpc_pem_load(const RpcTls *tls, bool server, RpcPem *ret);
void rpc_pem_clear(RpcPem *pem);

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
