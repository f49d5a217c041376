/* drover-agent configuration (see agent-config.h).
 *
 * One table describes every member: its JSON name (tls.cert for the nested
 * ones), its type, where it lives in AgentConfig and, for integers, its
 * bounds.  The JSON reader and agent_config_set() both go through the table,
 * so a member is checked the same way from the file and from the command
 * line: reading checks types, sizes and integer bounds; everything that
 * depends on the other members or on the host (absolute paths, the QEMU
 * binary, TLS files, listen addresses, dev_mode) is agent_config_validate()'s
 * job, run once all overrides are in (agent_config_load() does not validate,
 * or an override could never repair the file).
 *
 * Listen addresses take three forms: unix:/abs/path, HOST:PORT (an IPv4
 * literal or a DNS name) and [IPV6]:PORT.  dev_mode (plaintext gRPC) is
 * refused unless every address is a unix socket, an address in 127.0.0.0/8,
 * ::1 (or ::ffff:127.x.y.z), or the name "localhost".  Other names are never
 * taken as loopback, whatever they resolve to.
 *
 * run_dir is bounded so that every guest's QMP/QGA socket
 * (<run_dir>/<name>.qmp, names up to 63 bytes) fits a unix socket address.
 */
#define _GNU_SOURCE
#include "agent-config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent-def.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "recovery.h"
#include "vm.h"

#define CONFIG_MAX_BYTES (64u * 1024)
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *) 0)->sun_path) - 1)
/* <run_dir>/<name>.qmp must fit SUN_PATH_MAX with the longest name. */
#define RUN_DIR_MAX (SUN_PATH_MAX - 1 - (VM_NAME_MAX - 1) - 4)

typedef enum MemberType {
        MEMBER_STRING,
        MEMBER_BOOL,
        MEMBER_I64,
        MEMBER_UNSIGNED,
        MEMBER_SIZE,
        MEMBER_LIST,
} MemberType;

typedef struct Member {
        const char *name;
        MemberType type;
        size_t offset;
        size_t size;  /* strings: the array's size; lists: one entry's */
        int64_t min, max; /* lists: max = the most entries */
        size_t count_offset; /* lists: where the number of entries lives */
} Member;

#define STR(n, f) { n, MEMBER_STRING, offsetof(AgentConfig, f), sizeof(((AgentConfig *) 0)->f), 0, 0, 0 }
#define INT(n, t, f, lo, hi) { n, t, offsetof(AgentConfig, f), 0, lo, hi, 0 }
#define LIST(n, f, cnt, most) \
        { n, MEMBER_LIST, offsetof(AgentConfig, f), sizeof(((AgentConfig *) 0)->f[0]), 0, most, offsetof(AgentConfig, cnt) }
#define BOOL(n, f) { n, MEMBER_BOOL, offsetof(AgentConfig, f), 0, 0, 0, 0 }

static const Member members[] = {
        STR("host", host),
        STR("state_dir", state_dir),
        STR("run_dir", run_dir),
        LIST("listen", listen, n_listen, AGENT_MAX_LISTEN),
        STR("qemu_binary", qemu_binary),
        STR("accel", accel),
        STR("tls.cert", tls_cert),
        STR("tls.key", tls_key),
        STR("tls.ca", tls_ca),
        { "dev_mode", MEMBER_BOOL, offsetof(AgentConfig, dev_mode), 0, 0, 0 },
        INT("job_timeout_ms", MEMBER_I64, job_timeout_ms, 1, 3600000),
        INT("qmp_timeout_ms", MEMBER_I64, qmp_timeout_ms, 1, 3600000),
        INT("qga_timeout_ms", MEMBER_I64, qga_timeout_ms, 1, 3600000),
        INT("start_timeout_ms", MEMBER_I64, start_timeout_ms, 1, 3600000),
        INT("finish_ask_ms", MEMBER_I64, finish_ask_ms, 1, 3600000),
        INT("postcopy_recover_ms", MEMBER_I64, postcopy_recover_ms, 1000, 86400000),
        INT("max_guests", MEMBER_UNSIGNED, max_guests, 1, 65536),
        INT("rpc_lanes.queries", MEMBER_UNSIGNED, lane_queries, 1, 256),
        INT("rpc_lanes.peer", MEMBER_UNSIGNED, lane_peer, 1, 256),
        INT("rpc_lanes.migrate", MEMBER_UNSIGNED, lane_migrate, 1, 256),
        INT("rpc_lanes.control", MEMBER_UNSIGNED, lane_control, 1, 256),
        INT("rpc_lanes.streams", MEMBER_UNSIGNED, lane_streams, 1, 256),
        /* the old single pool, replaced by rpc_lanes: accepted, ignored, warned about */
        INT("rpc_threads", MEMBER_UNSIGNED, rpc_threads, 0, 256),
        /* a definition (64 KiB) must fit, with room for the envelope */
        INT("max_request_bytes", MEMBER_SIZE, max_request_bytes, 128 * 1024, 64 * 1024 * 1024),
        STR("log_level", log_level),
        LIST("image_roots", image_roots, n_image_roots, AGENT_MAX_IMAGE_ROOTS),
        BOOL("allow_block_devices", allow_block_devices),
        STR("qemu_user", qemu_user),
        STR("qemu_chroot", qemu_chroot),
        STR("migration_address", migration_address),
        STR("migration_ports", migration_ports),
        STR("metrics_listen", metrics_listen),
        STR("migration_transport", migration_transport),
        STR("ssh.user", ssh_user),
        INT("ssh.port", MEMBER_UNSIGNED, ssh_port, 1, 65535),
        STR("ssh.identity", ssh_identity),
        STR("ssh.known_hosts", ssh_known_hosts),
        LIST("migration_peers", migration_peers, n_migration_peers, AGENT_MAX_MIG_PEERS),
};

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static const Member *member_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(members); i++)
                if (streq(members[i].name, name))
                        return &members[i];
        return NULL;
}

