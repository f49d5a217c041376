/* QMP's typed calls: every command migration needs, its arguments and
 * how its reply is read (contract in qmp.h).
 *
 * A typed call builds its arguments with core/json's writer, sends them as
 * text through the channel (qmp_monitor_command(), qmp-channel.h), and
 * reads the "return" text it gets back on its own thread with core/json's
 * getters, through qmp-wire.h's QMP reading policy.  Calls run one way:
 * this file -> qmp.c (channel) -> qmp-wire.c -> json.c; nothing here sees
 * json-c.
 *
 * Readers tolerate unknown members and enum values; a member of the wrong
 * JSON type is -EPROTO with a detail naming the command and the member's
 * path, except query-migrate's counters: those are progress figures a
 * newer QEMU may reshape, so one that is not an unsigned integer reads as
 * absent (json_get_u64_lenient) and the reply (with its status, which must
 * be a string) still counts.  QEMU's migration parameters are read and
 * written by walking migration_param_table (migtypes.h), the same table
 * the status files use.
 */
#define _GNU_SOURCE
#include "qmp.h"
#include "qmp-channel.h"
#include "qmp-priv.h"
#include "qmp-wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "json.h"

/* ---- sending ------------------------------------------------------------- */

/* Send @command with @args (taken; NULL for none). */
static int call_ms(QmpMonitor *m, const char *command, JsonValue *args, int64_t timeout_ms,
                   char **ret_json) {
        _cleanup_(json_unrefp) JsonValue *a = args;
        _cleanup_free_ char *text = NULL;

        if (a && json_to_string(a, false, &text) < 0)
                return err_set(-ENOMEM, "out of memory");
        return qmp_monitor_command(m, command, text,
                                   deadline_in_ms(timeout_ms < 0 ? QMP_DEFAULT_TIMEOUT_MS : timeout_ms),
                                   ret_json);
}

int qmp_call(QmpMonitor *m, const char *command, const char *args_json, int64_t timeout_ms,
             char **ret_json) {
        JsonValue *args = NULL;
        JsonNode root;

        if (args_json) {
                if (json_parse(args_json, strlen(args_json), &qmp_wire_json, &args) < 0)
                        return err_prefix(-EINVAL, "arguments of '%s' are not valid JSON",
                                          command ? command : "?");
                json_node_root(args, &root);
                if (!json_is_object(&root)) {
                        json_unref(args);
                        return err_set(-EINVAL, "arguments of '%s' are not a JSON object",
                                       command ? command : "?");
                }
        }
        return call_ms(m, command, args, timeout_ms, ret_json);
}

/* ---- readers ------------------------------------------------------------- */

int qmp_parse_version(const char *return_json, QmpVersion *ret) {
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        JsonNode o;
        int r = qmp_wire_parse_return(return_json, "query-version", &tree, &o);
        return r < 0 ? r : qmp_wire_read_version(&o, "query-version", ret);
}

int qmp_parse_status(const char *return_json, QmpStatus *ret) {
        static const char ctx[] = "query-status";
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        QmpStatus st = { 0 };
        const char *name;
        JsonNode o, m;
        int r;

        if ((r = qmp_wire_parse_return(return_json, ctx, &tree, &o)) < 0)
                return r;
        if ((r = json_want_object(&o)) < 0)
                return qmp_wire_bad_reply(r, ctx);
        if (qmp_wire_member(&o, "running", &m) > 0 && (r = json_read_bool(&m, &st.running)) < 0)
                return qmp_wire_bad_reply(r, ctx);
        /* Very old QEMU omits "status": leave status_name empty. */
        if (qmp_wire_member(&o, "status", &m) > 0) {
                if ((r = json_read_string_ref(&m, &name, NULL)) < 0)
                        return qmp_wire_bad_reply(r, ctx);
                text_copy_utf8(st.status_name, sizeof(st.status_name), name);
        }
        st.status = st.status_name[0] ? run_state_from_string(st.status_name) : RUN_STATE_UNKNOWN;
        *ret = st;
        return 0;
}

/* Members QEMU sends only while it has a migration status: one of them
 * without a status means a reply this build misreads, not "no migration". */
static const char *const migrate_members_with_status[] = {
        "total-time", "downtime", "expected-downtime", "setup-time", "cpu-throttle-percentage",
        "error-desc", "ram", "disk", "xbzrle-cache",
};

