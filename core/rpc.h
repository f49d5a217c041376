/* The vocabulary the gRPC client and server share: status codes, the
 * errno <-> status mapping, the gRPC library's lifetime and TLS material.
 *
 * libdrover-rpc is three files: rpc.c (everything both sides need: library
 * lifetime and log routing, the status tables, address classification and
 * the development-mode rule, TLS files and credentials, channel arguments
 * and message size caps, protobuf packing and the UTF-8 check), rpcserver.c
 * and rpcclient.c.  They are the only code that calls grpc_* or
 * protobuf_c_*; callers see protobuf-c messages and our own RpcCode
 * (numerically equal to gRPC's status codes), never a gRPC header; this
 * header includes none.  rpc-priv.h is the internal interface of the three
 * files (and of tests).
 *
 * Errors map to a status once, at the RPC boundary: a handler's -errno
 * becomes a status through rpc_status_from_errno(), and a client turns the
 * status back into a -errno through rpc_errno_from_status().
 *
 * Transport security (ARCHITECTURE.md §7): TLS with client certificates (a
 * server requires and verifies them), or a plaintext development mode that
 * is accepted only on loopback TCP or unix socket addresses and logs a
 * warning.
 *
 * Authorization (docs/security.md, "Who can call what"): a client
 * certificate names its holder's roles in URI subject alternative names
 * `urn:drover:role:<role>` (one per role), and its common name is the
 * caller's name in logs and job histories.  Every method of a served
 * service declares the roles that may call it (RpcMethodDef.roles); the
 * server answers PERMISSION_DENIED before the handler runs when the
 * caller has none of them.  A plaintext (development-mode) caller has
 * every role: plaintext listeners exist only on local addresses, and a
 * server never mixes them with TLS listeners.
 *
 * The first RpcServer or RpcClient routes gRPC's own log lines into log.h
 * (gRPC errors at info, everything else at debug; GRPC_VERBOSITY still
 * filters at the source) and, if SIGPIPE is at its default disposition,
 * ignores it process-wide: a peer closing a socket must never kill a daemon.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* gRPC status codes, same numbers as grpc_status_code. */
typedef enum RpcCode {
        RPC_OK = 0,
        RPC_CANCELLED = 1,
        RPC_UNKNOWN = 2,
        RPC_INVALID_ARGUMENT = 3,
        RPC_DEADLINE_EXCEEDED = 4,
        RPC_NOT_FOUND = 5,
        RPC_ALREADY_EXISTS = 6,
        RPC_PERMISSION_DENIED = 7,
        RPC_RESOURCE_EXHAUSTED = 8,
        RPC_FAILED_PRECONDITION = 9,
        RPC_ABORTED = 10,
        RPC_OUT_OF_RANGE = 11,
        RPC_UNIMPLEMENTED = 12,
        RPC_INTERNAL = 13,
        RPC_UNAVAILABLE = 14,
        RPC_DATA_LOSS = 15,
        RPC_UNAUTHENTICATED = 16,
        RPC_CODE_MAX,
} RpcCode;

/* "NOT_FOUND" etc.; "?" for values out of range. */
const char *rpc_code_to_string(RpcCode code);
/* Parse "NOT_FOUND" (case-insensitive); -EINVAL when unknown. */
int rpc_code_from_string(const char *s);

/* The status a handler error becomes.  Grouping follows the gRPC code
 * definitions (and absl's errno table):
 *   0                                   OK
 *   ENOENT ESRCH ENODEV ENXIO           NOT_FOUND
 *   EEXIST EALREADY                     ALREADY_EXISTS
 *   EINVAL EBADMSG EDOM E2BIG ENAMETOOLONG ENOTDIR EISDIR   INVALID_ARGUMENT
 *   ETIMEDOUT ETIME                     DEADLINE_EXCEEDED
 *   EPERM EACCES EROFS                  PERMISSION_DENIED
 *   ENOSPC ENOMEM ENOBUFS EMSGSIZE EMFILE ENFILE EDQUOT EUSERS  RESOURCE_EXHAUSTED
 *   EBUSY ENOTEMPTY ENOTCONN EISCONN ETXTBSY ESHUTDOWN   FAILED_PRECONDITION
 *       (the resource is held or in the wrong state: a blind retry does not
 *       help; wait for the holder's job to end, or abort it)
 *   EAGAIN ECONNREFUSED ECONNRESET ECONNABORTED EHOSTUNREACH EHOSTDOWN
 *   ENETUNREACH ENETDOWN EPIPE EINTR    UNAVAILABLE (transient: retry with backoff)
 *   EDEADLK ESTALE                      ABORTED
 *   ERANGE EOVERFLOW EFBIG              OUT_OF_RANGE
 *   EOPNOTSUPP ENOSYS EAFNOSUPPORT EPROTONOSUPPORT   UNIMPLEMENTED
 *       (gRPC: "not implemented or not supported/enabled in this service";
 *       like an unknown method, retrying cannot help)
 *   ECANCELED                           CANCELLED
 *   EKEYREJECTED EKEYEXPIRED ENOKEY     UNAUTHENTICATED
 *   anything else (EIO, EPROTO, ...)    INTERNAL
 * A positive value is taken as its negative. */
RpcCode rpc_status_from_errno(int negerrno);

