/* QMP's JSON side: every typed call, its builder and its parser, and the
 * classification of what QEMU sends (contract in qmp.h; the seam with the
 * channel in qmp-wire.h).
 *
 * This is the only QMP code that includes json-c.  The channel (qmp.c)
 * hands over each incoming line as bytes; qmp_wire_parse() parses it with a
 * strict, depth-bounded tokener and turns it into plain C (a QmpVersion, a
 * QmpEvent plus its "data" text, or a reply's id, error and "return" text)
 * on the I/O thread, so no json-c tree crosses a thread.  A typed call
 * builds its arguments as a json-c object, sends them as text through
 * qmp_monitor_command(), and parses the "return" text it gets back on its
 * own thread.
 *
 * Parsers tolerate unknown members and enum values; a member of the wrong
 * JSON type is -EPROTO with a detail naming the command and the member,
 * except query-migrate's counters: those are progress figures a newer QEMU
 * may reshape, so one that is not an unsigned integer reads as absent and
 * the reply (with its status, which must be a string) still counts.
 * QEMU's migration parameters are read and written by walking
 * migration_param_table (migtypes.h), the same table the status files use.
 */
#define _GNU_SOURCE
#include "qmp.h"
#include "qmp-priv.h"
#include "qmp-wire.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"

#define QMP_JSON_DEPTH 64

static inline void json_object_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

static inline void json_tokener_freep(json_tokener **t) {
        if (*t)
                json_tokener_free(*t);
}

/* A short, printable excerpt of untrusted input for error details. */
static void excerpt(const char *s, size_t len, char *buf, size_t size) {
        size_t n = 0;
        for (size_t i = 0; i < len && n + 4 < size; i++) {
                unsigned char c = (unsigned char) s[i];
                buf[n++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
        }
        if (len > 0 && n + 4 >= size && n >= 3)
                memcpy(buf + n - 3, "...", 3);
        buf[n] = '\0';
}

static json_object *json_parse_text(const char *s, size_t len, char *why, size_t why_size) {
        _cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new_ex(QMP_JSON_DEPTH);
        json_object *o;
        size_t end;

        if (!tok) {
                snprintf(why, why_size, "out of memory");
                return NULL;
        }
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        if (len > INT32_MAX) {
                snprintf(why, why_size, "too large");
                return NULL;
        }
        o = json_tokener_parse_ex(tok, s, (int) len);
        if (!o) {
                enum json_tokener_error e = json_tokener_get_error(tok);
                snprintf(why, why_size, "%s",
                         e == json_tokener_continue ? "unexpected end of message"
                                                    : json_tokener_error_desc(e));
                return NULL;
        }
        end = json_tokener_get_parse_end(tok);
        for (; end < len; end++)
                if (!strchr(" \t\r\n", s[end])) {
                        json_object_put(o);
                        snprintf(why, why_size, "trailing data after the JSON value");
                        return NULL;
                }
        return o;
}

/* Parse a "return" member handed over as text (caller's thread). */
static int parse_return(const char *text, const char *what, json_object **ret) {
        char why[128];
        json_object *o;

        if (!text)
                return err_set(-EINVAL, "%s: no reply text", what);
        o = json_parse_text(text, strlen(text), why, sizeof(why));
        if (!o)
                return err_set(-EPROTO, "%s: reply is not valid JSON (%s)", what, why);
        *ret = o;
        return 0;
}

static char *json_dup_text(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        return s ? strdup(s) : NULL;
}

/* Integer member @key of @o: absent leaves *ret alone; a negative value
 * reads as 0 (counters); anything but a JSON integer is -EPROTO. */
static int member_u64(json_object *o, const char *key, const char *ctx, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return err_set(-EPROTO, "%s: member '%s' is not an integer", ctx, key);
        if (json_object_get_int64(v) < 0)
                *ret = 0;
        else
                *ret = json_object_get_uint64(v);
        return 0;
}

/* Counter member @key of @o (query-migrate): a JSON integer from 0 to
 * UINT64_MAX - 1 is its value.  Absent, null, any other type, a negative
 * number or one beyond uint64 (json-c saturates those to UINT64_MAX) reads
 * as absent: *ret = 0 and false. */
static bool member_counter(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;
        uint64_t x;

        *ret = 0;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0)
                return false;
        x = json_object_get_uint64(v);
        if (x == UINT64_MAX)
                return false;
        *ret = x;
        return true;
}

