/* drover-coordinator configuration: a JSON file (docs/coordinator.md).
 *
 *   { "listen": ["unix:/run/drover/coordinator.sock", "10.0.0.10:7500"],
 *     "tls": { "cert": "...", "key": "...", "ca": "..." }, "dev_mode": false,
 *     "db": "/var/lib/drover/coordinator.db",
 *     "max_outgoing": 2, "max_incoming": 2, "cluster_limit": 8,
 *     "default_link_bytes_per_s": 125000000, "stream_bytes_per_s": 400000000,
 *     "heartbeat_ms": 2000, "rpc_threads": 16, "log_level": "info",
 *     "hosts": [ { "name": "host-a", "address": "10.0.0.1:7400",
 *                  "migration_address": "10.1.0.1", "memory_mib": 65536,
 *                  "vcpus": 64, "cpu_model": "qemu64",
 *                  "link_bytes_per_s": 125000000,
 *                  "max_outgoing": 2, "max_incoming": 2 } ],
 *     "anti_affinity": { "db": ["db1", "db2"] },
 *     "defaults": { "downtime_ms": 300, "max_downtime_ms": 2000, "postcopy": 0, ... } }
 *
 * Unknown members are rejected with their name.
 */
#define _GNU_SOURCE
#include "coord.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

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
        c->rpc_threads = 16;
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

static int get_str(json_object *v, const char *member, char *buf, size_t size) {
        if (!json_object_is_type(v, json_type_string))
                return bad(member, "must be a string");
        if ((size_t) json_object_get_string_len(v) >= size)
                return bad(member, "is longer than %zu bytes", size - 1);
        snprintf(buf, size, "%s", json_object_get_string(v));
        return 0;
}

static int get_u64(json_object *v, const char *member, uint64_t max, uint64_t *ret) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return bad(member, "must be a non-negative integer");
        uint64_t x = json_object_get_uint64(v);
        if (x > max)
                return bad(member, "must be at most %llu", (unsigned long long) max);
        *ret = x;
        return 0;
}

static int parse_host(json_object *o, size_t idx, StoreHost *h) {
        char m[64];
        int r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EINVAL, "config: 'hosts[%zu]' must be an object", idx);
        memset(h, 0, sizeof(*h));
        h->state = 1;
        json_object_object_foreach(o, key, v) {
                uint64_t u;
                r = 0;
                snprintf(m, sizeof(m), "hosts[%zu].%s", idx, key);
                if (strcmp(key, "name") == 0)
                        r = get_str(v, m, h->name, sizeof(h->name));
                else if (strcmp(key, "address") == 0)
                        r = get_str(v, m, h->address, sizeof(h->address));
                else if (strcmp(key, "migration_address") == 0)
                        r = get_str(v, m, h->migration_address, sizeof(h->migration_address));
                else if (strcmp(key, "cpu_model") == 0)
                        r = get_str(v, m, h->cpu_model, sizeof(h->cpu_model));
                else if (strcmp(key, "memory_mib") == 0)
                        r = get_u64(v, m, UINT64_C(1) << 40, &h->memory_mib);
                else if (strcmp(key, "vcpus") == 0 && (r = get_u64(v, m, 1u << 20, &u)) >= 0)
                        h->vcpus = (uint32_t) u;
                else if (strcmp(key, "link_bytes_per_s") == 0)
                        r = get_u64(v, m, UINT64_C(1) << 40, &h->link_bytes_per_s);
                else if (strcmp(key, "max_outgoing") == 0 && (r = get_u64(v, m, 64, &u)) >= 0)
                        h->max_outgoing = (uint32_t) u;
                else if (strcmp(key, "max_incoming") == 0 && (r = get_u64(v, m, 64, &u)) >= 0)
                        h->max_incoming = (uint32_t) u;
                else if (strcmp(key, "vcpus") && strcmp(key, "max_outgoing") && strcmp(key, "max_incoming"))
                        return bad(m, "is not a known member");
                if (r < 0)
                        return r;
        }
        if (!h->name[0] || !h->address[0])
                return err_set(-EINVAL, "config: 'hosts[%zu]' needs 'name' and 'address'", idx);
        return 0;
}