/* The status member: a string (its name cut to @size), or absent (none) in
 * a reply with no member that needs a status. */
static int migrate_status(const JsonNode *o, const char *ctx, MigrationStatus *ret, char *name,
                          size_t size) {
        const char *s;
        JsonNode m;
        int r;

        if (json_member(o, "status", false, &m) > 0) {
                if ((r = json_read_string_ref(&m, &s, NULL)) < 0)
                        return qmp_wire_bad_reply(r, ctx);
                text_copy_utf8(name, size, s);
                *ret = migration_status_from_string(s);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(migrate_members_with_status); i++)
                if (json_member(o, migrate_members_with_status[i], false, &m) > 0)
                        return err_set(-EPROTO, "%s: reply has '%s' but no 'status'", ctx,
                                       migrate_members_with_status[i]);
        /* Before any migration, or a destination still waiting for its
         * connection, QEMU sends no status: none. */
        name[0] = '\0';
        *ret = MIGRATION_STATUS_NONE;
        return 0;
}

/* A progress counter: an integer from 0 to UINT64_MAX - 1 (json-c saturates
 * what lies beyond uint64 to UINT64_MAX); anything else reads as absent, 0. */
static void counter(const JsonNode *o, const char *key, uint64_t *ret) {
        (void) json_get_u64_lenient(o, key, 0, UINT64_MAX - 1, ret);
}

int qmp_parse_migrate_stats(const char *return_json, MigrationStats *ret) {
        static const char ctx[] = "query-migrate";
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        MigrationStats s = { 0 };
        const char *desc;
        double mbps;
        JsonNode o, ram;
        int r;

        if ((r = qmp_wire_parse_return(return_json, ctx, &tree, &o)) < 0)
                return r;
        if ((r = json_want_object(&o)) < 0)
                return qmp_wire_bad_reply(r, ctx);
        r = migrate_status(&o, ctx, &s.status, s.status_name, sizeof(s.status_name));
        if (r < 0)
                return r;
        counter(&o, "total-time", &s.total_time_ms);
        counter(&o, "downtime", &s.downtime_ms);
        counter(&o, "expected-downtime", &s.expected_downtime_ms);
        counter(&o, "setup-time", &s.setup_time_ms);
        counter(&o, "cpu-throttle-percentage", &s.cpu_throttle_percentage);
        /* Text for humans: a string or nothing. */
        if (json_get_string_lenient(&o, "error-desc", &desc)) {
                text_copy_utf8(s.error_desc, sizeof(s.error_desc), desc);
                s.has_error_desc = true;
        }
        if (json_get_object_lenient(&o, "ram", &ram)) {
                counter(&ram, "transferred", &s.ram_transferred);
                counter(&ram, "remaining", &s.ram_remaining);
                counter(&ram, "total", &s.ram_total);
                counter(&ram, "duplicate", &s.ram_duplicate);
                counter(&ram, "normal", &s.ram_normal);
                counter(&ram, "normal-bytes", &s.ram_normal_bytes);
                counter(&ram, "dirty-pages-rate", &s.ram_dirty_pages_rate);
                counter(&ram, "page-size", &s.ram_page_size);
                counter(&ram, "dirty-sync-count", &s.ram_dirty_sync_count);
                counter(&ram, "postcopy-requests", &s.ram_postcopy_requests);
                counter(&ram, "multifd-bytes", &s.ram_multifd_bytes);
                /* A rate: any finite, non-negative JSON number. */
                if (json_get_number_lenient(&ram, "mbps", &mbps) && mbps >= 0)
                        s.ram_mbps = mbps;
        }
        *ret = s;
        return 0;
}

int qmp_parse_migrate_params(const char *return_json, MigrationParams *ret) {
        static const char ctx[] = "query-migrate-parameters";
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        MigrationParams p = { 0 };
        JsonNode o, m;
        int r;

        if ((r = qmp_wire_parse_return(return_json, ctx, &tree, &o)) < 0)
                return r;
        if ((r = json_want_object(&o)) < 0)
                return qmp_wire_bad_reply(r, ctx);
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (qmp_wire_member(&o, i->name, &m) == 0)
                        continue;
                if (i->kind == MIGRATION_PARAM_U64)
                        r = qmp_wire_read_unsigned(&m, migration_param_u64_ref(&p, i));
                else
                        r = json_read_string(&m, migration_param_str_ref(&p, i), i->value_size);
                if (r < 0)
                        return qmp_wire_bad_reply(r, ctx);
                *migration_param_has_ref(&p, i) = true;
        }
        *ret = p;
        return 0;
}

