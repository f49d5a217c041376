/* drover-coordinator configuration: a JSON file (docs/coordinator.md).
 *
 *   { "listen": ["unix:/run/drover/coordinator.sock", "10.0.0.10:7500"],
 *     "tls": { "cert": "...", "key": "...", "ca": "..." }, "dev_mode": false,
 *     "store": "sqlite:/var/lib/drover/coordinator.db",   (or "etcd:10.0.0.5:2379,10.0.0.6:2379")
 *     "etcd": { "cert": "...", "key": "...", "ca": "...", "prefix": "/drover", "lease_ttl_s": 3 },
 *     "advertise": "10.0.0.10:7500",           (default: the first "listen" address)
 *     "max_outgoing": 2, "max_incoming": 2, "cluster_limit": 8,
 *     "default_link_bytes_per_s": 125000000, "stream_bytes_per_s": 400000000,
 *     "heartbeat_ms": 2000, "log_level": "info",
 *     "metrics_listen": "127.0.0.1:9465",       ("" = off, the default; docs/operations.md)
 *     "rpc_lanes": { "queries": 4, "control": 4, "streams": 8 },
 *     "job_retention_days": 30, "job_retention_count": 1000,
 *     "hosts": [ { "name": "host-a", "address": "10.0.0.1:7400",
 *                  "migration_address": "10.1.0.1", "memory_mib": 65536,
 *                  "vcpus": 64, "cpu_model": "qemu64",
 *                  "link_bytes_per_s": 125000000,
 *                  "max_outgoing": 2, "max_incoming": 2 } ],
 *     "anti_affinity": { "db": ["db1", "db2"] },
 *     "compressible": ["web1", "cache2"],      (guests whose memory compresses well)
 *     "defaults": { "downtime_ms": 300, "max_downtime_ms": 2000, "postcopy": "never", ... } }
 *
 * Read through core/json: unknown and repeated members are refused and every
 * error names the member path ("config /etc/...: 'hosts[2].vcpus' must be
 * ...").  "defaults" is the JSON form of MigParams (core/migparams.h).
 * The old "db" member is still read as the SQLite path (the daemon warns
 * that "store" replaces it); "etcd" is read only with an etcd store.
 */
#define _GNU_SOURCE
#include "coord.h"
#include "coord-enums.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "json.h"
#include "metrics.h"
#include "migparams.h"

/* Far more than a cluster of COORD_MAX_HOSTS hosts needs. */
#define CONFIG_MAX_BYTES (4u * 1024 * 1024)

void coord_config_defaults(CoordConfig *c) {
        memset(c, 0, sizeof(*c));
        c->n_listen = 1;
        snprintf(c->listen[0], sizeof(c->listen[0]), "unix:/run/drover/coordinator.sock");
        c->store_kind = COORD_STORE_SQLITE;
        snprintf(c->db_path, sizeof(c->db_path), "/var/lib/drover/coordinator.db");
        snprintf(c->etcd_prefix, sizeof(c->etcd_prefix), "/drover");
        c->etcd_lease_ttl_s = 3;
        c->max_outgoing = 2;
        c->max_incoming = 2;
        c->cluster_limit = 8;
        c->default_link_bytes_per_s = 125000000;
        c->stream_bytes_per_s = 400000000;
        c->heartbeat_ms = 2000;
        c->job_retention_days = 30;
        c->job_retention_count = 1000;
        c->lane_queries = 4;
        c->lane_control = 4;
        c->lane_streams = 8;
        snprintf(c->log_level, sizeof(c->log_level), "info");
}

static int bad(const char *member, const char *fmt, ...) _printf_(2, 3);
static int bad(const char *member, const char *fmt, ...) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return err_set(-EINVAL, "config: '%s' %s", member, msg);
}

#define U40 (UINT64_C(1) << 40)

