/* QMP's wire: classify what QEMU sends, frame what we send (qmp-wire.h).
 *
 * qmp_wire_parse() runs on a monitor's I/O thread for every line.  It
 * parses the line with core/json (qmp_wire_json: QEMU never repeats a
 * member, so the repeated-member pass is skipped; on a 1 MiB reply that
 * pass costs about as much as the parse itself, see json.c; the UTF-8
 * check stays, and QEMU's writer always passes it since it escapes every
 * non-ASCII character), decides by
 * its members what it is (a "QMP" member: the greeting; "event": an event;
 * "return" or "error": a reply; anything else kills the monitor), and
 * turns it into plain C: a QmpVersion, a QmpEvent with its "data" as text,
 * or a reply's id, error and "return" text.  Events and error replies are
 * read leniently (json_get_*_lenient): an event is news nobody waits on,
 * and an error's class and description only feed its detail.  The tree is
 * dropped before the function returns, so no tree leaves the thread.
 *
 * The readers at the end serve both the greeting and the typed calls in
 * qmp-commands.c, which parse the "return" text on their own thread.
 */
#define _GNU_SOURCE
#include "qmp-wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"

const JsonParseOptions qmp_wire_json = {
        .max_bytes = QMP_MESSAGE_MAX,
        .max_depth = 64, /* deep backing chains nest query-block deeply */
        .any_value = true,
        .skip_repeat_check = true,
};

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

/* Member @key is present (null included). */
static bool has_member(const JsonNode *obj, const char *key) {
        JsonNode m;
        return json_member(obj, key, false, &m) > 0;
}

/* ---- incoming messages (I/O thread) -------------------------------------- */