int qmp_parse_migrate_caps(const char *return_json, MigrationCaps *ret) {
        static const char ctx[] = "query-migrate-capabilities";
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        MigrationCaps caps = { 0 };
        JsonNode o, e, m;
        size_t n;
        int r;

        if ((r = qmp_wire_parse_return(return_json, ctx, &tree, &o)) < 0)
                return r;
        if ((r = json_want_array(&o, SIZE_MAX, &n)) < 0)
                return qmp_wire_bad_reply(r, ctx);
        for (size_t i = 0; i < n; i++) {
                char name[64];
                bool state = false;
                int c;

                json_array_at(&o, i, &e);
                if ((r = json_want_object(&e)) < 0 || (r = json_get_string(&e, "capability", true, name, sizeof(name))) < 0 ||
                    (qmp_wire_member(&e, "state", &m) > 0 && (r = json_read_bool(&m, &state)) < 0))
                        return qmp_wire_bad_reply(r, ctx);
                c = migration_cap_from_string(name);
                if (c < 0)
                        continue; /* a capability this build does not know */
                caps.known |= MIGRATION_CAP_BIT(c);
                if (state)
                        caps.enabled |= MIGRATION_CAP_BIT(c);
        }
        *ret = caps;
        return 0;
}

/* ---- builders ------------------------------------------------------------ */

static int params_to_json(const MigrationParams *p, JsonValue **ret) {
        _cleanup_(json_unrefp) JsonValue *o = json_new_object();
        int r = o ? 0 : -ENOMEM;

        for (size_t k = 0; k < MIGRATION_PARAM_COUNT && r == 0; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (!migration_param_is_set(p, i))
                        continue;
                r = i->kind == MIGRATION_PARAM_U64 ? json_add_u64(o, i->name, migration_param_get_u64(p, i))
                                                   : json_add_string(o, i->name, migration_param_get_str(p, i));
        }
        if (r < 0)
                return err_set(-ENOMEM, "out of memory");
        *ret = TAKE_PTR(o);
        return 0;
}

static int caps_to_json(uint64_t mask, bool enable, JsonValue **ret) {
        _cleanup_(json_unrefp) JsonValue *o = NULL;
        JsonValue *arr;
        int r;

        if (mask == 0 || (mask >> MIGRATION_CAP_MAX) != 0)
                return err_set(-EINVAL, "migration capability mask %#" PRIx64 " is empty or unknown",
                               mask);
        o = json_new_object();
        arr = json_new_array();
        r = json_add(o, "capabilities", arr);
        for (int c = 0; c < MIGRATION_CAP_MAX && r == 0; c++) {
                JsonValue *e;
                if (!(mask & MIGRATION_CAP_BIT(c)))
                        continue;
                e = json_new_object();
                if ((r = json_add_string(e, "capability", migration_cap_to_string(c))) < 0 ||
                    (r = json_add_bool(e, "state", enable)) < 0) {
                        json_unref(e);
                        break;
                }
                r = json_append(arr, e);
        }
        if (r < 0)
                return err_set(-ENOMEM, "out of memory");
        *ret = TAKE_PTR(o);
        return 0;
}

/* The text of @v (taken), for the builders the tests see. */
static int take_text(JsonValue *v, char **ret_json) {
        _cleanup_(json_unrefp) JsonValue *o = v;
        return json_to_string(o, false, ret_json) < 0 ? err_set(-ENOMEM, "out of memory") : 0;
}

int qmp_build_migrate_set_parameters(const MigrationParams *p, char **ret_json) {
        JsonValue *o;
        int r = params_to_json(p, &o);
        return r < 0 ? r : take_text(o, ret_json);
}

int qmp_build_migrate_set_capabilities(uint64_t mask, bool enable, char **ret_json) {
        JsonValue *o;
        int r = caps_to_json(mask, enable, &o);
        return r < 0 ? r : take_text(o, ret_json);
}

/* ---- typed calls --------------------------------------------------------- */

/* Send @command with one string argument. */
static int call_with_str(QmpMonitor *m, const char *command, const char *key, const char *val,
                         int64_t timeout_ms) {
        JsonValue *args = json_new_object();
        if (json_add_string(args, key, val) < 0) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, command, args, timeout_ms, NULL);
}