static int parse_host(const JsonNode *o, StoreHost *h) {
        static const char *const known[] = { "name", "address", "migration_address", "cpu_model", "memory_mib",
                                             "vcpus", "link_bytes_per_s", "max_outgoing", "max_incoming", NULL };
        int r;

        memset(h, 0, sizeof(*h));
        h->state = COORD_HOST_STATE_ENABLED;
        if ((r = json_want_object(o)) < 0 || (r = json_check_members(o, known)) < 0 ||
            (r = json_get_string(o, "name", false, h->name, sizeof(h->name))) < 0 ||
            (r = json_get_string(o, "address", false, h->address, sizeof(h->address))) < 0 ||
            (r = json_get_string(o, "migration_address", false, h->migration_address,
                                 sizeof(h->migration_address))) < 0 ||
            (r = json_get_string(o, "cpu_model", false, h->cpu_model, sizeof(h->cpu_model))) < 0 ||
            (r = json_get_u64(o, "memory_mib", false, 0, U40, &h->memory_mib)) < 0 ||
            (r = json_get_u32(o, "vcpus", false, 0, 1u << 20, &h->vcpus)) < 0 ||
            (r = json_get_u64(o, "link_bytes_per_s", false, 0, U40, &h->link_bytes_per_s)) < 0 ||
            (r = json_get_u32(o, "max_outgoing", false, 0, 64, &h->max_outgoing)) < 0 ||
            (r = json_get_u32(o, "max_incoming", false, 0, 64, &h->max_incoming)) < 0)
                return r;
        if (!h->name[0] || !h->address[0])
                return err_set(-EINVAL, "'%s' needs 'name' and 'address'", o->path);
        return 0;
}

static int parse_anti_affinity(const JsonNode *o, CoordConfig *c) {
        JsonIter it;
        const char *group;
        JsonNode list, e;
        size_t n;
        int r;

        for (json_iter_init(&it, o); json_iter_next(&it, &group, &list);) {
                if ((r = json_want_array(&list, COORD_MAX_AA, &n)) < 0)
                        return r;
                if (strlen(group) >= sizeof(c->aa[0].group))
                        return err_set(-EINVAL, "'%s' is a group name longer than %zu bytes", list.path,
                                       sizeof(c->aa[0].group) - 1);
                for (size_t i = 0; i < n; i++, c->n_aa++) {
                        if (c->n_aa >= COORD_MAX_AA)
                                return err_set(-EINVAL, "'anti_affinity' has more than %d entries", COORD_MAX_AA);
                        json_array_at(&list, i, &e);
                        if ((r = json_read_string(&e, c->aa[c->n_aa].guest, sizeof(c->aa[0].guest))) < 0)
                                return r;
                        snprintf(c->aa[c->n_aa].group, sizeof(c->aa[0].group), "%s", group);
                }
        }
        return 0;
}

/* "store": "sqlite:PATH" or "etcd:HOST:PORT[,HOST:PORT...]" (the
 * endpoints are checked by coord_config_validate); the old "db" is the
 * SQLite path, refused next to "store". */
static int parse_store(const JsonNode *root, CoordConfig *c) {
        char store[sizeof(c->etcd_endpoints) + 8] = "";
        int r;

        if ((r = json_get_string(root, "db", false, c->db_path, sizeof(c->db_path))) < 0)
                return r;
        c->db_given = r > 0;
        if ((r = json_get_string(root, "store", false, store, sizeof(store))) <= 0)
                return r;
        if (c->db_given)
                return err_set(-EINVAL, "'db' and 'store' both name the store: 'db' is the old name, keep 'store'");
        if (strncmp(store, "sqlite:", 7) == 0) {
                if (strlen(store + 7) >= sizeof(c->db_path))
                        return err_set(-EINVAL, "'store' names a path longer than %zu bytes", sizeof(c->db_path) - 1);
                c->store_kind = COORD_STORE_SQLITE;
                snprintf(c->db_path, sizeof(c->db_path), "%s", store + 7);
        } else if (strncmp(store, "etcd:", 5) == 0) {
                if (strlen(store + 5) >= sizeof(c->etcd_endpoints))
                        return err_set(-EINVAL, "'store' names endpoints longer than %zu bytes",
                                       sizeof(c->etcd_endpoints) - 1);
                c->store_kind = COORD_STORE_ETCD;
                memcpy(c->etcd_endpoints, store + 5, strlen(store + 5) + 1);
        } else
                return err_set(-EINVAL, "'store' must be \"sqlite:PATH\" or \"etcd:HOST:PORT[,HOST:PORT...]\", not \"%.64s\"",
                               store);
        return 0;
}