static int member_u64_has(json_object *o, const char *key, const char *ctx, bool *has,
                          uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        *has = true;
        return member_u64(o, key, ctx, ret);
}

/* String member into a fixed buffer.  @truncate_ok: text for humans may be
 * cut; an identifier that does not fit is -EPROTO. */
static int member_str(json_object *o, const char *key, const char *ctx, char *buf, size_t size,
                      bool truncate_ok, bool *has) {
        json_object *v;
        const char *s;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_string))
                return err_set(-EPROTO, "%s: member '%s' is not a string", ctx, key);
        s = json_object_get_string(v);
        if (!truncate_ok && strlen(s) >= size)
                return err_set(-EPROTO, "%s: member '%s' is longer than %zu bytes", ctx, key,
                               size - 1);
        snprintf(buf, size, "%s", s);
        if (has)
                *has = true;
        return 0;
}

static int member_bool(json_object *o, const char *key, const char *ctx, bool *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return err_set(-EPROTO, "%s: member '%s' is not a boolean", ctx, key);
        *ret = json_object_get_boolean(v);
        return 0;
}

static json_object *new_u64(uint64_t v) {
        return v <= INT64_MAX ? json_object_new_int64((int64_t) v) : json_object_new_uint64(v);
}

/* ---- incoming messages (I/O thread) -------------------------------------- */

static int parse_greeting(json_object *msg, QmpWireMessage *ret) {
        json_object *qmp, *ver, *caps;

        json_object_object_get_ex(msg, "QMP", &qmp);
        if (!json_object_is_type(qmp, json_type_object))
                return err_set(-EPROTO, "QMP greeting member 'QMP' is not an object");
        if (json_object_object_get_ex(qmp, "version", &ver) &&
            json_object_is_type(ver, json_type_object)) {
                _cleanup_free_ char *text = json_dup_text(ver);
                if (!text || qmp_parse_version(text, &ret->version) < 0)
                        return err_prefix(-EPROTO, "QMP greeting");
        }
        if (json_object_object_get_ex(qmp, "capabilities", &caps) &&
            json_object_is_type(caps, json_type_array))
                for (size_t i = 0; i < json_object_array_length(caps); i++) {
                        json_object *c = json_object_array_get_idx(caps, i);
                        if (json_object_is_type(c, json_type_string) &&
                            strcmp(json_object_get_string(c), "oob") == 0)
                                ret->version.oob = true;
                }
        ret->kind = QMP_WIRE_GREETING;
        return 0;
}

static const struct {
        const char *name;
        QmpEventType type;
} event_types[] = {
        { "MIGRATION", QMP_EVENT_MIGRATION },
        { "MIGRATION_PASS", QMP_EVENT_MIGRATION_PASS },
        { "STOP", QMP_EVENT_STOP },
        { "RESUME", QMP_EVENT_RESUME },
        { "SHUTDOWN", QMP_EVENT_SHUTDOWN },
};