static int parse_defaults(json_object *o, LinkMigParams *p) {
        char m[64];
        if (!json_object_is_type(o, json_type_object))
                return bad("defaults", "must be an object");
        json_object_object_foreach(o, key, v) {
                uint64_t u = 0;
                int r = 0;
                snprintf(m, sizeof(m), "defaults.%s", key);
                if (strcmp(key, "auto_converge") == 0 || strcmp(key, "skip_time_sync") == 0) {
                        if (!json_object_is_type(v, json_type_boolean))
                                return bad(m, "must be true or false");
                        if (key[0] == 'a')
                                p->auto_converge = json_object_get_boolean(v);
                        else
                                p->skip_time_sync = json_object_get_boolean(v);
                        continue;
                }
                if ((r = get_u64(v, m, UINT64_C(1) << 40, &u)) < 0)
                        return r;
                if (strcmp(key, "bandwidth") == 0)
                        p->bandwidth = u;
                else if (strcmp(key, "downtime_ms") == 0)
                        p->downtime_ms = (uint32_t) u;
                else if (strcmp(key, "max_downtime_ms") == 0)
                        p->max_downtime_ms = (uint32_t) u;
                else if (strcmp(key, "postcopy") == 0 && u <= 2)
                        p->postcopy = (int) u;
                else if (strcmp(key, "postcopy_after_s") == 0)
                        p->postcopy_after_s = (uint32_t) u;
                else if (strcmp(key, "multifd_channels") == 0)
                        p->multifd_channels = (uint32_t) u;
                else if (strcmp(key, "completion_s_per_gib") == 0)
                        p->completion_s_per_gib = (uint32_t) u;
                else if (strcmp(key, "progress_timeout_s") == 0)
                        p->progress_timeout_s = (uint32_t) u;
                else
                        return bad(m, "is not a known member (or out of range)");
        }
        return 0;
}