static int parse_greeting(const JsonNode *msg, QmpWireMessage *ret) {
        JsonNode qmp, ver, caps, c;
        size_t n = 0;
        int r;

        if ((r = json_get_object(msg, "QMP", true, &qmp)) < 0)
                return qmp_wire_bad_reply(r, "QMP greeting");
        if (json_get_object_lenient(&qmp, "version", &ver) &&
            (r = qmp_wire_read_version(&ver, "QMP greeting", &ret->version)) < 0)
                return r;
        if (json_get_array_lenient(&qmp, "capabilities", &caps, &n))
                for (size_t i = 0; i < n; i++) {
                        json_array_at(&caps, i, &c);
                        const char *name;
                        if (json_is_string(&c) && json_read_string_ref(&c, &name, NULL) == 0 &&
                            strcmp(name, "oob") == 0)
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

static int parse_event(const JsonNode *msg, QmpWireMessage *ret) {
        QmpEvent *ev = &ret->event;
        JsonNode name, ts, data;
        const char *n, *s;
        int64_t sec, usec;
        int r;

        if ((r = json_member(msg, "event", true, &name)) < 0 ||
            (r = json_read_string_ref(&name, &n, NULL)) < 0)
                return qmp_wire_bad_reply(r, "QMP event");
        ret->kind = QMP_WIRE_EVENT;
        text_copy_utf8(ev->name, sizeof(ev->name), n);
        ev->type = QMP_EVENT_OTHER;
        for (size_t i = 0; i < ELEMENTSOF(event_types); i++)
                if (strcmp(n, event_types[i].name) == 0)
                        ev->type = event_types[i].type;

        /* Timestamps and data are tolerated in any shape: an event is news,
         * not a reply someone waits on. */
        if (json_get_object_lenient(msg, "timestamp", &ts) &&
            json_get_i64_lenient(&ts, "seconds", 0, INT64_MAX, &sec) &&
            json_get_i64_lenient(&ts, "microseconds", 0, INT64_MAX, &usec))
                ev->qemu_timestamp_us = (uint64_t) sec * 1000000u + (uint64_t) usec;
        /* A MIGRATION event without a readable status is not "none". */
        if (ev->type == QMP_EVENT_MIGRATION)
                ev->migration_status = MIGRATION_STATUS_UNKNOWN;
        if (json_member(msg, "data", false, &data) <= 0)
                return 0;
        if (json_node_to_string(&data, &ret->data_json) < 0)
                return err_set(-ENOMEM, "out of memory queueing a QMP event");
        switch (ev->type) {
        case QMP_EVENT_MIGRATION:
                if (json_get_string_lenient(&data, "status", &s))
                        ev->migration_status = migration_status_from_string(s);
                break;
        case QMP_EVENT_MIGRATION_PASS:
                (void) json_get_i64_lenient(&data, "pass", INT64_MIN, INT64_MAX, &ev->pass);
                break;
        case QMP_EVENT_SHUTDOWN:
                (void) json_get_bool_lenient(&data, "guest", &ev->guest);
                if (json_get_string_lenient(&data, "reason", &s))
                        text_copy_utf8(ev->reason, sizeof(ev->reason), s);
                break;
        default:
                break;
        }
        return 0;
}

static int parse_reply(const JsonNode *msg, QmpWireMessage *ret) {
        JsonNode id, err, rv;

        ret->kind = QMP_WIRE_REPLY;
        ret->has_id = json_member(msg, "id", false, &id) > 0;
        if (ret->has_id) {
                _cleanup_free_ char *text = NULL;
                ret->id_is_u64 = json_get_u64_lenient(msg, "id", 0, UINT64_MAX, &ret->id);
                if (json_node_to_string(&id, &text) < 0)
                        return err_set(-ENOMEM, "out of memory reading a QMP reply");
                text_copy_utf8(ret->id_text, sizeof(ret->id_text), text);
        }
        if (json_member(msg, "error", false, &err) > 0) {
                const char *cls = "GenericError", *desc = "";
                (void) json_get_string_lenient(&err, "class", &cls);
                (void) json_get_string_lenient(&err, "desc", &desc);
                if (json_is_string(&err) && json_read_string_ref(&err, &desc, NULL) < 0)
                        desc = ""; /* a NUL character in it */
                ret->error = strcmp(cls, "CommandNotFound") == 0 ? -EOPNOTSUPP : -EREMOTEIO;
                snprintf(ret->detail, sizeof(ret->detail), "QEMU error %s: %s", cls, desc);
                return 0;
        }
        if (json_member(msg, "return", true, &rv) < 0 || json_node_to_string(&rv, &ret->return_json) < 0)
                return err_set(-ENOMEM, "out of memory storing a QMP reply");
        return 0;
}

void qmp_wire_message_clear(QmpWireMessage *msg) {
        free(msg->data_json);
        free(msg->return_json);
        memset(msg, 0, sizeof(*msg));
}

int qmp_wire_parse(const char *s, size_t len, bool greeted, QmpWireMessage *ret) {
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        char ex[96];
        JsonNode msg;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = json_parse(s, len, &qmp_wire_json, &tree);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_msg());
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "malformed QMP message (%s): %s", why, ex);
        }
        json_node_root(tree, &msg);
        if (!json_is_object(&msg)) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "QMP message is not a JSON object: %s", ex);
        }
        if (has_member(&msg, "QMP"))
                r = parse_greeting(&msg, ret);
        else if (!greeted) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "expected the QMP greeting, got: %s", ex);
        } else if (has_member(&msg, "event"))
                r = parse_event(&msg, ret);
        else if (has_member(&msg, "return") || has_member(&msg, "error"))
                r = parse_reply(&msg, ret);
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
        _cleanup_free_ char *name = NULL;
        char *text = NULL;

        /* The compact form of {"execute", "arguments", "id"}, as core/json writes it. */
        if (json_quote(command, &name) < 0 ||
            asprintf(&text, "{\"execute\":%s%s%s,\"id\":%" PRIu64 "}\r\n", name,
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

/* ---- reading what QEMU returned ------------------------------------------ */

int qmp_wire_bad_reply(int r, const char *what) {
        return err_prefix(r == -ENOMEM ? r : -EPROTO, "%s", what);
}

int qmp_wire_parse_return(const char *text, const char *what, JsonValue **ret_tree, JsonNode *ret_root) {
        JsonValue *tree = NULL;
        int r;

        if (!text)
                return err_set(-EINVAL, "%s: no reply text", what);
        r = json_parse(text, strlen(text), &qmp_wire_json, &tree);
        if (r < 0)
                return err_prefix(r == -ENOMEM ? r : -EPROTO, "%s: reply is not valid JSON", what);
        *ret_tree = tree;
        json_node_root(tree, ret_root);
        snprintf(ret_root->path, sizeof(ret_root->path), "return");
        return 0;
}

int qmp_wire_member(const JsonNode *obj, const char *key, JsonNode *ret) {
        int r = json_member(obj, key, false, ret);
        return r > 0 && json_is_null(ret) ? 0 : r;
}

int qmp_wire_read_unsigned(const JsonNode *n, uint64_t *ret) {
        int64_t x;
        int r = json_read_i64(n, INT64_MIN, INT64_MAX, &x);
        if (r < 0)
                return r;
        if (x < 0) {
                *ret = 0;
                return 0;
        }
        return json_read_u64(n, 0, UINT64_MAX, ret);
}

/* An optional unsigned member of VersionInfo's "qemu", as an int. */
static int version_part(const JsonNode *q, const char *key, int *ret) {
        JsonNode m;
        uint64_t x = 0;
        int r = qmp_wire_member(q, key, &m);
        if (r > 0 && (r = qmp_wire_read_unsigned(&m, &x)) < 0)
                return r;
        *ret = (int) MIN(x, (uint64_t) INT32_MAX);
        return 0;
}

int qmp_wire_read_version(const JsonNode *obj, const char *what, QmpVersion *ret) {
        QmpVersion v = { 0 };
        JsonNode q, m;
        const char *package;
        int r;

        if ((r = json_want_object(obj)) < 0 || (r = json_get_object(obj, "qemu", false, &q)) < 0)
                return qmp_wire_bad_reply(r, what);
        if (r > 0 && ((r = version_part(&q, "major", &v.major)) < 0 ||
                      (r = version_part(&q, "minor", &v.minor)) < 0 ||
                      (r = version_part(&q, "micro", &v.micro)) < 0))
                return qmp_wire_bad_reply(r, what);
        if (qmp_wire_member(obj, "package", &m) > 0) {
                if ((r = json_read_string_ref(&m, &package, NULL)) < 0)
                        return qmp_wire_bad_reply(r, what);
                text_copy_utf8(v.package, sizeof(v.package), package);
        }
        *ret = v;
        return 0;
}