static int parse_event(json_object *msg, QmpWireMessage *ret) {
        QmpEvent *ev = &ret->event;
        json_object *name, *ts, *data, *v;
        const char *n;

        if (!json_object_object_get_ex(msg, "event", &name) ||
            !json_object_is_type(name, json_type_string))
                return err_set(-EPROTO, "QMP event name is not a string");
        ret->kind = QMP_WIRE_EVENT;
        n = json_object_get_string(name);
        snprintf(ev->name, sizeof(ev->name), "%s", n);
        ev->type = QMP_EVENT_OTHER;
        for (size_t i = 0; i < ELEMENTSOF(event_types); i++)
                if (strcmp(n, event_types[i].name) == 0)
                        ev->type = event_types[i].type;

        /* Timestamps and data are tolerated in any shape: an event is news,
         * not a reply someone waits on. */
        if (json_object_object_get_ex(msg, "timestamp", &ts) &&
            json_object_is_type(ts, json_type_object)) {
                json_object *s, *us;
                if (json_object_object_get_ex(ts, "seconds", &s) &&
                    json_object_object_get_ex(ts, "microseconds", &us) &&
                    json_object_is_type(s, json_type_int) && json_object_is_type(us, json_type_int) &&
                    json_object_get_int64(s) >= 0 && json_object_get_int64(us) >= 0)
                        ev->qemu_timestamp_us = (uint64_t) json_object_get_int64(s) * 1000000u +
                                                   (uint64_t) json_object_get_int64(us);
        }
        /* A MIGRATION event without a readable status is not "none". */
        if (ev->type == QMP_EVENT_MIGRATION)
                ev->migration_status = MIGRATION_STATUS_UNKNOWN;
        if (json_object_object_get_ex(msg, "data", &data)) {
                ret->data_json = json_dup_text(data);
                if (!ret->data_json)
                        return err_set(-ENOMEM, "out of memory queueing a QMP event");
                if (!json_object_is_type(data, json_type_object))
                        data = NULL;
        } else
                data = NULL;
        switch (ev->type) {
        case QMP_EVENT_MIGRATION:
                if (data && json_object_object_get_ex(data, "status", &v) &&
                    json_object_is_type(v, json_type_string))
                        ev->migration_status = migration_status_from_string(json_object_get_string(v));
                break;
        case QMP_EVENT_MIGRATION_PASS:
                if (data && json_object_object_get_ex(data, "pass", &v) &&
                    json_object_is_type(v, json_type_int))
                        ev->pass = json_object_get_int64(v);
                break;
        case QMP_EVENT_SHUTDOWN:
                if (data && json_object_object_get_ex(data, "guest", &v) &&
                    json_object_is_type(v, json_type_boolean))
                        ev->guest = json_object_get_boolean(v);
                if (data && json_object_object_get_ex(data, "reason", &v) &&
                    json_object_is_type(v, json_type_string))
                        snprintf(ev->reason, sizeof(ev->reason), "%s", json_object_get_string(v));
                break;
        default:
                break;
        }
        return 0;
}

static int parse_reply(json_object *msg, QmpWireMessage *ret) {
        json_object *id = NULL, *err, *rv;

        ret->kind = QMP_WIRE_REPLY;
        ret->has_id = json_object_object_get_ex(msg, "id", &id);
        if (ret->has_id) {
                ret->id_is_u64 = json_object_is_type(id, json_type_int) &&
                                 json_object_get_int64(id) >= 0;
                if (ret->id_is_u64)
                        ret->id = json_object_get_uint64(id);
                snprintf(ret->id_text, sizeof(ret->id_text), "%s", json_object_to_json_string(id));
        }
        if (json_object_object_get_ex(msg, "error", &err)) {
                const char *cls = "GenericError", *desc = "";
                json_object *v;
                if (json_object_is_type(err, json_type_object)) {
                        if (json_object_object_get_ex(err, "class", &v) &&
                            json_object_is_type(v, json_type_string))
                                cls = json_object_get_string(v);
                        if (json_object_object_get_ex(err, "desc", &v) &&
                            json_object_is_type(v, json_type_string))
                                desc = json_object_get_string(v);
                } else if (json_object_is_type(err, json_type_string))
                        desc = json_object_get_string(err);
                ret->error = strcmp(cls, "CommandNotFound") == 0 ? -EOPNOTSUPP : -EREMOTEIO;
                snprintf(ret->detail, sizeof(ret->detail), "QEMU error %s: %s", cls, desc);
        } else {
                json_object_object_get_ex(msg, "return", &rv);
                ret->return_json = json_dup_text(rv);
                if (!ret->return_json)
                        return err_set(-ENOMEM, "out of memory storing a QMP reply");
        }

        return 0;
}