static int parse(json_object *root, CoordConfig *c) {
        int r = 0;
        if (!json_object_is_type(root, json_type_object))
                return err_set(-EINVAL, "config: the top level must be a JSON object");
        json_object_object_foreach(root, key, v) {
                uint64_t u;
                if (strcmp(key, "listen") == 0) {
                        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0 ||
                            json_object_array_length(v) > COORD_MAX_LISTEN)
                                return bad(key, "must be a list of 1 to %d addresses", COORD_MAX_LISTEN);
                        c->n_listen = json_object_array_length(v);
                        for (size_t i = 0; i < c->n_listen; i++)
                                if ((r = get_str(json_object_array_get_idx(v, i), "listen[]", c->listen[i], sizeof(c->listen[i]))) < 0)
                                        return r;
                } else if (strcmp(key, "tls") == 0) {
                        if (!json_object_is_type(v, json_type_object))
                                return bad(key, "must be an object with cert, key, ca");
                        json_object_object_foreach(v, tk, tv) {
                                char *dst = strcmp(tk, "cert") == 0 ? c->tls_cert : strcmp(tk, "key") == 0 ? c->tls_key
                                            : strcmp(tk, "ca") == 0 ? c->tls_ca : NULL;
                                if (!dst)
                                        return bad("tls", "has an unknown member");
                                if ((r = get_str(tv, "tls", dst, 256)) < 0)
                                        return r;
                        }
                } else if (strcmp(key, "dev_mode") == 0) {
                        if (!json_object_is_type(v, json_type_boolean))
                                return bad(key, "must be true or false");
                        c->dev_mode = json_object_get_boolean(v);
                } else if (strcmp(key, "db") == 0)
                        r = get_str(v, key, c->db_path, sizeof(c->db_path));
                else if (strcmp(key, "log_level") == 0)
                        r = get_str(v, key, c->log_level, sizeof(c->log_level));
                else if (strcmp(key, "max_outgoing") == 0 && (r = get_u64(v, key, 64, &u)) >= 0)
                        c->max_outgoing = (unsigned) u;
                else if (strcmp(key, "max_incoming") == 0 && (r = get_u64(v, key, 64, &u)) >= 0)
                        c->max_incoming = (unsigned) u;
                else if (strcmp(key, "cluster_limit") == 0 && (r = get_u64(v, key, 4096, &u)) >= 0)
                        c->cluster_limit = (unsigned) u;
                else if (strcmp(key, "rpc_threads") == 0 && (r = get_u64(v, key, 256, &u)) >= 0)
                        c->rpc_threads = (unsigned) u;
                else if (strcmp(key, "heartbeat_ms") == 0 && (r = get_u64(v, key, 600000, &u)) >= 0)
                        c->heartbeat_ms = (int64_t) u;
                else if (strcmp(key, "default_link_bytes_per_s") == 0)
                        r = get_u64(v, key, UINT64_C(1) << 40, &c->default_link_bytes_per_s);
                else if (strcmp(key, "stream_bytes_per_s") == 0)
                        r = get_u64(v, key, UINT64_C(1) << 40, &c->stream_bytes_per_s);
                else if (strcmp(key, "hosts") == 0) {
                        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) > COORD_MAX_HOSTS)
                                return bad(key, "must be a list of at most %d hosts", COORD_MAX_HOSTS);
                        c->n_hosts = json_object_array_length(v);
                        for (size_t i = 0; i < c->n_hosts; i++)
                                if ((r = parse_host(json_object_array_get_idx(v, i), i, &c->hosts[i])) < 0)
                                        return r;
                } else if (strcmp(key, "anti_affinity") == 0) {
                        if (!json_object_is_type(v, json_type_object))
                                return bad(key, "must map a group name to a list of guest names");
                        json_object_object_foreach(v, group, list) {
                                if (!json_object_is_type(list, json_type_array))
                                        return bad("anti_affinity", "groups must be lists of guest names");
                                for (size_t i = 0; i < json_object_array_length(list); i++) {
                                        if (c->n_aa >= COORD_MAX_AA)
                                                return bad("anti_affinity", "has more than %d entries", COORD_MAX_AA);
                                        snprintf(c->aa[c->n_aa].group, sizeof(c->aa[0].group), "%s", group);
                                        if ((r = get_str(json_object_array_get_idx(list, i), "anti_affinity[]",
                                                         c->aa[c->n_aa].guest, sizeof(c->aa[0].guest))) < 0)
                                                return r;
                                        c->n_aa++;
                                }
                        }
                } else if (strcmp(key, "defaults") == 0)
                        r = parse_defaults(v, &c->defaults);
                else if (strcmp(key, "max_outgoing") && strcmp(key, "max_incoming") && strcmp(key, "cluster_limit") &&
                         strcmp(key, "rpc_threads") && strcmp(key, "heartbeat_ms"))
                        return bad(key, "is not a known member");
                if (r < 0)
                        return r;
        }
        return 0;
}

int coord_config_load(const char *path, CoordConfig *ret) {
        json_object *root;
        coord_config_defaults(ret);
        root = json_object_from_file(path);
        if (!root)
                return err_set(access(path, R_OK) < 0 ? -errno : -EINVAL, "config %s: cannot read it as JSON: %s", path,
                               access(path, R_OK) < 0 ? strerror(errno) : json_util_get_last_err());
        int r = parse(root, ret);
        json_object_put(root);
        return r < 0 ? err_prefix(r, "%s", path) : 0;
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
        if (!c->max_outgoing || !c->max_incoming || !c->cluster_limit)
                return bad("max_outgoing", "and max_incoming and cluster_limit must be at least 1");
        for (size_t i = 0; i < c->n_hosts; i++)
                for (size_t k = i + 1; k < c->n_hosts; k++)
                        if (strcmp(c->hosts[i].name, c->hosts[k].name) == 0)
                                return err_set(-EINVAL, "config: host '%s' is listed twice", c->hosts[i].name);
        return 0;
}