/* "'<name>' <detail>", -EINVAL; the public functions add the prefix. */
static int bad(const char *name, const char *fmt, ...) _printf_(2, 3);
static int bad(const char *name, const char *fmt, ...) {
        char detail[ERR_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
        return err_set(-EINVAL, "'%s' %s", name, detail);
}

void agent_config_defaults(AgentConfig *c) {
        char host[256];

        memset(c, 0, sizeof(*c));
        /* a name that does not fit stays empty: validation then asks for "host" */
        if (gethostname(host, sizeof(host)) == 0 && strnlen(host, sizeof(host)) < sizeof(c->host))
                snprintf(c->host, sizeof(c->host), "%s", host);
        snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/drover/agent");
        snprintf(c->run_dir, sizeof(c->run_dir), "/run/drover/agent");
        c->n_listen = 1;
        snprintf(c->listen[0], sizeof(c->listen[0]), "unix:/run/drover/agent.sock");
        snprintf(c->qemu_binary, sizeof(c->qemu_binary), "/usr/bin/qemu-system-x86_64");
        snprintf(c->accel, sizeof(c->accel), "kvm");
        c->dev_mode = false;
        c->job_timeout_ms = 30000;
        c->qmp_timeout_ms = 10000;
        c->qga_timeout_ms = 5000;
        c->start_timeout_ms = 10000;
        c->finish_ask_ms = 300000;
        c->postcopy_recover_ms = POSTCOPY_RETRY_GIVE_UP_MS;
        c->max_guests = 512;
        c->lane_queries = 4;
        c->lane_peer = 16;
        c->lane_migrate = 8;
        c->lane_control = 8;
        c->lane_streams = 16;
        c->max_request_bytes = 4194304;
        snprintf(c->log_level, sizeof(c->log_level), "info");
        c->n_image_roots = 1;
        snprintf(c->image_roots[0], sizeof(c->image_roots[0]), "/var/lib/drover/images");
        c->allow_block_devices = false;
        snprintf(c->qemu_user, sizeof(c->qemu_user), "nobody");
        c->qemu_chroot[0] = '\0';
        snprintf(c->migration_ports, sizeof(c->migration_ports), "49152-49215");
        snprintf(c->ssh_user, sizeof(c->ssh_user), "drover");
        c->ssh_port = 22;
}

/* ---- storing one member ---- */

static int store_string(const char *name, const char *s, size_t len, char *dst, size_t size) {
        if (strlen(s) != len)
                return bad(name, "must not contain NUL characters");
        if (len >= size)
                return bad(name, "is too long (%zu bytes, at most %zu)", len, size - 1);
        memcpy(dst, s, len + 1);
        return 0;
}

static int check_range(const Member *m, int64_t x, const char *text) {
        if (x < m->min || x > m->max)
                return bad(m->name, "must be between %" PRId64 " and %" PRId64 ", not %s", m->min, m->max, text);
        return 0;
}

static void store_int(const Member *m, AgentConfig *c, int64_t x) {
        char *p = (char *) c + m->offset;
        switch (m->type) {
        case MEMBER_I64:
                *(int64_t *) (void *) p = x;
                break;
        case MEMBER_UNSIGNED:
                *(unsigned *) (void *) p = (unsigned) x;
                break;
        case MEMBER_SIZE:
                *(size_t *) (void *) p = (size_t) x;
                break;
        default:
                assert(!"not an integer member");
        }
}

static int64_t load_int(const Member *m, const AgentConfig *c) {
        const char *p = (const char *) c + m->offset;
        switch (m->type) {
        case MEMBER_I64:
                return *(const int64_t *) (const void *) p;
        case MEMBER_UNSIGNED:
                return *(const unsigned *) (const void *) p;
        case MEMBER_SIZE:
                return (int64_t) MIN(*(const size_t *) (const void *) p, (size_t) INT64_MAX);
        default:
                assert(!"not an integer member");
        }
        return 0;
}

static size_t *list_count(const Member *m, AgentConfig *c) {
        return (size_t *) (void *) ((char *) c + m->count_offset);
}

static int store_list_entry(const Member *m, AgentConfig *c, size_t i, const char *s, size_t len) {
        char name[48];
        snprintf(name, sizeof(name), "%s[%zu]", m->name, i);
        if (i >= (size_t) m->max)
                return bad(m->name, "has more than %" PRId64 " entries", m->max);
        return store_string(name, s, len, (char *) c + m->offset + i * m->size, m->size);
}

/* ---- JSON ---- */

static int read_member(AgentConfig *c, const Member *m, const JsonNode *v) {
        int64_t x;
        size_t n;
        int r;

        switch (m->type) {
        case MEMBER_STRING:
                return json_read_string(v, (char *) c + m->offset, m->size);
        case MEMBER_BOOL:
                return json_read_bool(v, (bool *) ((char *) c + m->offset));
        case MEMBER_I64:
        case MEMBER_UNSIGNED:
        case MEMBER_SIZE:
                if ((r = json_read_i64(v, m->min, m->max, &x)) < 0)
                        return r;
                store_int(m, c, x);
                return 0;
        case MEMBER_LIST:
                if (!json_is_array(v))
                        return bad(m->name, "must be an array of strings, not %s", json_type_name(v));
                if ((r = json_want_array(v, SIZE_MAX, &n)) < 0)
                        return r;
                *list_count(m, c) = 0;
                for (size_t i = 0; i < n; i++) {
                        JsonNode e;
                        const char *s;
                        size_t len;
                        json_array_at(v, i, &e);
                        if ((r = json_read_string_ref(&e, &s, &len)) < 0 ||
                            (r = store_list_entry(m, c, i, s, len)) < 0)
                                return r;
                        *list_count(m, c) = i + 1;
                }
                return 0;
        }
        return 0;
}

/* Whether top-level @key is a section: an object whose members the table
 * names "key.member" (tls, rpc_lanes). */
static bool is_section(const char *key) {
        size_t n = strlen(key);
        for (size_t i = 0; i < ELEMENTSOF(members); i++)
                if (strncmp(members[i].name, key, n) == 0 && members[i].name[n] == '.')
                        return true;
        return false;
}

/* The members of @obj: the top level, or a section (whose members are
 * named tls.cert etc. in the table). */
static int read_members(AgentConfig *c, const JsonNode *obj) {
        JsonIter it;
        const char *key;
        JsonNode v;
        int r;

        for (json_iter_init(&it, obj); json_iter_next(&it, &key, &v);) {
                if (!obj->path[0] && is_section(key)) {
                        if ((r = json_want_object(&v)) < 0 || (r = read_members(c, &v)) < 0)
                                return r;
                        continue;
                }
                const Member *m = member_find(v.path);
                /* "tls.cert" is a name for agent_config_set(), not a top-level key */
                if (!m || !obj->path[0] != !strchr(m->name, '.'))
                        return bad(v.path, "is not a known member");
                if ((r = read_member(c, m, &v)) < 0)
                        return r;
        }
        return 0;
}

/* The configuration in @root over the defaults. */
static int read_config(JsonValue *root, AgentConfig *ret) {
        AgentConfig c;
        JsonNode n;
        int r;

        json_node_root(root, &n);
        agent_config_defaults(&c);
        if ((r = read_members(&c, &n)) < 0)
                return r;
        *ret = c;
        return 0;
}

static int parse_text(const char *json, size_t len, AgentConfig *ret) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        int r = json_parse_object(json, len, CONFIG_MAX_BYTES, &root);
        return r < 0 ? r : read_config(root, ret);
}