void qmp_wire_message_clear(QmpWireMessage *msg) {
        free(msg->data_json);
        free(msg->return_json);
        memset(msg, 0, sizeof(*msg));
}

int qmp_wire_parse(const char *s, size_t len, bool greeted, QmpWireMessage *ret) {
        _cleanup_json_ json_object *msg = NULL;
        char why[128], ex[96];
        int r;

        memset(ret, 0, sizeof(*ret));
        msg = json_parse_text(s, len, why, sizeof(why));
        if (!msg) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "malformed QMP message (%s): %s", why, ex);
        }
        if (!json_object_is_type(msg, json_type_object)) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "QMP message is not a JSON object: %s", ex);
        }
        if (json_object_object_get_ex(msg, "QMP", NULL))
                r = parse_greeting(msg, ret);
        else if (!greeted) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "expected the QMP greeting, got: %s", ex);
        } else if (json_object_object_get_ex(msg, "event", NULL))
                r = parse_event(msg, ret);
        else if (json_object_object_get_ex(msg, "return", NULL) ||
                 json_object_object_get_ex(msg, "error", NULL))
                r = parse_reply(msg, ret);
        else {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "QMP message is neither a reply nor an event: %s", ex);
        }
        if (r < 0)
                qmp_wire_message_clear(ret);
        return r;
}

/* ---- outgoing commands --------------------------------------------------- */

int qmp_wire_command_text(const char *command, const char *args_json, uint64_t id, char **ret) {
        _cleanup_json_ json_object *name = json_object_new_string(command);
        const char *s = name ? json_object_to_json_string_ext(name, JSON_C_TO_STRING_PLAIN) : NULL;
        char *text = NULL;

        /* json-c's plain form of {"execute", "arguments", "id"}, byte for byte. */
        if (!s || asprintf(&text, "{\"execute\":%s%s%s,\"id\":%" PRIu64 "}\r\n", s,
                           args_json ? ",\"arguments\":" : "", args_json ? args_json : "", id) < 0)
                return err_set(-ENOMEM, "out of memory");
        if (strlen(text) > QMP_MESSAGE_MAX) {
                free(text);
                return err_set(-EINVAL, "QMP command '%s' is larger than %u bytes", command,
                               QMP_MESSAGE_MAX);
        }
        *ret = text;
        return 0;
}

/* Send @command with @args (taken; NULL for none). */
static int call_ms(QmpMonitor *m, const char *command, json_object *args, int64_t timeout_ms,
                   char **ret_json) {
        _cleanup_free_ char *text = NULL;

        if (args) {
                text = json_dup_text(args);
                json_object_put(args);
                if (!text)
                        return err_set(-ENOMEM, "out of memory");
        }
        return qmp_monitor_command(m, command, text,
                                   deadline_in_ms(timeout_ms < 0 ? QMP_DEFAULT_TIMEOUT_MS : timeout_ms),
                                   ret_json);
}

int qmp_call(QmpMonitor *m, const char *command, const char *args_json, int64_t timeout_ms,
             char **ret_json) {
        json_object *args = NULL;
        char why[128];

        if (args_json) {
                args = json_parse_text(args_json, strlen(args_json), why, sizeof(why));
                if (!args)
                        return err_set(-EINVAL, "arguments of '%s' are not valid JSON (%s)",
                                       command ? command : "?", why);
                if (!json_object_is_type(args, json_type_object)) {
                        json_object_put(args);
                        return err_set(-EINVAL, "arguments of '%s' are not a JSON object",
                                       command ? command : "?");
                }
        }
        return call_ms(m, command, args, timeout_ms, ret_json);
}