/* "etcd": { "cert", "key", "ca", "prefix", "lease_ttl_s" }, only with an
 * etcd store. */
static int parse_etcd(const JsonNode *root, CoordConfig *c) {
        static const char *const known[] = { "cert", "key", "ca", "prefix", "lease_ttl_s", NULL };
        JsonNode v;
        int r;

        if ((r = json_get_object(root, "etcd", false, &v)) <= 0)
                return r;
        if (c->store_kind != COORD_STORE_ETCD)
                return err_set(-EINVAL, "'etcd' is read only with \"store\": \"etcd:HOST:PORT[,...]\"");
        if ((r = json_check_members(&v, known)) < 0 ||
            (r = json_get_string(&v, "cert", false, c->etcd_cert, sizeof(c->etcd_cert))) < 0 ||
            (r = json_get_string(&v, "key", false, c->etcd_key, sizeof(c->etcd_key))) < 0 ||
            (r = json_get_string(&v, "ca", false, c->etcd_ca, sizeof(c->etcd_ca))) < 0 ||
            (r = json_get_string(&v, "prefix", false, c->etcd_prefix, sizeof(c->etcd_prefix))) < 0 ||
            (r = json_get_u32(&v, "lease_ttl_s", false, 2, 60, &c->etcd_lease_ttl_s)) < 0)
                return r;
        return 0;
}

