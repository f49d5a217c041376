/* drover-coordinator configuration: a JSON file (docs/coordinator.md).
 *
 *   { "listen": ["unix:/run/drover/coordinator.sock", "10.0.0.10:7500"],
 *     "tls": { "cert": "...", "key": "...", "ca": "..." }, "dev_mode": false,
 *     "db": "/var/lib/drover/coordinator.db",
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
 *     "defaults": { "downtime_ms": 300, "max_downtime_ms": 2000, "postcopy": "never", ... } }
 *
 * Read through core/json: unknown and repeated members are refused and every
 * error names the member path ("config /etc/...: 'hosts[2].vcpus' must be
 * ...").  "defaults" is the JSON form of MigParams (core/migparams.h).
 */
#define _GNU_SOURCE
#include "coord.h"
#include "coord-enums.h"

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
        snprintf(c->db_path, sizeof(c->db_path), "/var/lib/drover/coordinator.db");
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

static int parse(const JsonNode *root, CoordConfig *c) {
        static const char *const known[] = {
                "listen", "tls", "dev_mode", "db", "log_level", "max_outgoing", "max_incoming", "cluster_limit",
                "rpc_threads", "rpc_lanes", "heartbeat_ms", "default_link_bytes_per_s", "stream_bytes_per_s", "hosts",
                "anti_affinity", "defaults", "job_retention_days", "job_retention_count", "metrics_listen", NULL,
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
            (r = json_get_string(root, "db", false, c->db_path, sizeof(c->db_path))) < 0 ||
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
        return 0;
}

int coord_config_validate(const CoordConfig *c) {
        if (!c->n_listen)
                return bad("listen", "needs at least one address");
        if (!c->db_path[0] || c->db_path[0] != '/')
                return bad("db", "must be an absolute path");
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
        int r = metrics_listen_parse(c->metrics_listen, &ss, &ss_len, NULL);
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