int agent_config_parse(const char *json, size_t len, AgentConfig *ret) {
        int r = parse_text(json, len, ret);
        return r < 0 ? err_prefix(r, "config") : 0;
}

/* ---- validation ---- */

static bool is_alnum(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static bool host_is_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || !is_alnum(s[0]))
                return false;
        for (; *s; s++)
                if (!is_alnum(*s) && !strchr("._-", *s))
                        return false;
        return true;
}

/* A DNS name: labels of [A-Za-z0-9-] (not starting or ending with '-'), and
 * a last label that is not all digits (so "127.1" is not taken as a name). */
static bool dns_name_is_valid(const char *s, size_t n) {
        size_t label = 0;
        bool digits_only = true;
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || s[i] == '.') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        if (i == n)
                                return !digits_only;
                        label = 0;
                        digits_only = true;
                        continue;
                }
                if (!is_alnum(s[i]) && s[i] != '-')
                        return false;
                if (label == 0 && s[i] == '-')
                        return false;
                if (!(s[i] >= '0' && s[i] <= '9'))
                        digits_only = false;
                label++;
        }
        return false;
}

static bool port_is_valid(const char *p) {
        unsigned long v = 0;
        if (!*p || strlen(p) > 5)
                return false;
        for (const char *q = p; *q; q++) {
                if (*q < '0' || *q > '9')
                        return false;
                v = v * 10 + (unsigned long) (*q - '0');
        }
        return v >= 1 && v <= 65535;
}

