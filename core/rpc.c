/* What the gRPC server and client share (see rpc.h and rpc-priv.h).
 *
 * Both sides go through the same steps before their first byte, and each
 * step has one home here: take a reference on the library (the first one
 * routes gRPC's log into log.h and ignores SIGPIPE); classify the address
 * and apply the development-mode rule (plaintext only on loopback or unix
 * sockets, loudly); read the PEM files, then turn them into gRPC
 * credentials (a server requires and verifies client certificates); build
 * the channel arguments with the message size cap.  On the wire both sides
 * pack messages into one slice and unpack received buffers through
 * rpc_unpack(), which refuses a NUL byte inside any string (protobuf-c
 * would hand it over cut); the server also checks every received string
 * for UTF-8 (text.c's decoder), which protobuf-c leaves to us.  Statuses
 * map to and from errno through the two tables below, and nowhere else.
 * A server call's caller is established here too (rpc_identity_from_auth):
 * the certificate's common name and the roles of its role URIs (rpc.h,
 * "Authorization").
 *
 * Nothing here keeps state besides the library's once-only setup, so every
 * function is safe on any thread.
 */
#include "rpc-priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/log.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "text.h"

_Static_assert(RPC_UNAUTHENTICATED == (int) GRPC_STATUS_UNAUTHENTICATED, "RpcCode mirrors grpc");
_Static_assert(RPC_UNIMPLEMENTED == (int) GRPC_STATUS_UNIMPLEMENTED, "RpcCode mirrors grpc");
_Static_assert(RPC_UNAVAILABLE == (int) GRPC_STATUS_UNAVAILABLE, "RpcCode mirrors grpc");

#define PEM_MAX (1024 * 1024)

/* ---- Library lifetime and log routing --------------------------------- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void gpr_log_route(gpr_log_func_args *a) {
        LogLevel level = a->severity == GPR_LOG_SEVERITY_ERROR ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG;
        log_msg(level, a->file ? a->file : "grpc", a->line, "grpc: %s", a->message);
}

static void lib_init_once(void) {
        struct sigaction sa;

        gpr_set_log_function(gpr_log_route);
        if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
                signal(SIGPIPE, SIG_IGN);
}

void rpc_lib_ref(void) {
        sigset_t pipe_set, old;

        pthread_once(&lib_once, lib_init_once);
        /* Threads gRPC starts here inherit a mask with SIGPIPE blocked. */
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
        grpc_init();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void rpc_lib_unref(void) {
        grpc_shutdown();
}

/* ---- Status codes and errno ------------------------------------------- */