/* ---- parsers and builders ------------------------------------------------ */

int qmp_parse_version(const char *return_json, QmpVersion *ret) {
        _cleanup_json_ json_object *o = NULL;
        QmpVersion v = { 0 };
        json_object *q;
        uint64_t x;
        int r;

        r = parse_return(return_json, "query-version", &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "query-version: reply is not an object");
        if (json_object_object_get_ex(o, "qemu", &q)) {
                if (!json_object_is_type(q, json_type_object))
                        return err_set(-EPROTO, "query-version: member 'qemu' is not an object");
                x = 0;
                if ((r = member_u64(q, "major", "query-version", &x)) < 0)
                        return r;
                v.major = (int) MIN(x, (uint64_t) INT32_MAX);
                x = 0;
                if ((r = member_u64(q, "minor", "query-version", &x)) < 0)
                        return r;
                v.minor = (int) MIN(x, (uint64_t) INT32_MAX);
                x = 0;
                if ((r = member_u64(q, "micro", "query-version", &x)) < 0)
                        return r;
                v.micro = (int) MIN(x, (uint64_t) INT32_MAX);
        }
        r = member_str(o, "package", "query-version", v.package, sizeof(v.package), true, NULL);
        if (r < 0)
                return r;
        *ret = v;
        return 0;
}

int qmp_parse_status(const char *return_json, QmpStatus *ret) {
        _cleanup_json_ json_object *o = NULL;
        QmpStatus st = { 0 };
        int r;

        r = parse_return(return_json, "query-status", &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "query-status: reply is not an object");
        r = member_bool(o, "running", "query-status", &st.running);
        if (r < 0)
                return r;
        /* Very old QEMU omits "status": leave status_name empty. */
        r = member_str(o, "status", "query-status", st.status_name, sizeof(st.status_name), true,
                       NULL);
        if (r < 0)
                return r;
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
static int migrate_status(json_object *o, const char *ctx, MigrationStatus *ret, char *name,
                          size_t size) {
        json_object *v;

        if (json_object_object_get_ex(o, "status", &v)) {
                if (!json_object_is_type(v, json_type_string))
                        return err_set(-EPROTO, "%s: member 'status' is not a string", ctx);
                snprintf(name, size, "%s", json_object_get_string(v));
                *ret = migration_status_from_string(json_object_get_string(v));
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(migrate_members_with_status); i++)
                if (json_object_object_get_ex(o, migrate_members_with_status[i], NULL))
                        return err_set(-EPROTO, "%s: reply has '%s' but no 'status'", ctx,
                                       migrate_members_with_status[i]);
        /* Before any migration, or a destination still waiting for its
         * connection, QEMU sends no status: none. */
        name[0] = '\0';
        *ret = MIGRATION_STATUS_NONE;
        return 0;
}

int qmp_parse_migrate_stats(const char *return_json, MigrationStats *ret) {
        static const char ctx[] = "query-migrate";
        _cleanup_json_ json_object *o = NULL;
        MigrationStats s = { 0 };
        json_object *ram, *v;
        int r;

        r = parse_return(return_json, ctx, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "%s: reply is not an object", ctx);
        r = migrate_status(o, ctx, &s.status, s.status_name, sizeof(s.status_name));
        if (r < 0)
                return r;
        (void) member_counter(o, "total-time", &s.total_time_ms);
        (void) member_counter(o, "downtime", &s.downtime_ms);
        (void) member_counter(o, "expected-downtime", &s.expected_downtime_ms);
        (void) member_counter(o, "setup-time", &s.setup_time_ms);
        (void) member_counter(o, "cpu-throttle-percentage", &s.cpu_throttle_percentage);
        /* Text for humans: a string or nothing. */
        if (json_object_object_get_ex(o, "error-desc", &v) && json_object_is_type(v, json_type_string)) {
                snprintf(s.error_desc, sizeof(s.error_desc), "%s", json_object_get_string(v));
                s.has_error_desc = true;
        }
        if (json_object_object_get_ex(o, "ram", &ram) && json_object_is_type(ram, json_type_object)) {
                (void) member_counter(ram, "transferred", &s.ram_transferred);
                (void) member_counter(ram, "remaining", &s.ram_remaining);
                (void) member_counter(ram, "total", &s.ram_total);
                (void) member_counter(ram, "duplicate", &s.ram_duplicate);
                (void) member_counter(ram, "normal", &s.ram_normal);
                (void) member_counter(ram, "normal-bytes", &s.ram_normal_bytes);
                (void) member_counter(ram, "dirty-pages-rate", &s.ram_dirty_pages_rate);
                (void) member_counter(ram, "page-size", &s.ram_page_size);
                (void) member_counter(ram, "dirty-sync-count", &s.ram_dirty_sync_count);
                (void) member_counter(ram, "postcopy-requests", &s.ram_postcopy_requests);
                /* A rate: any finite, non-negative JSON number. */
                if (json_object_object_get_ex(ram, "mbps", &v) &&
                    (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int))) {
                        double mbps = json_object_get_double(v);
                        if (isfinite(mbps) && mbps >= 0)
                                s.ram_mbps = mbps;
                }
        }
        *ret = s;
        return 0;
}