int qmp_query_status(QmpMonitor *m, int64_t timeout_ms, QmpStatus *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-status", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_status(text, ret);
}

int qmp_query_version(QmpMonitor *m, int64_t timeout_ms, QmpVersion *ret) {
        _cleanup_free_ char *text = NULL;
        QmpVersion v, greeting;
        int r = call_ms(m, "query-version", NULL, timeout_ms, &text);

        if (r < 0 || (r = qmp_parse_version(text, &v)) < 0)
                return r;
        qmp_monitor_version(m, &greeting);
        v.oob = greeting.oob; /* a greeting property, not in query-version */
        *ret = v;
        return 0;
}

int qmp_stop(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "stop", NULL, timeout_ms, NULL);
}

int qmp_cont(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "cont", NULL, timeout_ms, NULL);
}

int qmp_quit(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "quit", NULL, timeout_ms, NULL);
}

int qmp_migrate_set_capabilities(QmpMonitor *m, int64_t timeout_ms, uint64_t mask, bool enable) {
        JsonValue *args = NULL;
        int r = caps_to_json(mask, enable, &args);
        return r < 0 ? r : call_ms(m, "migrate-set-capabilities", args, timeout_ms, NULL);
}

int qmp_query_migrate_capabilities(QmpMonitor *m, int64_t timeout_ms, MigrationCaps *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate-capabilities", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_caps(text, ret);
}

int qmp_migrate_set_parameters(QmpMonitor *m, int64_t timeout_ms, const MigrationParams *p) {
        JsonValue *args = NULL;
        int r = params_to_json(p, &args);
        return r < 0 ? r : call_ms(m, "migrate-set-parameters", args, timeout_ms, NULL);
}

int qmp_query_migrate_parameters(QmpMonitor *m, int64_t timeout_ms, MigrationParams *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate-parameters", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_params(text, ret);
}

int qmp_migrate(QmpMonitor *m, int64_t timeout_ms, const char *uri, bool resume) {
        JsonValue *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate: no URI");
        args = json_new_object();
        /* "resume" is only sent when asked for: it needs QEMU 3.0. */
        if (json_add_string(args, "uri", uri) < 0 || (resume && json_add_bool(args, "resume", true) < 0)) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "migrate", args, timeout_ms, NULL);
}

int qmp_migrate_incoming(QmpMonitor *m, int64_t timeout_ms, const char *uri) {
        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate-incoming: no URI");
        return call_with_str(m, "migrate-incoming", "uri", uri, timeout_ms);
}

int qmp_query_migrate(QmpMonitor *m, int64_t timeout_ms, MigrationStats *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_stats(text, ret);
}

int qmp_migrate_cancel(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "migrate_cancel", NULL, timeout_ms, NULL);
}

int qmp_migrate_start_postcopy(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "migrate-start-postcopy", NULL, timeout_ms, NULL);
}

int qmp_migrate_pause(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "migrate-pause", NULL, timeout_ms, NULL);
}

int qmp_migrate_recover(QmpMonitor *m, int64_t timeout_ms, const char *uri) {
        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate-recover: no URI");
        return call_with_str(m, "migrate-recover", "uri", uri, timeout_ms);
}

int qmp_migrate_continue(QmpMonitor *m, int64_t timeout_ms, const char *state) {
        if (!state || migration_status_from_string(state) == MIGRATION_STATUS_UNKNOWN)
                return err_set(-EINVAL, "migrate-continue: '%s' is not a migration status",
                               state ? state : "(null)");
        return call_with_str(m, "migrate-continue", "state", state, timeout_ms);
}

/* object-add with string members @kv (NULL-terminated key, value pairs)
 * and verify-peer when @verify_peer. */
static int object_add(QmpMonitor *m, int64_t timeout_ms, bool verify_peer, const char *const *kv) {
        JsonValue *args = json_new_object();
        int r = args ? 0 : -ENOMEM;
        for (size_t i = 0; r == 0 && kv[i]; i += 2) {
                if (!kv[i + 1] || !kv[i + 1][0]) {
                        json_unref(args);
                        return err_set(-EINVAL, "object-add: '%s' is empty", kv[i]);
                }
                r = json_add_string(args, kv[i], kv[i + 1]);
        }
        if (r == 0 && verify_peer)
                r = json_add_bool(args, "verify-peer", true);
        if (r < 0) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "object-add", args, timeout_ms, NULL);
}