static const char *const code_names[RPC_CODE_MAX] = {
        [RPC_OK] = "OK",
        [RPC_CANCELLED] = "CANCELLED",
        [RPC_UNKNOWN] = "UNKNOWN",
        [RPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
        [RPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
        [RPC_NOT_FOUND] = "NOT_FOUND",
        [RPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
        [RPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
        [RPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
        [RPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
        [RPC_ABORTED] = "ABORTED",
        [RPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [RPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
        [RPC_INTERNAL] = "INTERNAL",
        [RPC_UNAVAILABLE] = "UNAVAILABLE",
        [RPC_DATA_LOSS] = "DATA_LOSS",
        [RPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *rpc_code_to_string(RpcCode code) {
        return (int) code >= 0 && code < RPC_CODE_MAX ? code_names[code] : "?";
}

int rpc_code_from_string(const char *s) {
        for (int i = 0; i < RPC_CODE_MAX; i++)
                if (s && strcasecmp(s, code_names[i]) == 0)
                        return i;
        return -EINVAL;
}

RpcCode rpc_code_from_grpc(grpc_status_code code) {
        return (int) code >= 0 && (int) code < RPC_CODE_MAX ? (RpcCode) code : RPC_UNKNOWN;
}

RpcCode rpc_status_from_errno(int negerrno) {
        switch (negerrno < 0 ? -negerrno : negerrno) {
        case 0:
                return RPC_OK;
        case ENOENT: case ESRCH: case ENODEV: case ENXIO:
                return RPC_NOT_FOUND;
        case EEXIST: case EALREADY:
                return RPC_ALREADY_EXISTS;
        case EINVAL: case EBADMSG: case EDOM: case E2BIG: case ENAMETOOLONG: case ENOTDIR:
        case EISDIR:
                return RPC_INVALID_ARGUMENT;
        case ETIMEDOUT: case ETIME:
                return RPC_DEADLINE_EXCEEDED;
        case EPERM: case EACCES: case EROFS:
                return RPC_PERMISSION_DENIED;
        case ENOSPC: case ENOMEM: case ENOBUFS: case EMSGSIZE: case EMFILE: case ENFILE:
        case EDQUOT: case EUSERS:
                return RPC_RESOURCE_EXHAUSTED;
        case EBUSY: case ENOTEMPTY: case ENOTCONN: case EISCONN: case ETXTBSY: case ESHUTDOWN:
                return RPC_FAILED_PRECONDITION;
        case EAGAIN: case ECONNREFUSED: case ECONNRESET: case ECONNABORTED: case EHOSTUNREACH:
        case EHOSTDOWN: case ENETUNREACH: case ENETDOWN: case EPIPE: case EINTR:
                return RPC_UNAVAILABLE;
        case EDEADLK: case ESTALE:
                return RPC_ABORTED;
        case ERANGE: case EOVERFLOW: case EFBIG:
                return RPC_OUT_OF_RANGE;
        case EOPNOTSUPP: case ENOSYS: case EAFNOSUPPORT: case EPROTONOSUPPORT:
                return RPC_UNIMPLEMENTED;
        case ECANCELED:
                return RPC_CANCELLED;
        case EKEYREJECTED: case EKEYEXPIRED: case ENOKEY:
                return RPC_UNAUTHENTICATED;
        default:
                return RPC_INTERNAL;
        }
}

int rpc_errno_from_status(RpcCode code) {
        switch (code) {
        case RPC_OK: return 0;
        case RPC_CANCELLED: return -ECANCELED;
        case RPC_INVALID_ARGUMENT: return -EINVAL;
        case RPC_DEADLINE_EXCEEDED: return -ETIMEDOUT;
        case RPC_NOT_FOUND: return -ENOENT;
        case RPC_ALREADY_EXISTS: return -EEXIST;
        case RPC_PERMISSION_DENIED: return -EPERM;
        case RPC_RESOURCE_EXHAUSTED: return -ENOBUFS;
        case RPC_FAILED_PRECONDITION: return -EBUSY;
        case RPC_ABORTED: return -EDEADLK;
        case RPC_OUT_OF_RANGE: return -ERANGE;
        case RPC_UNIMPLEMENTED: return -EOPNOTSUPP;
        case RPC_UNAVAILABLE: return -EAGAIN;
        case RPC_DATA_LOSS: return -EBADMSG;
        case RPC_UNAUTHENTICATED: return -EKEYREJECTED;
        case RPC_UNKNOWN: case RPC_INTERNAL: default: return -EREMOTEIO;
        }
}

/* ---- Addresses -------------------------------------------------------- */

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

void rpc_copy_span(char *dst, size_t size, const char *src, size_t len) {
        if (!dst || size == 0)
                return;
        if (len >= size)
                len = size - 1;
        memcpy(dst, src, len);
        dst[len] = '\0';
}

static RpcAddrKind classify_host(const char *host) {
        struct in_addr a4;
        struct in6_addr a6;

        if (strcasecmp(host, "localhost") == 0)
                return RPC_ADDR_LOOPBACK;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127 ? RPC_ADDR_LOOPBACK : RPC_ADDR_REMOTE;
        if (inet_pton(AF_INET6, host, &a6) == 1) {
                if (IN6_IS_ADDR_LOOPBACK(&a6))
                        return RPC_ADDR_LOOPBACK;
                if (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127)
                        return RPC_ADDR_LOOPBACK;
        }
        return RPC_ADDR_REMOTE; /* other IPs, wildcards, names */
}

int rpc_addr_parse(const char *addr, RpcAddrKind *ret_kind, char *path, size_t path_size,
                   char *host, size_t host_size, char *port, size_t port_size) {
        const size_t sun_max = sizeof(((struct sockaddr_un *) NULL)->sun_path);
        const char *s, *h, *p = "";
        size_t hlen;
        char hbuf[256];

        if (!addr || !*addr)
                return err_set(-EINVAL, "empty address");
        if (startswith(addr, "unix-abstract:") || startswith(addr, "unix:")) {
                bool abstract = startswith(addr, "unix-abstract:");
                s = addr + (abstract ? strlen("unix-abstract:") : strlen("unix:"));
                if (!abstract && startswith(s, "//"))
                        s += 2; /* unix:///abs/path */
                if (!*s || strlen(s) + (abstract ? 1 : 0) >= sun_max)
                        return err_set(-EINVAL, "bad unix socket address '%s' (empty or longer than %zu)",
                                       addr, sun_max - 1);
                rpc_copy_span(path, path_size, s, strlen(s));
                *ret_kind = abstract ? RPC_ADDR_UNIX_ABSTRACT : RPC_ADDR_UNIX;
                return 0;
        }
        s = addr;
        if (startswith(s, "dns:")) {
                s += 4;
                if (startswith(s, "//")) { /* dns://authority/host:port */
                        s = strchr(s + 2, '/');
                        if (!s)
                                return err_set(-EINVAL, "bad address '%s'", addr);
                        s++;
                }
        } else if (startswith(s, "ipv4:") || startswith(s, "ipv6:"))
                s += 5;
        if (strchr(s, ',') || strchr(s, '/')) { /* address lists, other schemes */
                *ret_kind = RPC_ADDR_REMOTE;
                rpc_copy_span(host, host_size, s, strlen(s));
                rpc_copy_span(port, port_size, "", 0);
                return 0;
        }
        if (*s == '[') {
                const char *end = strchr(s, ']');
                if (!end)
                        return err_set(-EINVAL, "bad address '%s': missing ']'", addr);
                h = s + 1;
                hlen = (size_t) (end - h);
                if (end[1] == ':')
                        p = end + 2;
                else if (end[1])
                        return err_set(-EINVAL, "bad address '%s'", addr);
        } else {
                const char *colon = strrchr(s, ':');
                h = s;
                hlen = colon ? (size_t) (colon - s) : strlen(s);
                if (colon)
                        p = colon + 1;
        }
        rpc_copy_span(hbuf, sizeof(hbuf), h, hlen);
        rpc_copy_span(host, host_size, h, hlen);
        rpc_copy_span(port, port_size, p, strlen(p));
        *ret_kind = classify_host(hbuf);
        return 0;
}

bool rpc_addr_is_local(const char *addr) {
        RpcAddrKind kind;
        if (rpc_addr_parse(addr, &kind, NULL, 0, NULL, 0, NULL, 0) < 0)
                return false;
        return kind != RPC_ADDR_REMOTE;
}

/* Whether a development-mode client to @addr was already warned about in
 * this process (remembers the last 32 targets; a forgotten one is warned
 * about again).  Marks it.  Any thread. */
static bool client_target_said(const char *addr) {
        static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        static uint64_t seen[32];
        static size_t next;
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (const char *p = addr; *p; p++)
                h = (h ^ (unsigned char) *p) * 1099511628211ULL;
        bool said = false;
        pthread_mutex_lock(&mu);
        for (size_t i = 0; i < 32 && !said; i++)
                said = seen[i] == h;
        if (!said)
                seen[next++ % 32] = h;
        pthread_mutex_unlock(&mu);
        return said;
}

/* Dev-mode gate: 0 (with a log_warning) when @addr is local, else -EPERM
 * with a detail naming @what ("listener", "client"). */
static int dev_mode_check(const char *addr, const char *what) {
        if (!rpc_addr_is_local(addr))
                return err_set(-EPERM,
                               "refusing a plaintext gRPC %s on '%s': development mode (no TLS) is "
                               "allowed only on loopback or unix socket addresses; configure TLS "
                               "certificates",
                               what, addr ? addr : "");
        /* a listener is said each time; a client once per target (a
         * client that reconnects, e.g. to etcd, makes new ones often) */
        bool listener = strcmp(what, "listener") == 0;
        if (listener || !client_target_said(addr))
                log_warning("DEVELOPMENT MODE: plaintext gRPC %s on %s, without TLS or client "
                            "certificates%s; never use this across hosts",
                            what, addr, listener ? " (every caller has every role)" : "");
        else
                log_debug("plaintext gRPC %s on %s (development mode)", what, addr);
        return 0;
}

/* ---- TLS files and credentials ---------------------------------------- */

static int read_pem(const char *what, const char *file, char **ret) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        struct stat st;

        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return err_set(-errno, "cannot read TLS %s '%s': %s", what, file, strerror(errno));
        if (st.st_size <= 0 || st.st_size > PEM_MAX)
                return err_set(-EINVAL, "TLS %s '%s': size %lld outside 1..%d bytes", what, file,
                               (long long) st.st_size, PEM_MAX);
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return err_set(-ENOMEM, "TLS %s '%s': out of memory", what, file);
        while (len < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t) st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return err_set(-errno, "cannot read TLS %s '%s': %s", what, file, strerror(errno));
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';
        if (!strstr(buf, "-----BEGIN "))
                return err_set(-EINVAL, "TLS %s '%s' is not PEM", what, file);
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Load the files named by @tls; @server demands all three, a client demands
 * the CA and cert/key both or neither.  0 or -errno with a detail. */
static int pem_load(const RpcTls *tls, bool server, RpcPem *ret) {
        RpcPem pem = { 0 };
        int r;

        if (!tls->ca_file || (server && (!tls->cert_file || !tls->key_file)))
                return err_set(-EINVAL, "TLS needs %s", server ? "a certificate, a key and the client CA" : "the CA");
        if (!tls->cert_file != !tls->key_file)
                return err_set(-EINVAL, "TLS client certificate and key go together");
        r = read_pem("CA", tls->ca_file, &pem.ca);
        if (r >= 0 && tls->cert_file)
                r = read_pem("certificate", tls->cert_file, &pem.cert);
        if (r >= 0 && tls->key_file)
                r = read_pem("key", tls->key_file, &pem.key);
        if (r < 0) {
                rpc_pem_clear(&pem);
                return r;
        }
        *ret = pem;
        return 0;
}

void rpc_pem_clear(RpcPem *pem) {
        free(pem->cert);
        if (pem->key) {
                explicit_bzero(pem->key, strlen(pem->key));
                free(pem->key);
        }
        free(pem->ca);
        *pem = (RpcPem){ 0 };
}

int rpc_pem_prepare(const RpcTls *tls, bool server, const char *addr, RpcPem *ret) {
        int r;

        if (!tls) {
                *ret = (RpcPem){ 0 };
                return dev_mode_check(addr, server ? "listener" : "client");
        }
        r = pem_load(tls, server, ret);
        if (r < 0)
                return err_prefix(r, server ? "listen on %s" : "client for %s", addr);
        return 0;
}

grpc_server_credentials *rpc_server_creds(const RpcPem *pem) {
        if (!pem->ca)
                return grpc_insecure_server_credentials_create();
        grpc_ssl_pem_key_cert_pair pair = { .private_key = pem->key, .cert_chain = pem->cert };
        return grpc_ssl_server_credentials_create_ex(
                pem->ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
}

grpc_channel_credentials *rpc_channel_creds(const RpcPem *pem) {
        if (!pem->ca)
                return grpc_insecure_credentials_create();
        grpc_ssl_pem_key_cert_pair pair = { .private_key = pem->key, .cert_chain = pem->cert };
        return grpc_ssl_credentials_create(pem->ca, pem->cert ? &pair : NULL, NULL, NULL);
}

/* ---- Roles and caller identity ---------------------------------------- */

static const char *const role_names[RPC_ROLE_MAX] = {
        [RPC_ROLE_AGENT] = "agent",
        [RPC_ROLE_COORDINATOR] = "coordinator",
        [RPC_ROLE_OPERATOR] = "operator",
        [RPC_ROLE_READER] = "reader",
};

const char *rpc_role_to_string(RpcRole role) {
        return (int) role >= 0 && role < RPC_ROLE_MAX ? role_names[role] : "?";
}

int rpc_role_from_string(const char *s) {
        for (int i = 0; i < RPC_ROLE_MAX; i++)
                if (s && strcmp(s, role_names[i]) == 0)
                        return i;
        return -EINVAL;
}

char *rpc_roles_format(RpcRoles roles, const char *sep, char *buf, size_t size) {
        size_t len = 0;

        if (size == 0)
                return buf;
        buf[0] = '\0';
        for (int i = 0; i < RPC_ROLE_MAX; i++)
                if (roles & (1u << i)) {
                        int n = snprintf(buf + len, size - len, "%s%s", len ? sep : "", role_names[i]);
                        if (n < 0 || (size_t) n >= size - len) {
                                buf[len] = '\0'; /* whole names only */
                                return buf;
                        }
                        len += (size_t) n;
                }
        if (len == 0)
                snprintf(buf, size, "none");
        return buf;
}

char *rpc_identity_format(const RpcIdentity *id, char *buf, size_t size) {
        char roles[64];

        if (id->dev_mode)
                snprintf(buf, size, "dev-mode");
        else
                snprintf(buf, size, "%s:%s", rpc_roles_format(id->roles, "+", roles, sizeof(roles)), id->name);
        return buf;
}

/* A certificate name for logs and histories: printable ASCII only. */
static void identity_name(RpcIdentity *id, const grpc_auth_property *p) {
        rpc_copy_span(id->name, sizeof(id->name), p->value, p->value_length);
        for (char *c = id->name; *c; c++)
                if (*c < 0x20 || *c > 0x7e)
                        *c = '?';
}

static bool property_is(const grpc_auth_property *p, const char *value) {
        return p->value && p->value_length == strlen(value) && memcmp(p->value, value, p->value_length) == 0;
}

void rpc_identity_from_auth(const grpc_auth_context *ctx, bool plaintext_server, RpcIdentity *ret) {
        const size_t plen = strlen(RPC_ROLE_URI_PREFIX);
        const grpc_auth_property *p;
        grpc_auth_property_iterator it;
        bool tls = false;

        *ret = (RpcIdentity){ 0 };
        if (ctx) {
                it = grpc_auth_context_find_properties_by_name(ctx, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
                p = grpc_auth_property_iterator_next(&it);
                tls = p && (property_is(p, GRPC_SSL_TRANSPORT_SECURITY_TYPE) ||
                            property_is(p, GRPC_TLS_TRANSPORT_SECURITY_TYPE));
        }
        if (!tls || !grpc_auth_context_peer_is_authenticated(ctx)) {
                ret->dev_mode = !tls && plaintext_server;
                ret->roles = ret->dev_mode ? RPC_ROLES_ALL : 0;
                snprintf(ret->name, sizeof(ret->name), "%s", ret->dev_mode ? "dev-mode" : "unauthenticated");
                return;
        }
        it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
        if ((p = grpc_auth_property_iterator_next(&it)) && p->value_length > 0)
                identity_name(ret, p);
        else {
                it = grpc_auth_context_peer_identity(ctx); /* the subject alternative names */
                if ((p = grpc_auth_property_iterator_next(&it)))
                        identity_name(ret, p);
                else
                        snprintf(ret->name, sizeof(ret->name), "?");
        }
        it = grpc_auth_context_find_properties_by_name(ctx, GRPC_PEER_URI_PROPERTY_NAME);
        while ((p = grpc_auth_property_iterator_next(&it))) {
                char role[32];
                if (!p->value || p->value_length <= plen || memcmp(p->value, RPC_ROLE_URI_PREFIX, plen) != 0)
                        continue;
                rpc_copy_span(role, sizeof(role), p->value + plen, p->value_length - plen);
                int r = p->value_length - plen < sizeof(role) ? rpc_role_from_string(role) : -EINVAL;
                if (r >= 0)
                        ret->roles |= 1u << r;
                else
                        ret->unknown_roles++;
        }
}

/* ---- Channel arguments ------------------------------------------------ */

size_t rpc_message_cap(size_t configured) {
        if (configured == 0)
                return RPC_DEFAULT_MAX_MESSAGE;
        return configured > INT32_MAX ? INT32_MAX : configured;
}

static grpc_arg arg_int(const char *key, int value) {
        return (grpc_arg){ .type = GRPC_ARG_INTEGER, .key = (char *) key, .value.integer = value };
}

const grpc_channel_args *rpc_args_server(RpcArgs *a, size_t max_receive) {
        a->args[0] = arg_int(GRPC_ARG_ALLOW_REUSEPORT, 0);
        a->args[1] = arg_int(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int) rpc_message_cap(max_receive));
        a->chargs = (grpc_channel_args){ .num_args = 2, .args = a->args };
        return &a->chargs;
}

const grpc_channel_args *rpc_args_client(RpcArgs *a, size_t max_receive, const char *server_name) {
        a->args[0] = arg_int(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int) rpc_message_cap(max_receive));
        a->args[1] = (grpc_arg){ .type = GRPC_ARG_STRING, .key = (char *) GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                 .value.string = (char *) server_name };
        a->chargs = (grpc_channel_args){ .num_args = server_name ? 2 : 1, .args = a->args };
        return &a->chargs;
}

/* ---- Deadlines, slices, messages -------------------------------------- */

gpr_timespec rpc_deadline_ms(int64_t ms) {
        if (ms < 0)
                return gpr_inf_future(GPR_CLOCK_MONOTONIC);
        return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

void rpc_slice_str(grpc_slice s, char *buf, size_t size) {
        rpc_copy_span(buf, size, (const char *) GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *m) {
        size_t n = protobuf_c_message_get_packed_size(m);
        grpc_slice s = grpc_slice_malloc(n);
        protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        return bb;
}

int rpc_bb_flatten(grpc_byte_buffer *bb, grpc_slice *ret) {
        grpc_byte_buffer_reader reader;

        if (!grpc_byte_buffer_reader_init(&reader, bb))
                return err_set(-EBADMSG, "cannot read a message (unknown compression)");
        *ret = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        return 0;
}

/* A varint at @p[0..@end): its value, and @p moved past it; false when cut. */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret) {
        uint64_t v = 0;
        for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
                uint8_t b = *(*p)++;
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return true;
                }
        }
        return false;
}

/* Refuse a NUL byte in any string field of the encoded message @buf of
 * type @d.  protobuf-c hands strings over NUL-terminated, so an embedded
 * NUL would silently cut one (a guest definition, for one).  The bytes
 * unpacked already, so they are well formed; a malformed tail is left to
 * the unpacker's verdict. */
static int wire_check_nul(const uint8_t *p, size_t len, const ProtobufCMessageDescriptor *d, int depth) {
        const uint8_t *end = p + len;
        uint64_t key, n;

        if (depth > 64)
                return err_set(-EINVAL, "%s nested too deeply", d->name);
        while (p < end && wire_varint(&p, end, &key)) {
                const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned) (key >> 3));
                switch (key & 7) {
                case 0: if (!wire_varint(&p, end, &n)) return 0; break;
                case 1: p += MIN((size_t) (end - p), 8u); break;
                case 5: p += MIN((size_t) (end - p), 4u); break;
                case 2:
                        if (!wire_varint(&p, end, &n) || n > (uint64_t) (end - p))
                                return 0;
                        if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, '\0', n))
                                return err_set(-EINVAL, "%s.%s: contains a NUL byte", d->name, f->name);
                        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                                int r = wire_check_nul(p, n, f->descriptor, depth + 1);
                                if (r < 0)
                                        return r;
                        }
                        p += n;
                        break;
                default: return 0; /* groups: none in our protos */
                }
        }
        return 0;
}

int rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d, ProtobufCAllocator *alloc,
               ProtobufCMessage **ret) {
        grpc_slice bytes;
        int r;

        r = rpc_bb_flatten(bb, &bytes);
        if (r < 0)
                return r;
        ProtobufCMessage *m = protobuf_c_message_unpack(d, alloc, GRPC_SLICE_LENGTH(bytes), GRPC_SLICE_START_PTR(bytes));
        if (m && (r = wire_check_nul(GRPC_SLICE_START_PTR(bytes), GRPC_SLICE_LENGTH(bytes), d, 0)) < 0) {
                protobuf_c_message_free_unpacked(m, alloc);
                grpc_slice_unref(bytes);
                return r;
        }
        grpc_slice_unref(bytes);
        if (!m)
                return err_set(-EBADMSG, "malformed %s", d->name);
        *ret = m;
        return 0;
}

/* ---- UTF-8 ------------------------------------------------------------ */

static int check_strings(const ProtobufCMessage *m, int depth) {
        const ProtobufCMessageDescriptor *d = m->descriptor;

        if (depth > 64)
                return err_set(-EINVAL, "%s nested too deeply", d->name);
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                const char *base = (const char *) m;
                size_t count = 1;
                void *const *vals;

                if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
                        continue;
                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        count = *(const size_t *) (base + f->quantifier_offset);
                        vals = *(void *const *const *) (base + f->offset);
                } else {
                        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                            *(const uint32_t *) (base + f->quantifier_offset) != f->id)
                                continue;
                        vals = (void *const *) (base + f->offset);
                }
                for (size_t j = 0; j < count; j++) {
                        if (!vals[j])
                                continue;
                        if (f->type == PROTOBUF_C_TYPE_STRING) {
                                if (!text_utf8_valid(vals[j]))
                                        return err_set(-EINVAL, "%s.%s: invalid UTF-8", d->name, f->name);
                        } else {
                                int r = check_strings(vals[j], depth + 1);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        return 0;
}

int rpc_check_strings(const ProtobufCMessage *m) {
        return check_strings(m, 0);
}