static int parse(const JsonNode *root, CoordConfig *c) {
        static const char *const known[] = {
                "listen", "tls", "dev_mode", "db", "store", "etcd", "advertise", "log_level", "max_outgoing", "max_incoming", "cluster_limit",
                "rpc_threads", "rpc_lanes", "heartbeat_ms", "default_link_bytes_per_s", "stream_bytes_per_s", "hosts",
                "anti_affinity", "compressible", "defaults", "job_retention_days", "job_retention_count", "metrics_listen", NULL,
        };
        static const char *const tls_known[] = { "cert", "key", "ca", NULL };
        static const char *const lanes_known[] = { "queries", "control", "streams", NULL };
        uint32_t old_threads = 0;
        JsonNode v, e;
        size_t n;
        int r;

        if ((r = json_check_members(root, known)) < 0)
                return r;
        if ((r = json_get_array(root, "listen", false, COORD_MAX_LISTEN, &v, &n)) < 0)
                return r;
        if (r > 0) {
                if (n == 0)
                        return err_set(-EINVAL, "'listen' must be a list of 1 to %d addresses", COORD_MAX_LISTEN);
                for (size_t i = 0; i < n; i++) {
                        json_array_at(&v, i, &e);
                        if ((r = json_read_string(&e, c->listen[i], sizeof(c->listen[i]))) < 0)
                                return r;
                }
                c->n_listen = n;
        }
        if ((r = json_get_object(root, "tls", false, &v)) < 0)
                return r;
        if (r > 0 && ((r = json_check_members(&v, tls_known)) < 0 ||
                      (r = json_get_string(&v, "cert", false, c->tls_cert, sizeof(c->tls_cert))) < 0 ||
                      (r = json_get_string(&v, "key", false, c->tls_key, sizeof(c->tls_key))) < 0 ||
                      (r = json_get_string(&v, "ca", false, c->tls_ca, sizeof(c->tls_ca))) < 0))
                return r;
        if ((r = json_get_bool(root, "dev_mode", false, &c->dev_mode)) < 0 ||
            (r = parse_store(root, c)) < 0 || (r = parse_etcd(root, c)) < 0 ||
            (r = json_get_string(root, "advertise", false, c->advertise, sizeof(c->advertise))) < 0 ||
            (r = json_get_string(root, "log_level", false, c->log_level, sizeof(c->log_level))) < 0 ||
            (r = json_get_string(root, "metrics_listen", false, c->metrics_listen, sizeof(c->metrics_listen))) < 0 ||
            (r = json_get_u32(root, "max_outgoing", false, 0, 64, &c->max_outgoing)) < 0 ||
            (r = json_get_u32(root, "max_incoming", false, 0, 64, &c->max_incoming)) < 0 ||
            (r = json_get_u32(root, "cluster_limit", false, 0, 4096, &c->cluster_limit)) < 0 ||
            (r = json_get_u32(root, "rpc_threads", false, 0, 256, &old_threads)) < 0 ||
            (r = json_get_i64(root, "heartbeat_ms", false, 0, 600000, &c->heartbeat_ms)) < 0 ||
            (r = json_get_u64(root, "default_link_bytes_per_s", false, 0, U40, &c->default_link_bytes_per_s)) < 0 ||
            (r = json_get_u64(root, "stream_bytes_per_s", false, 0, U40, &c->stream_bytes_per_s)) < 0 ||
            (r = json_get_u32(root, "job_retention_days", false, 0, 36500, &c->job_retention_days)) < 0 ||
            (r = json_get_u32(root, "job_retention_count", false, 0, 10000000, &c->job_retention_count)) < 0)
                return r;
        c->rpc_threads_given = json_member(root, "rpc_threads", false, &v) > 0;
        if ((r = json_get_object(root, "rpc_lanes", false, &v)) < 0)
                return r;
        if (r > 0 && ((r = json_check_members(&v, lanes_known)) < 0 ||
                      (r = json_get_u32(&v, "queries", false, 1, 256, &c->lane_queries)) < 0 ||
                      (r = json_get_u32(&v, "control", false, 1, 256, &c->lane_control)) < 0 ||
                      (r = json_get_u32(&v, "streams", false, 1, 256, &c->lane_streams)) < 0))
                return r;
        if ((r = json_get_array(root, "hosts", false, COORD_MAX_HOSTS, &v, &n)) < 0)
                return r;
        if (r > 0) {
                for (size_t i = 0; i < n; i++) {
                        json_array_at(&v, i, &e);
                        if ((r = parse_host(&e, &c->hosts[i])) < 0)
                                return r;
                }
                c->n_hosts = n;
        }
        if ((r = json_get_object(root, "anti_affinity", false, &v)) < 0)
                return r;
        if (r > 0 && (r = parse_anti_affinity(&v, c)) < 0)
                return r;
        if ((r = json_get_array(root, "compressible", false, COORD_MAX_AA, &v, &n)) < 0)
                return r;
        for (size_t i = 0, given = r > 0; given && i < n; i++, c->n_compressible++) {
                json_array_at(&v, i, &e);
                if ((r = json_read_string(&e, c->compressible[i], sizeof(c->compressible[i]))) < 0)
                        return r;
        }
        if ((r = json_get_object(root, "defaults", false, &v)) < 0)
                return r;
        if (r > 0 && (r = mig_params_read_json(&v, &c->defaults)) < 0)
                return r;
        return 0;
}

int coord_config_load(const char *path, CoordConfig *ret) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        JsonNode n;
        int r;

        coord_config_defaults(ret);
        if ((r = json_parse_file(path, CONFIG_MAX_BYTES, &root)) < 0)
                return err_prefix(r, "config %s", path);
        json_node_root(root, &n);
        if ((r = parse(&n, ret)) < 0)
                return err_prefix(r, "config %s", path);
        if (!ret->advertise[0])
                snprintf(ret->advertise, sizeof(ret->advertise), "%s", ret->listen[0]);
        return 0;
}

/* "host:port" with a port 1..65535 and a host without blanks; *ret_local:
 * the host is a loopback address (127.0.0.0/8, ::1) or "localhost". */