/* Check one listen address; *ret_local tells whether it is a unix socket or
 * a loopback address. */
static int listen_check(const char *name, const char *a, bool *ret_local) {
        char sh[SHOWN_MAX + 4], host[256];
        const char *colon;

        if (!strncmp(a, "unix:", 5)) {
                const char *p = a + 5;
                if (p[0] != '/')
                        return bad(name, "must name an absolute socket path: unix:/path, not '%s'", text_shown(a, sh));
                if (strlen(p) > SUN_PATH_MAX)
                        return bad(name, "socket path is longer than %zu bytes", SUN_PATH_MAX);
                *ret_local = true;
                return 0;
        }
        if (a[0] == '[') {
                const char *end = strchr(a, ']');
                struct in6_addr in6;
                if (!end || end[1] != ':' || (size_t) (end - a - 1) >= sizeof(host))
                        return bad(name, "must be [IPV6]:PORT, not '%s'", text_shown(a, sh));
                snprintf(host, sizeof(host), "%.*s", (int) (end - a - 1), a + 1);
                if (inet_pton(AF_INET6, host, &in6) != 1)
                        return bad(name, "'%s' is not an IPv6 address", text_shown(host, sh));
                if (!port_is_valid(end + 2))
                        return bad(name, "port must be 1..65535, not '%s'", text_shown(end + 2, sh));
                *ret_local = IN6_IS_ADDR_LOOPBACK(&in6) ||
                             (IN6_IS_ADDR_V4MAPPED(&in6) && in6.s6_addr[12] == 127);
                return 0;
        }
        colon = strrchr(a, ':');
        if (!colon)
                return bad(name, "must be unix:/path, HOST:PORT or [IPV6]:PORT, not '%s'", text_shown(a, sh));
        if (memchr(a, ':', (size_t) (colon - a)))
                return bad(name, "IPv6 addresses need brackets ([IPV6]:PORT), not '%s'", text_shown(a, sh));
        if ((size_t) (colon - a) >= sizeof(host))
                return bad(name, "host name is too long");
        snprintf(host, sizeof(host), "%.*s", (int) (colon - a), a);
        if (!port_is_valid(colon + 1))
                return bad(name, "port must be 1..65535, not '%s'", text_shown(colon + 1, sh));
        struct in_addr in4;
        if (inet_pton(AF_INET, host, &in4) == 1) {
                *ret_local = (ntohl(in4.s_addr) >> 24) == 127;
                return 0;
        }
        if (!dns_name_is_valid(host, strlen(host)))
                return bad(name, "'%s' is neither an IPv4 address nor a host name", text_shown(host, sh));
        *ret_local = strcasecmp(host, "localhost") == 0;
        return 0;
}

static int check_abs(const char *name, const char *path) {
        char sh[SHOWN_MAX + 4];
        if (!path[0])
                return bad(name, "is empty");
        if (path[0] != '/')
                return bad(name, "must be an absolute path, not '%s'", text_shown(path, sh));
        return 0;
}

static int check_readable(const char *name, const char *path) {
        int r = check_abs(name, path);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return bad(name, "file '%s' does not exist", path);
                return bad(name, "file '%s' cannot be read: %s", path, strerror(errno));
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return bad(name, "'%s' is not a regular file", path);
        return 0;
}

static int check_qemu(const char *path) {
        struct stat st;
        int r = check_abs("qemu_binary", path);
        if (r < 0)
                return r;
        if (stat(path, &st) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return bad("qemu_binary", "'%s' does not exist (install QEMU or set qemu_binary)", path);
                return bad("qemu_binary", "'%s': %s", path, strerror(errno));
        }
        if (!S_ISREG(st.st_mode))
                return bad("qemu_binary", "'%s' is not a regular file", path);
        if (access(path, X_OK) < 0)
                return bad("qemu_binary", "'%s' is not executable", path);
        return 0;
}

static int check_tls(const AgentConfig *c) {
        const char *names[] = { "tls.cert", "tls.key", "tls.ca" };
        const char *paths[] = { c->tls_cert, c->tls_key, c->tls_ca };
        bool any = c->tls_cert[0] || c->tls_key[0] || c->tls_ca[0];
        int r;

        if (!any) {
                if (!c->dev_mode)
                        return bad("tls", "is not set and dev_mode is off: the agent needs a certificate, key "
                                   "and CA, or dev_mode for plaintext on loopback");
                return 0;
        }
        if (c->dev_mode)
                return bad("dev_mode", "means plaintext, but 'tls' is set too: choose one");
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                if (!paths[i][0])
                        return bad(names[i], "is required with the other tls files");
                if ((r = check_readable(names[i], paths[i])) < 0)
                        return r;
        }
        return 0;
}