/* The -errno a client sees for a status (0 for OK).  The inverse of the
 * first errno of each group above, so errno -> status -> errno is the
 * identity for ENOENT, EEXIST, EINVAL, ETIMEDOUT, EPERM, EBUSY, EAGAIN,
 * EDEADLK, ERANGE, EOPNOTSUPP, ECANCELED; EACCES comes back as EPERM and
 * ENOSPC/ENOMEM as ENOBUFS.  The other codes: UNKNOWN and INTERNAL ->
 * -EREMOTEIO (the peer failed), DATA_LOSS -> -EBADMSG, UNAUTHENTICATED ->
 * -EKEYREJECTED, RESOURCE_EXHAUSTED -> -ENOBUFS. */
int rpc_errno_from_status(RpcCode code);

/* Take / drop a reference on the gRPC library (grpc_init/grpc_shutdown).
 * Every RpcServer and RpcClient holds one; a process that creates and frees
 * them repeatedly should hold one itself for its lifetime, so gRPC is not
 * torn down and restarted each time the last object goes (that costs
 * thread start-up, and after an aborted oversized request we measured the
 * restarted library's final grpc_shutdown stalling for ~10 s).  The first
 * reference routes gRPC's log into log.h and ignores SIGPIPE if it is at its
 * default.  The last unref must come after every server and client is freed. */
void rpc_lib_ref(void);
void rpc_lib_unref(void);

/* The largest message either side accepts unless configured otherwise;
 * a larger one fails with RESOURCE_EXHAUSTED. */
#define RPC_DEFAULT_MAX_MESSAGE (4u * 1024 * 1024)

/* The gRPC rich error model: a failing call may carry a serialized
 * google.rpc.Status (proto/google/rpc/status.proto) in the trailing
 * metadata under this key, with typed details (rpc-details.h in proto/
 * packs and reads them; this layer carries the bytes).  The server sends
 * at most RPC_STATUS_DETAILS_MAX bytes (base64 on the wire, it stays well
 * under gRPC's 8 KiB default limit on received metadata, beyond which the
 * client would fail the whole call), and the client keeps that many. */
#define RPC_STATUS_DETAILS_KEY "grpc-status-details-bin"
#define RPC_STATUS_DETAILS_MAX 4096u

/* TLS material: paths of PEM files.  A server requires all three and
 * demands a client certificate signed by @ca_file.  A client requires
 * @ca_file (the CA that signed the server's certificate) and presents
 * @cert_file/@key_file when both are set. */
typedef struct RpcTls {
        const char *cert_file;  /* certificate chain */
        const char *key_file;   /* private key */
        const char *ca_file;    /* CA bundle that verifies the peer */
        const char *server_name; /* client only: name expected in the server's
                                  * certificate when it differs from the
                                  * target's host; NULL = the host */
} RpcTls;

/* ---- Roles and caller identity ---------------------------------------- */

/* Who may call what (docs/security.md).  Persisted in certificates by
 * name (rpc_role_to_string), so the names never change. */
typedef enum RpcRole {
        RPC_ROLE_AGENT,       /* a peer agent: the migration phase RPCs */
        RPC_ROLE_COORDINATOR, /* the coordinator: guest lifecycle and migration control on agents */
        RPC_ROLE_OPERATOR,    /* a person or playbook: the Coordinator service, agentctl on agents */
        RPC_ROLE_READER,      /* monitoring: List*, Get*, Watch* on either service */
        RPC_ROLE_MAX,
} RpcRole;

/* A set of roles: bit (1u << RpcRole). */
typedef uint32_t RpcRoles;
#define RPC_ROLES_AGENT (1u << RPC_ROLE_AGENT)
#define RPC_ROLES_COORDINATOR (1u << RPC_ROLE_COORDINATOR)
#define RPC_ROLES_OPERATOR (1u << RPC_ROLE_OPERATOR)
#define RPC_ROLES_READER (1u << RPC_ROLE_READER)
#define RPC_ROLES_ALL ((1u << RPC_ROLE_MAX) - 1)

/* The URI subject alternative name that grants a role: the prefix and
 * the role's name, e.g. "urn:drover:role:operator". */
#define RPC_ROLE_URI_PREFIX "urn:drover:role:"

/* "agent", "coordinator", "operator", "reader"; "?" out of range. */
const char *rpc_role_to_string(RpcRole role);
/* The role named @s (exact, lowercase), or -EINVAL. */
int rpc_role_from_string(const char *s);
/* The names in @roles joined by @sep ("coordinator+operator" with "+";
 * "none" for the empty set) into @buf, as many whole names as fit in
 * @size.  Returns @buf. */
char *rpc_roles_format(RpcRoles roles, const char *sep, char *buf, size_t size);

#define RPC_IDENTITY_NAME_MAX 64

/* Who made a call, as the server established it before the handler ran. */
typedef struct RpcIdentity {
        char name[RPC_IDENTITY_NAME_MAX]; /* the certificate's common name (else its first
                                           * DNS/IP name), printable ASCII only (others
                                           * become '?'); "dev-mode" on plaintext */
        RpcRoles roles;                   /* from its role URIs; every role on plaintext */
        unsigned unknown_roles;           /* role URIs naming no role we know (ignored) */
        bool dev_mode;                    /* plaintext development mode: no certificate */
} RpcIdentity;

/* @id for humans, "operator:alice" (roles joined by '+', "none" without
 * any; "dev-mode" for a plaintext caller), into @buf.  Returns @buf. */
char *rpc_identity_format(const RpcIdentity *id, char *buf, size_t size);