int qmp_parse_migrate_params(const char *return_json, MigrationParams *ret) {
        static const char ctx[] = "query-migrate-parameters";
        _cleanup_json_ json_object *o = NULL;
        MigrationParams p = { 0 };
        int r;

        r = parse_return(return_json, ctx, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "%s: reply is not an object", ctx);
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (i->kind == MIGRATION_PARAM_U64)
                        r = member_u64_has(o, i->name, ctx, migration_param_has_ref(&p, i),
                                           migration_param_u64_ref(&p, i));
                else
                        r = member_str(o, i->name, ctx, migration_param_str_ref(&p, i),
                                       i->value_size, false, migration_param_has_ref(&p, i));
                if (r < 0)
                        return r;
        }
        *ret = p;
        return 0;
}

int qmp_parse_migrate_caps(const char *return_json, MigrationCaps *ret) {
        static const char ctx[] = "query-migrate-capabilities";
        _cleanup_json_ json_object *o = NULL;
        MigrationCaps caps = { 0 };
        int r;

        r = parse_return(return_json, ctx, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_array))
                return err_set(-EPROTO, "%s: reply is not an array", ctx);
        for (size_t i = 0; i < json_object_array_length(o); i++) {
                json_object *e = json_object_array_get_idx(o, i);
                char name[64] = "";
                bool state = false, has = false;
                int c;

                if (!json_object_is_type(e, json_type_object))
                        return err_set(-EPROTO, "%s: element %zu is not an object", ctx, i);
                if ((r = member_str(e, "capability", ctx, name, sizeof(name), true, &has)) < 0 ||
                    (r = member_bool(e, "state", ctx, &state)) < 0)
                        return r;
                if (!has)
                        return err_set(-EPROTO, "%s: element %zu has no 'capability'", ctx, i);
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

static json_object *params_to_json(const MigrationParams *p) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (!migration_param_is_set(p, i))
                        continue;
                json_object_object_add(o, i->name,
                                       i->kind == MIGRATION_PARAM_U64
                                               ? new_u64(migration_param_get_u64(p, i))
                                               : json_object_new_string(migration_param_get_str(p, i)));
        }
        return o;
}