static bool host_port_ok(const char *s, size_t len, bool *ret_local) {
        char host[256];
        const char *colon = memrchr(s, ':', len);
        if (!colon || colon == s || len >= sizeof(host))
                return false;
        size_t hl = (size_t) (colon - s);
        memcpy(host, s, hl);
        host[hl] = '\0';
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != s + len || colon + 1 == end || port < 1 || port > 65535 || strpbrk(host, " \t,"))
                return false;
        if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
                memmove(host, host + 1, hl - 2);
                host[hl - 2] = '\0';
        }
        struct in_addr a4;
        struct in6_addr a6;
        *ret_local = strcmp(host, "localhost") == 0 ||
                     (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) ||
                     (inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6));
        return true;
}

/* The etcd store's members: endpoints, TLS (required unless dev_mode with
 * every endpoint on loopback), prefix, and the address to advertise. */
static int validate_etcd(const CoordConfig *c) {
        size_t n = 0;
        bool all_local = true;
        bool tls = c->etcd_cert[0] || c->etcd_key[0] || c->etcd_ca[0];
        for (const char *p = c->etcd_endpoints;; n++) {
                size_t len = strcspn(p, ","), skip = 0;
                bool local = false;
                /* An etcd URL: its scheme agrees with the TLS options (etcd.h). */
                if (len >= 7 && strncmp(p, "http://", 7) == 0)
                        skip = 7;
                else if (len >= 8 && strncmp(p, "https://", 8) == 0)
                        skip = 8;
                if (skip) {
                        if ((skip == 8) != tls)
                                return bad("store", "endpoint %zu (\"%.*s\"): %s", n + 1, (int) MIN(len, (size_t) 64), p,
                                           tls ? "http:// with the 'etcd' TLS files" : "https:// needs the 'etcd' TLS files");
                }
                const char *hp = p + skip;
                size_t hl = len - skip;
                if (hl > 0 && skip && hp[hl - 1] == '/')
                        hl--;
                if (memchr(hp, '/', hl) || !host_port_ok(hp, hl, &local)) /* another scheme, a path */
                        return bad("store", "must be \"etcd:HOST:PORT[,HOST:PORT...]\": endpoint %zu (\"%.*s\") is not "
                                   "HOST:PORT", n + 1, (int) MIN(len, (size_t) 64), p);
                all_local &= local;
                if (!p[len])
                        break;
                p += len + 1;
        }
        if (n + 1 > COORD_ETCD_MAX_ENDPOINTS)
                return bad("store", "names %zu etcd endpoints, at most %d are allowed", n + 1, COORD_ETCD_MAX_ENDPOINTS);
        if (tls && (!c->etcd_cert[0] || !c->etcd_key[0] || !c->etcd_ca[0]))
                return bad("etcd", "needs cert, key and ca together");
        if (!tls && !(c->dev_mode && all_local))
                return bad("etcd", "needs cert, key and ca (TLS client authentication) unless dev_mode is true and every "
                           "endpoint is a loopback address");
        for (const char *f[] = { c->etcd_cert, c->etcd_key, c->etcd_ca, NULL }, **p = f; tls && *p; p++)
                if (access(*p, R_OK) < 0)
                        return err_set(-errno, "config: 'etcd' file %s: %m", *p);
        size_t pl = strlen(c->etcd_prefix);
        if (pl < 2 || c->etcd_prefix[0] != '/' || c->etcd_prefix[pl - 1] == '/' || strpbrk(c->etcd_prefix, " \t\n"))
                return bad("etcd.prefix", "must start with '/', not end with '/' and hold no blank (e.g. \"/drover\")");
        bool local;
        if (strncmp(c->advertise, "unix:", 5) != 0 && !host_port_ok(c->advertise, strlen(c->advertise), &local))
                return bad("advertise", "must be HOST:PORT (or unix:PATH), the API address clients reach this coordinator at");
        return 0;
}