int qmp_object_add_tls_creds_x509(QmpMonitor *m, int64_t timeout_ms, const char *id, const char *dir, bool server) {
        const char *kv[] = { "qom-type", "tls-creds-x509", "id", id, "dir", dir,
                             "endpoint", server ? "server" : "client", NULL };
        return object_add(m, timeout_ms, true, kv);
}

int qmp_object_add_authz_simple(QmpMonitor *m, int64_t timeout_ms, const char *id, const char *identity) {
        const char *kv[] = { "qom-type", "authz-simple", "id", id, "identity", identity, NULL };
        return object_add(m, timeout_ms, false, kv);
}

int qmp_object_del(QmpMonitor *m, int64_t timeout_ms, const char *id) {
        if (!id || !*id)
                return err_set(-EINVAL, "object-del: no id");
        return call_with_str(m, "object-del", "id", id, timeout_ms);
}

int qmp_migrate_set_tls_authz(QmpMonitor *m, int64_t timeout_ms, const char *authz_id) {
        if (!authz_id)
                return err_set(-EINVAL, "migrate-set-parameters: no tls-authz");
        return call_with_str(m, "migrate-set-parameters", "tls-authz", authz_id, timeout_ms);
}

/* ---- NBD and block jobs (local disks) ------------------------------------ */

/* Add each non-NULL, non-empty string of @kv (key, value pairs) to @o. */
static int add_strings(JsonValue *o, const char *const *kv) {
        for (size_t i = 0; kv[i]; i += 2)
                if (kv[i + 1] && kv[i + 1][0] && json_add_string(o, kv[i], kv[i + 1]) < 0)
                        return -ENOMEM;
        return 0;
}

int qmp_nbd_server_start(QmpMonitor *m, int64_t timeout_ms, const char *host, unsigned port, const char *tls_creds,
                         const char *tls_authz) {
        char p[8];
        if (!host || !host[0] || port == 0 || port > 65535)
                return err_set(-EINVAL, "nbd-server-start: no host or port");
        snprintf(p, sizeof(p), "%u", port);
        JsonValue *args = json_new_object(), *addr = json_new_object(), *data = json_new_object();
        const char *kv[] = { "tls-creds", tls_creds, "tls-authz", tls_authz, NULL };
        const char *dkv[] = { "host", host, "port", p, NULL };
        bool ok = args && addr && data && add_strings(data, dkv) == 0 && json_add_string(addr, "type", "inet") == 0 &&
                  json_add(addr, "data", data) == 0;
        if (ok)
                data = NULL;
        ok = ok && json_add(args, "addr", addr) == 0;
        if (ok)
                addr = NULL;
        ok = ok && add_strings(args, kv) == 0;
        json_unref(data);
        json_unref(addr);
        if (!ok) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "nbd-server-start", args, timeout_ms, NULL);
}

int qmp_nbd_server_stop(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "nbd-server-stop", NULL, timeout_ms, NULL);
}

int qmp_block_export_add_nbd(QmpMonitor *m, int64_t timeout_ms, const char *id, const char *node, const char *name) {
        if (!id || !id[0] || !node || !node[0] || !name || !name[0])
                return err_set(-EINVAL, "block-export-add: no id, node or name");
        JsonValue *args = json_new_object();
        const char *kv[] = { "type", "nbd", "id", id, "node-name", node, "name", name, NULL };
        if (!args || add_strings(args, kv) < 0 || json_add_bool(args, "writable", true) < 0) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "block-export-add", args, timeout_ms, NULL);
}

int qmp_blockdev_add_nbd(QmpMonitor *m, int64_t timeout_ms, const char *node, const char *host, unsigned port,
                         const char *export_name, const char *tls_creds, const char *tls_hostname) {
        char p[8];
        if (!node || !node[0] || !host || !host[0] || !export_name || !export_name[0] || port == 0 || port > 65535)
                return err_set(-EINVAL, "blockdev-add: no node, host, port or export");
        snprintf(p, sizeof(p), "%u", port);
        JsonValue *args = json_new_object(), *server = json_new_object();
        const char *kv[] = { "driver", "nbd", "node-name", node, "export", export_name, "tls-creds", tls_creds,
                             "tls-hostname", tls_creds && tls_creds[0] ? tls_hostname : NULL, NULL };
        const char *skv[] = { "type", "inet", "host", host, "port", p, NULL };
        bool ok = args && server && add_strings(server, skv) == 0 && json_add(args, "server", server) == 0;
        if (ok)
                server = NULL;
        ok = ok && add_strings(args, kv) == 0;
        json_unref(server);
        if (!ok) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "blockdev-add", args, timeout_ms, NULL);
}