static int check_listen(const AgentConfig *c) {
        char name[32];
        int r;

        if (c->n_listen == 0)
                return bad("listen", "is empty: give at least one address");
        if (c->n_listen > AGENT_MAX_LISTEN)
                return bad("listen", "has more than %d entries", AGENT_MAX_LISTEN);
        for (size_t i = 0; i < c->n_listen; i++) {
                bool local = false;
                snprintf(name, sizeof(name), "listen[%zu]", i);
                if ((r = listen_check(name, c->listen[i], &local)) < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (streq(c->listen[i], c->listen[j]))
                                return bad(name, "repeats listen[%zu]", j);
                if (c->dev_mode && !local)
                        return bad("dev_mode", "allows only unix sockets and loopback addresses, and %s is '%s'",
                                   name, c->listen[i]);
        }
        return 0;
}

/* Roots: normalised (guest paths are matched against them as written),
 * never "/" (that would confine nothing), no repeats. */
static int check_image_roots(const AgentConfig *c) {
        char sh[SHOWN_MAX + 4], name[48];
        if (c->n_image_roots == 0)
                return bad("image_roots", "is empty: guests need at least one folder for their files");
        for (size_t i = 0; i < c->n_image_roots; i++) {
                const char *p = c->image_roots[i];
                snprintf(name, sizeof(name), "image_roots[%zu]", i);
                if (!guest_path_is_normal(p))
                        return bad(name, "must be a normalised absolute folder other than '/' (no '.', '..', '//' "
                                   "or trailing '/'), not '%s'", text_shown(p, sh));
                for (size_t j = 0; j < i; j++)
                        if (streq(p, c->image_roots[j]))
                                return bad(name, "repeats image_roots[%zu]", j);
        }
        return 0;
}

/* QEMU drops to qemu_user (-runas), so it must exist and not be root. */
static int check_qemu_user(const AgentConfig *c) {
        char sh[SHOWN_MAX + 4], buf[4096];
        struct passwd pw, *found = NULL;
        struct stat st;

        if (!c->qemu_user[0])
                return bad("qemu_user", "is empty: QEMU runs as an unprivileged user (e.g. \"nobody\")");
        int e = getpwnam_r(c->qemu_user, &pw, buf, sizeof(buf), &found);
        if (!found)
                return bad("qemu_user", "'%s' is not a user on this host%s%s (create it, e.g. useradd --system "
                           "--no-create-home --shell /usr/sbin/nologin %s, or name another)",
                           text_shown(c->qemu_user, sh), e ? ": " : "", e ? strerror(e) : "",
                           text_shown(c->qemu_user, sh));
        if (pw.pw_uid == 0)
                return bad("qemu_user", "'%s' is root (uid 0): QEMU must run unprivileged", c->qemu_user);
        if (!c->qemu_chroot[0])
                return 0;
        if (!guest_path_is_normal(c->qemu_chroot))
                return bad("qemu_chroot", "must be a normalised absolute folder other than '/', not '%s'",
                           text_shown(c->qemu_chroot, sh));
        if (stat(c->qemu_chroot, &st) < 0 || !S_ISDIR(st.st_mode))
                return bad("qemu_chroot", "'%s' is not a folder", c->qemu_chroot);
        return 0;
}

/* ---- the migration stream's listener ---- */

/* @s is an IPv4 or IPv6 literal (no brackets) that names one host: not the
 * wildcard, not multicast or broadcast. */
static bool ip_is_unicast(const char *s) {
        struct in_addr in4;
        struct in6_addr in6;
        if (inet_pton(AF_INET, s, &in4) == 1) {
                uint32_t v = ntohl(in4.s_addr);
                return v != 0 && v != 0xffffffffu && (v >> 28) != 0xe;
        }
        if (inet_pton(AF_INET6, s, &in6) == 1)
                return !IN6_IS_ADDR_UNSPECIFIED(&in6) && !IN6_IS_ADDR_MULTICAST(&in6);
        return false;
}

/* A configured migration_address must be one of this host's: bind it. */
static int check_local_ip(const char *name, const char *ip) {
        struct sockaddr_storage ss = { 0 };
        socklen_t len;
        struct sockaddr_in *in4 = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
        if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                len = sizeof(*in4);
        } else {
                (void) inet_pton(AF_INET6, ip, &in6->sin6_addr);
                in6->sin6_family = AF_INET6;
                len = sizeof(*in6);
        }
        _cleanup_close_ int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return bad(name, "cannot be checked: %s", strerror(errno));
        if (bind(fd, (struct sockaddr *) &ss, len) < 0 && errno == EADDRNOTAVAIL)
                return bad(name, "'%s' is not an address of this host", ip);
        return 0;
}