int coord_config_validate(const CoordConfig *c) {
        int r;
        if (!c->n_listen)
                return bad("listen", "needs at least one address");
        if (c->store_kind == COORD_STORE_SQLITE && (!c->db_path[0] || c->db_path[0] != '/'))
                return bad(c->db_given ? "db" : "store", "must name an absolute path (\"sqlite:/var/lib/drover/coordinator.db\")");
        if (c->store_kind == COORD_STORE_ETCD && (r = validate_etcd(c)) < 0)
                return r;
        bool tls = c->tls_cert[0] || c->tls_key[0] || c->tls_ca[0];
        if (tls && (!c->tls_cert[0] || !c->tls_key[0] || !c->tls_ca[0]))
                return bad("tls", "needs cert, key and ca together");
        if (!tls && !c->dev_mode)
                return bad("tls", "is required unless dev_mode is true (plaintext, loopback and unix sockets only)");
        for (const char *f[] = { c->tls_cert, c->tls_key, c->tls_ca, NULL }, **p = f; tls && *p; p++)
                if (access(*p, R_OK) < 0)
                        return err_set(-errno, "config: 'tls' file %s: %m", *p);
        /* any IP literal and port: a non-loopback one is the operator's explicit choice */
        struct sockaddr_storage ss;
        socklen_t ss_len;
        r = metrics_listen_parse(c->metrics_listen, &ss, &ss_len, NULL);
        if (r < 0)
                return err_prefix(r, "config");
        if (!c->max_outgoing || !c->max_incoming || !c->cluster_limit)
                return bad("max_outgoing", "and max_incoming and cluster_limit must be at least 1");
        for (size_t i = 0; i < c->n_hosts; i++)
                for (size_t k = i + 1; k < c->n_hosts; k++)
                        if (strcmp(c->hosts[i].name, c->hosts[k].name) == 0)
                                return err_set(-EINVAL, "config: host '%s' is listed twice", c->hosts[i].name);
        return 0;
}

void coord_params_merge(const MigParams *req, const MigParams *defaults, MigParams *ret) {
        static const MigParams none;
        const MigParams *q = req ? req : &none, *d = defaults;
        MigParams p = *q;
#define TAKE(m) \
        if (!p.m) \
                p.m = d->m
        TAKE(bandwidth);
        TAKE(downtime_ms);
        TAKE(max_downtime_ms);
        TAKE(auto_converge);
        TAKE(postcopy_after_s);
        TAKE(multifd_channels);
        TAKE(completion_s_per_gib);
        TAKE(progress_timeout_s);
        TAKE(skip_time_sync);
        TAKE(zstd_level);
#undef TAKE
        if (p.postcopy == POSTCOPY_POLICY_NEVER)
                p.postcopy = d->postcopy;
        if (p.transport == MIG_TRANSPORT_DEFAULT)
                p.transport = d->transport;
        if (p.compression == MIG_COMPRESSION_NONE)
                p.compression = d->compression;
        /* the request's own choices win over a default they exclude */
        if (q->compression == MIG_COMPRESSION_NONE && p.compression != MIG_COMPRESSION_NONE &&
            (q->postcopy != POSTCOPY_POLICY_NEVER || q->multifd_channels == 1)) {
                p.compression = MIG_COMPRESSION_NONE;
                p.zstd_level = q->zstd_level;
        }
        if (q->compression != MIG_COMPRESSION_NONE) {
                if (q->postcopy == POSTCOPY_POLICY_NEVER) {
                        p.postcopy = POSTCOPY_POLICY_NEVER;
                        p.postcopy_after_s = q->postcopy_after_s;
                }
                if (q->multifd_channels == 0 && p.multifd_channels == 1)
                        p.multifd_channels = 0;
        }
        /* several multifd channels and post-copy exclude each other
         * (mig_params_validate): the request's choice of either wins */
        if (q->postcopy != POSTCOPY_POLICY_NEVER && q->multifd_channels == 0 && p.multifd_channels > 1)
                p.multifd_channels = 0;
        if (q->multifd_channels > 1 && q->postcopy == POSTCOPY_POLICY_NEVER && p.postcopy != POSTCOPY_POLICY_NEVER) {
                p.postcopy = POSTCOPY_POLICY_NEVER;
                p.postcopy_after_s = q->postcopy_after_s;
        }
        *ret = p;
}