static int caps_to_json(uint64_t mask, bool enable, json_object **ret) {
        json_object *o, *arr;

        if (mask == 0 || (mask >> MIGRATION_CAP_MAX) != 0)
                return err_set(-EINVAL, "migration capability mask %#" PRIx64 " is empty or unknown",
                               mask);
        o = json_object_new_object();
        arr = json_object_new_array();
        if (!o || !arr) {
                json_object_put(o);
                json_object_put(arr);
                return err_set(-ENOMEM, "out of memory");
        }
        for (int c = 0; c < MIGRATION_CAP_MAX; c++) {
                json_object *e;
                if (!(mask & MIGRATION_CAP_BIT(c)))
                        continue;
                e = json_object_new_object();
                json_object_object_add(e, "capability",
                                       json_object_new_string(migration_cap_to_string(c)));
                json_object_object_add(e, "state", json_object_new_boolean(enable));
                json_object_array_add(arr, e);
        }
        json_object_object_add(o, "capabilities", arr);
        *ret = o;
        return 0;
}

int qmp_build_migrate_set_parameters(const MigrationParams *p, char **ret_json) {
        _cleanup_json_ json_object *o = params_to_json(p);
        char *s;

        if (!o || !(s = json_dup_text(o)))
                return err_set(-ENOMEM, "out of memory");
        *ret_json = s;
        return 0;
}

int qmp_build_migrate_set_capabilities(uint64_t mask, bool enable, char **ret_json) {
        _cleanup_json_ json_object *o = NULL;
        char *s;
        int r;

        r = caps_to_json(mask, enable, &o);
        if (r < 0)
                return r;
        if (!(s = json_dup_text(o)))
                return err_set(-ENOMEM, "out of memory");
        *ret_json = s;
        return 0;
}

/* ---- typed calls --------------------------------------------------------- */

static json_object *args_with_str(const char *key, const char *val) {
        json_object *o = json_object_new_object();
        if (o)
                json_object_object_add(o, key, json_object_new_string(val));
        return o;
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
        json_object *args = NULL;
        int r = caps_to_json(mask, enable, &args);
        return r < 0 ? r : call_ms(m, "migrate-set-capabilities", args, timeout_ms, NULL);
}

int qmp_query_migrate_capabilities(QmpMonitor *m, int64_t timeout_ms, MigrationCaps *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate-capabilities", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_caps(text, ret);
}

int qmp_migrate_set_parameters(QmpMonitor *m, int64_t timeout_ms, const MigrationParams *p) {
        json_object *args = params_to_json(p);
        if (!args)
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-set-parameters", args, timeout_ms, NULL);
}

int qmp_query_migrate_parameters(QmpMonitor *m, int64_t timeout_ms, MigrationParams *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate-parameters", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_params(text, ret);
}

int qmp_migrate(QmpMonitor *m, int64_t timeout_ms, const char *uri, bool resume) {
        json_object *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate: no URI");
        args = args_with_str("uri", uri);
        if (!args)
                return err_set(-ENOMEM, "out of memory");
        /* Only sent when asked for: "resume" needs QEMU 3.0. */
        if (resume)
                json_object_object_add(args, "resume", json_object_new_boolean(true));
        return call_ms(m, "migrate", args, timeout_ms, NULL);
}

int qmp_migrate_incoming(QmpMonitor *m, int64_t timeout_ms, const char *uri) {
        json_object *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate-incoming: no URI");
        if (!(args = args_with_str("uri", uri)))
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-incoming", args, timeout_ms, NULL);
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
        json_object *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate-recover: no URI");
        if (!(args = args_with_str("uri", uri)))
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-recover", args, timeout_ms, NULL);
}

int qmp_migrate_continue(QmpMonitor *m, int64_t timeout_ms, const char *state) {
        json_object *args;

        if (!state || migration_status_from_string(state) == MIGRATION_STATUS_UNKNOWN)
                return err_set(-EINVAL, "migrate-continue: '%s' is not a migration status",
                               state ? state : "(null)");
        if (!(args = args_with_str("state", state)))
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-continue", args, timeout_ms, NULL);
}