int agent_config_migration_host(const AgentConfig *c, char *buf, size_t size) {
        char sh[SHOWN_MAX + 4];
        if (c->migration_address[0]) {
                snprintf(buf, size, "%s", c->migration_address);
                return 0;
        }
        for (size_t i = 0; i < c->n_listen; i++) {
                const char *a = c->listen[i], *colon = strrchr(a, ':');
                char host[256];
                if (!strncmp(a, "unix:", 5) || !colon)
                        continue;
                if (a[0] == '[')
                        snprintf(host, sizeof(host), "%.*s", (int) (colon - a - 2), a + 1);
                else
                        snprintf(host, sizeof(host), "%.*s", (int) (colon - a), a);
                if (strcasecmp(host, "localhost") == 0)
                        snprintf(host, sizeof(host), "127.0.0.1");
                if (!ip_is_unicast(host))
                        return bad("migration_address", "is required: %s '%s' is not one address of this host",
                                   "the first TCP listen address", text_shown(a, sh));
                snprintf(buf, size, "%s", host);
                return 0;
        }
        snprintf(buf, size, "127.0.0.1"); /* only unix listeners: no peer can reach this agent anyway */
        return 0;
}

int agent_config_migration_ports(const AgentConfig *c, unsigned *ret_low, unsigned *ret_high) {
        char sh[SHOWN_MAX + 4];
        unsigned lo, hi;
        int n = 0;
        const char *p = c->migration_ports;
        if (sscanf(p, "%5u%n", &lo, &n) != 1 || n == 0)
                return bad("migration_ports", "must be LOW-HIGH or one port, not '%s'", text_shown(p, sh));
        hi = lo;
        if (p[n] == '-') {
                int m = 0;
                if (sscanf(p + n + 1, "%5u%n", &hi, &m) != 1 || p[n + 1] < '0' || p[n + 1] > '9')
                        return bad("migration_ports", "must be LOW-HIGH or one port, not '%s'", text_shown(p, sh));
                n += 1 + m;
        }
        if (p[n] != '\0' || p[0] < '0' || p[0] > '9')
                return bad("migration_ports", "must be LOW-HIGH or one port, not '%s'", text_shown(p, sh));
        if (lo < 1024 || hi > 65535 || lo > hi)
                return bad("migration_ports", "must lie within 1024-65535 with LOW <= HIGH, not '%s'",
                           text_shown(p, sh));
        *ret_low = lo;
        *ret_high = hi;
        return 0;
}

static int check_migration_stream(const AgentConfig *c) {
        char sh[SHOWN_MAX + 4], host[64];
        unsigned lo, hi;
        int r;
        if (c->migration_address[0]) {
                if (!ip_is_unicast(c->migration_address))
                        return bad("migration_address", "must be one IP address of this host (no name, no "
                                   "wildcard, no brackets), not '%s'", text_shown(c->migration_address, sh));
                if ((r = check_local_ip("migration_address", c->migration_address)) < 0)
                        return r;
        }
        if ((r = agent_config_migration_host(c, host, sizeof(host))) < 0)
                return r;
        return agent_config_migration_ports(c, &lo, &hi);
}

/* metrics_listen: "" or an IP literal with a port (any address: the
 * operator sets it explicitly; the default is off). */
static int check_metrics(const AgentConfig *c) {
        struct sockaddr_storage ss;
        socklen_t len;
        return metrics_listen_parse(c->metrics_listen, &ss, &len, NULL);
}

/* ---- outgoing stream transports ---- */

/* The transport @name ("" = @c's own default) for @c: tls needs a
 * certificate, plain needs dev_mode.  Into *@ret, or -EINVAL naming @what. */
static int transport_pick(const AgentConfig *c, const char *what, const char *name, MigTransport *ret) {
        char sh[SHOWN_MAX + 4];
        int t = name[0] ? mig_transport_from_string(name) : MIG_TRANSPORT_DEFAULT;
        if (t < 0)
                return bad(what, "must be tls, ssh or plain, not '%s'", text_shown(name, sh));
        if (t == MIG_TRANSPORT_DEFAULT)
                t = c->dev_mode ? MIG_TRANSPORT_PLAIN : MIG_TRANSPORT_TLS;
        if (t == MIG_TRANSPORT_PLAIN && !c->dev_mode)
                return bad(what, "is plain, which only dev_mode allows");
        if (t == MIG_TRANSPORT_TLS && c->dev_mode)
                return bad(what, "is tls, and dev_mode has no certificate for it");
        *ret = (MigTransport) t;
        return 0;
}