int qmp_blockdev_del(QmpMonitor *m, int64_t timeout_ms, const char *node) {
        if (!node || !node[0])
                return err_set(-EINVAL, "blockdev-del: no node");
        return call_with_str(m, "blockdev-del", "node-name", node, timeout_ms);
}

int qmp_blockdev_mirror(QmpMonitor *m, int64_t timeout_ms, const char *job_id, const char *device, const char *target,
                        uint64_t speed) {
        if (!job_id || !job_id[0] || !device || !device[0] || !target || !target[0])
                return err_set(-EINVAL, "blockdev-mirror: no job id, device or target");
        JsonValue *args = json_new_object();
        const char *kv[] = { "job-id", job_id, "device", device, "target", target, "sync", "full", NULL };
        if (!args || add_strings(args, kv) < 0 || json_add_bool(args, "auto-dismiss", false) < 0 ||
            (speed && json_add_u64(args, "speed", speed) < 0)) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "blockdev-mirror", args, timeout_ms, NULL);
}

int qmp_block_job_cancel(QmpMonitor *m, int64_t timeout_ms, const char *job_id, bool force) {
        if (!job_id || !job_id[0])
                return err_set(-EINVAL, "block-job-cancel: no job id");
        JsonValue *args = json_new_object();
        if (!args || json_add_string(args, "device", job_id) < 0 || (force && json_add_bool(args, "force", true) < 0)) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "block-job-cancel", args, timeout_ms, NULL);
}

int qmp_block_job_set_speed(QmpMonitor *m, int64_t timeout_ms, const char *job_id, uint64_t speed) {
        if (!job_id || !job_id[0])
                return err_set(-EINVAL, "block-job-set-speed: no job id");
        JsonValue *args = json_new_object();
        if (!args || json_add_string(args, "device", job_id) < 0 || json_add_u64(args, "speed", speed) < 0) {
                json_unref(args);
                return err_set(-ENOMEM, "out of memory");
        }
        return call_ms(m, "block-job-set-speed", args, timeout_ms, NULL);
}

int qmp_job_dismiss(QmpMonitor *m, int64_t timeout_ms, const char *job_id) {
        if (!job_id || !job_id[0])
                return err_set(-EINVAL, "job-dismiss: no job id");
        return call_with_str(m, "job-dismiss", "id", job_id, timeout_ms);
}

int qmp_parse_block_jobs(const char *return_json, QmpBlockJob *ret, size_t max, size_t *ret_n) {
        static const char ctx[] = "query-block-jobs";
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        JsonNode arr;
        size_t n;
        int r = qmp_wire_parse_return(return_json, ctx, &tree, &arr);
        if (r < 0)
                return r;
        if ((r = json_want_array(&arr, 1024, &n)) < 0)
                return qmp_wire_bad_reply(r, ctx);
        size_t k = 0;
        for (size_t i = 0; i < n && k < max; i++) {
                JsonNode o;
                QmpBlockJob j = { 0 };
                json_array_at(&arr, i, &o);
                if ((r = json_want_object(&o)) < 0 ||
                    (r = json_get_string(&o, "device", true, j.id, sizeof(j.id))) < 0)
                        return qmp_wire_bad_reply(r, ctx);
                (void) json_get_u64_lenient(&o, "len", 0, UINT64_MAX, &j.len);
                (void) json_get_u64_lenient(&o, "offset", 0, UINT64_MAX, &j.offset);
                (void) json_get_bool_lenient(&o, "ready", &j.ready);
                const char *s;
                if (json_get_string_lenient(&o, "status", &s))
                        snprintf(j.status, sizeof(j.status), "%s", s);
                if (json_get_string_lenient(&o, "error", &s))
                        text_copy_utf8(j.error, sizeof(j.error), s);
                ret[k++] = j;
        }
        *ret_n = k;
        return 0;
}

int qmp_query_block_jobs(QmpMonitor *m, int64_t timeout_ms, QmpBlockJob *ret, size_t max, size_t *ret_n) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-block-jobs", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_block_jobs(text, ret, max, ret_n);
}