/* One "key=value" of a migration_peers entry into @p. */
static int peer_option(const AgentConfig *c, const char *kv, size_t len, AgentMigPeer *p) {
        static const struct { const char *key; size_t off, size; } strs[] = {
                { "ssh_host", offsetof(AgentMigPeer, ssh_host), sizeof(((AgentMigPeer *) 0)->ssh_host) },
                { "ssh_user", offsetof(AgentMigPeer, ssh_user), sizeof(((AgentMigPeer *) 0)->ssh_user) },
                { "ssh_identity", offsetof(AgentMigPeer, ssh_identity), sizeof(((AgentMigPeer *) 0)->ssh_identity) },
                { "ssh_known_hosts", offsetof(AgentMigPeer, ssh_known_hosts),
                  sizeof(((AgentMigPeer *) 0)->ssh_known_hosts) },
        };
        char v[384];
        const char *eq = memchr(kv, '=', len);
        if (!eq || eq == kv || (size_t) (kv + len - eq - 1) >= sizeof(v))
                return bad("migration_peers", "options are key=value, not '%.*s'", (int) MIN(len, 64), kv);
        size_t klen = (size_t) (eq - kv);
        snprintf(v, sizeof(v), "%.*s", (int) (kv + len - eq - 1), eq + 1);
        if (klen == 9 && strncmp(kv, "transport", 9) == 0)
                return transport_pick(c, "migration_peers transport", v, &p->transport);
        if (klen == 8 && strncmp(kv, "ssh_port", 8) == 0) {
                char *end;
                unsigned long port = strtoul(v, &end, 10);
                if (!v[0] || *end || port < 1 || port > 65535)
                        return bad("migration_peers", "ssh_port must be 1..65535, not '%s'", v);
                p->ssh_port = (unsigned) port;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(strs); i++)
                if (strlen(strs[i].key) == klen && strncmp(kv, strs[i].key, klen) == 0) {
                        if (strlen(v) >= strs[i].size || !v[0])
                                return bad("migration_peers", "%s is empty or too long", strs[i].key);
                        snprintf((char *) p + strs[i].off, strs[i].size, "%s", v);
                        return 0;
                }
        return bad("migration_peers", "knows transport, ssh_host, ssh_user, ssh_port, ssh_identity and "
                   "ssh_known_hosts, not '%.*s'", (int) klen, kv);
}

/* Entry @e of migration_peers over the defaults in @p, when its host is
 * @host (or always, @host NULL: validation).  1 when it matched, 0 not, -EINVAL. */
static int peer_entry(const AgentConfig *c, const char *e, const char *host, AgentMigPeer *p) {
        size_t hl = strcspn(e, " ");
        if (hl == 0 || hl >= sizeof(p->ssh_host))
                return bad("migration_peers", "entries begin with a host, not '%.64s'", e);
        if (host && (strlen(host) != hl || strncmp(e, host, hl) != 0))
                return 0;
        for (const char *q = e + hl;;) {
                q += strspn(q, " ");
                size_t n = strcspn(q, " ");
                if (!n)
                        break;
                int r = peer_option(c, q, n, p);
                if (r < 0)
                        return r;
                q += n;
        }
        return 1;
}

int agent_config_migration_peer(const AgentConfig *c, const char *host, AgentMigPeer *ret) {
        AgentMigPeer p = { .ssh_port = c->ssh_port };
        int r = transport_pick(c, "migration_transport", c->migration_transport, &p.transport);
        if (r < 0)
                return r;
        snprintf(p.ssh_host, sizeof(p.ssh_host), "%s", host);
        snprintf(p.ssh_user, sizeof(p.ssh_user), "%s", c->ssh_user);
        snprintf(p.ssh_identity, sizeof(p.ssh_identity), "%s", c->ssh_identity);
        snprintf(p.ssh_known_hosts, sizeof(p.ssh_known_hosts), "%s", c->ssh_known_hosts);
        for (size_t i = 0; i < c->n_migration_peers; i++)
                if ((r = peer_entry(c, c->migration_peers[i], host, &p)) != 0) {
                        if (r < 0)
                                return r;
                        break; /* the first entry for a host wins */
                }
        *ret = p;
        return 0;
}

/* An SSH transport's files, when @p uses it. */
static int check_ssh_files(const AgentMigPeer *p) {
        int r;
        if (p->transport != MIG_TRANSPORT_SSH)
                return 0;
        if (!p->ssh_user[0])
                return bad("ssh.user", "is empty, and the ssh transport needs a user");
        if ((r = check_readable("ssh.identity", p->ssh_identity)) < 0)
                return r;
        return check_readable("ssh.known_hosts", p->ssh_known_hosts);
}

static int check_transports(const AgentConfig *c) {
        AgentMigPeer p;
        int r = agent_config_migration_peer(c, "", &p);
        if (r < 0 || (r = check_ssh_files(&p)) < 0)
                return r;
        for (size_t i = 0; i < c->n_migration_peers; i++) {
                AgentMigPeer q;
                if ((r = agent_config_migration_peer(c, "", &q)) < 0 ||
                    (r = peer_entry(c, c->migration_peers[i], NULL, &q)) < 0 || (r = check_ssh_files(&q)) < 0)
                        return r;
        }
        return 0;
}

static int validate(const AgentConfig *c) {
        char sh[SHOWN_MAX + 4];
        int r;

        if (!host_is_valid(c->host))
                return bad("host", "must be 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit, not '%s' "
                           "(set it when the host name does not fit)", text_shown(c->host, sh));
        if ((r = check_abs("state_dir", c->state_dir)) < 0 || (r = check_abs("run_dir", c->run_dir)) < 0)
                return r;
        if (strlen(c->run_dir) > RUN_DIR_MAX)
                return bad("run_dir", "is longer than %zu bytes, too long for the guests' unix sockets",
                           (size_t) RUN_DIR_MAX);
        if ((r = check_listen(c)) < 0)
                return r;
        if ((r = check_qemu(c->qemu_binary)) < 0)
                return r;
        if (!streq(c->accel, "kvm") && !streq(c->accel, "tcg"))
                return bad("accel", "must be kvm or tcg, not '%s'", text_shown(c->accel, sh));
        if ((r = check_tls(c)) < 0 || (r = check_image_roots(c)) < 0 || (r = check_qemu_user(c)) < 0 ||
            (r = check_migration_stream(c)) < 0 || (r = check_metrics(c)) < 0 || (r = check_transports(c)) < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(members); i++) {
                const Member *m = &members[i];
                if (m->type != MEMBER_I64 && m->type != MEMBER_UNSIGNED && m->type != MEMBER_SIZE)
                        continue;
                char text[32];
                int64_t x = load_int(m, c);
                snprintf(text, sizeof(text), "%" PRId64, x);
                if ((r = check_range(m, x, text)) < 0)
                        return r;
        }
        if (log_level_from_string(c->log_level) < 0)
                return bad("log_level", "must be debug, info, warning or error, not '%s'", text_shown(c->log_level, sh));
        return 0;
}

int agent_config_validate(const AgentConfig *c) {
        int r = validate(c);
        return r < 0 ? err_prefix(r, "config") : 0;
}

/* ---- files and overrides ---- */

int agent_config_load(const char *path, AgentConfig *ret) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        AgentConfig c;
        int r;

        if ((r = json_parse_file(path, CONFIG_MAX_BYTES, &root)) < 0 || (r = read_config(root, &c)) < 0)
                return err_prefix(r, "config %s", path);
        *ret = c;
        return 0;
}

static int set_bool(const char *name, const char *v, bool *ret) {
        char sh[SHOWN_MAX + 4];
        if (streq(v, "true") || streq(v, "1") || streq(v, "yes") || streq(v, "on"))
                *ret = true;
        else if (streq(v, "false") || streq(v, "0") || streq(v, "no") || streq(v, "off"))
                *ret = false;
        else
                return bad(name, "must be true or false, not '%s'", text_shown(v, sh));
        return 0;
}

static int set_int(const Member *m, const char *v, int64_t *ret) {
        char sh[SHOWN_MAX + 4], *end = NULL;
        if (!((v[0] >= '0' && v[0] <= '9') || (v[0] == '-' && v[1] >= '0' && v[1] <= '9')))
                return bad(m->name, "must be an integer, not '%s'", text_shown(v, sh));
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (*end)
                return bad(m->name, "must be an integer, not '%s'", text_shown(v, sh));
        if (errno == ERANGE)
                return bad(m->name, "must be between %" PRId64 " and %" PRId64 ", not %s", m->min, m->max,
                           text_shown(v, sh));
        *ret = x;
        return check_range(m, x, text_shown(v, sh));
}

/* A list ("listen", "image_roots"): comma-separated, replaces the current one. */
static int set_list(const Member *m, AgentConfig *c, const char *v) {
        size_t n = 0;
        int r;
        for (const char *p = v;; n++) {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t) (comma - p) : strlen(p);
                _cleanup_free_ char *one = strndup(p, len);
                if (!one)
                        return err_set(-ENOMEM, "out of memory");
                if ((r = store_list_entry(m, c, n, one, len)) < 0)
                        return r;
                if (!comma)
                        break;
                p = comma + 1;
        }
        *list_count(m, c) = n + 1;
        return 0;
}

static int set_member(AgentConfig *c, const char *name, const char *value) {
        char sh[SHOWN_MAX + 4];
        const Member *m = member_find(name);
        int64_t x = 0;
        int r;

        if (!m)
                return bad(text_shown(name, sh), "is not a known member");
        switch (m->type) {
        case MEMBER_STRING:
                return store_string(m->name, value, strlen(value), (char *) c + m->offset, m->size);
        case MEMBER_BOOL:
                return set_bool(m->name, value, (bool *) ((char *) c + m->offset));
        case MEMBER_I64:
        case MEMBER_UNSIGNED:
        case MEMBER_SIZE:
                if ((r = set_int(m, value, &x)) < 0)
                        return r;
                store_int(m, c, x);
                return 0;
        case MEMBER_LIST:
                return set_list(m, c, value);
        }
        return 0;
}

int agent_config_set(AgentConfig *c, const char *name, const char *value) {
        AgentConfig tmp = *c;
        int r;

        if (!name || !value)
                return err_set(-EINVAL, "config: option without a name or value");
        if ((r = set_member(&tmp, name, value)) < 0)
                return err_prefix(r, "config");
        *c = tmp;
        return 0;
}
