/* QMP's wire: what QEMU's monitor sends, read and classified, and what we
 * send, framed (implemented in qmp-wire.c).
 *
 * The QMP code is three layers whose calls run one way:
 *     qmp-commands.c (typed calls) -> qmp.c (channel) -> qmp-wire.c -> json.c
 * and qmp-commands.c also reads the "return" texts it gets back with the
 * readers below.  The channel moves bytes, threads and the one command in
 * flight and never sees a JSON tree: it has each incoming line classified
 * here (greeting, event or reply, with what it needs to route it) and each
 * outgoing command framed here.  Trees never cross a thread: the channel
 * hands the "return" member (and an event's "data") over as text, and the
 * caller parses it on its own thread with qmp_wire_parse_return().
 *
 * Reading policy for everything QEMU sends: core/json's parser with
 * qmp_wire_json (any value at the top, 64 levels, no repeated-member pass:
 * QEMU never repeats a member), unknown members and enum values tolerated,
 * a member of the wrong type -EPROTO with a detail naming the context and
 * the member's path ("query-status: 'return.running' must be a boolean,
 * not a string"), except where a caller reads leniently.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "json.h"
#include "qmp.h"

#define QMP_COMMAND_NAME_MAX 64

/* How QMP text is parsed (see the top of this file). */
extern const JsonParseOptions qmp_wire_json;

typedef enum QmpWireKind {
        QMP_WIRE_GREETING,
        QMP_WIRE_EVENT,
        QMP_WIRE_REPLY,
} QmpWireKind;

/* One incoming message, converted on the I/O thread.  Strings the channel
 * keeps are malloc'ed and owned here until taken (TAKE_PTR). */
typedef struct QmpWireMessage {
        QmpWireKind kind;

        QmpVersion version;    /* GREETING: from "QMP", oob included */

        QmpEvent event;        /* EVENT: all but received_ns; data_json NULL */
        char *data_json;       /* EVENT: the "data" member as text, or NULL */

        bool has_id;           /* REPLY: an "id" member was sent */
        bool id_is_u64;        /* REPLY: ... and it is a non-negative integer */
        uint64_t id;           /* REPLY: its value when id_is_u64 */
        char id_text[ERR_MSG_MAX]; /* REPLY: the id as JSON, for error details */
        int error;             /* REPLY: 0, -EREMOTEIO or -EOPNOTSUPP */
        char detail[ERR_MSG_MAX];  /* REPLY: "QEMU error CLASS: desc" */
        char *return_json;     /* REPLY without error: "return" as text */
} QmpWireMessage;

/* Parse and classify the message in @s[0..@len) (no line end).  Before the
 * greeting (@greeted false) anything but a greeting is an error.  Returns
 * 0 with *ret filled (release with qmp_wire_message_clear()), or -EPROTO
 * for input that must kill the monitor, -ENOMEM; the detail quotes an
 * excerpt of the input.  Any thread; no lock. */
int qmp_wire_parse(const char *s, size_t len, bool greeted, QmpWireMessage *ret);
/* Free what *msg owns.  Accepts a zeroed message. */
void qmp_wire_message_clear(QmpWireMessage *msg);

/* The wire form of one command, {"execute", "arguments", "id"} plus CRLF, as
 * malloc'ed text in *ret.  @args_json is a JSON object as text or NULL.
 * -EINVAL when the whole exceeds QMP_MESSAGE_MAX, -ENOMEM. */
int qmp_wire_command_text(const char *command, const char *args_json, uint64_t id, char **ret);

/* Parse a "return" member handed over as text (by the channel, or by a
 * test) into a new tree *ret_tree (json_unref(); NULL for JSON null) with
 * *ret_root its node, whose path is "return" so that details name the
 * member as it stands in QEMU's reply.  -EINVAL without text; -EPROTO
 * "@what: reply is not valid JSON: ..."; -ENOMEM. */
int qmp_wire_parse_return(const char *text, const char *what, JsonValue **ret_tree, JsonNode *ret_root);

/* A core/json reading error @r as a QMP one: -EPROTO (-ENOMEM stays) with
 * the detail prefixed "@what: ".  Returns the new code. */
int qmp_wire_bad_reply(int r, const char *what);

/* Member @key of object @obj, where QEMU's null means absent: 1 with *ret,
 * 0 when absent or null. */
int qmp_wire_member(const JsonNode *obj, const char *key, JsonNode *ret);

/* An integer QEMU declares unsigned.  A negative one (QEMU sends none)
 * reads as 0; anything but an integer is core/json's -EINVAL. */
int qmp_wire_read_unsigned(const JsonNode *n, uint64_t *ret);

/* A VersionInfo object (query-version's return, the greeting's "version"):
 * "qemu" {major, minor, micro} and "package", each optional.  *ret is
 * written on success (oob false).  -EPROTO "@what: <member> ...". */
int qmp_wire_read_version(const JsonNode *obj, const char *what, QmpVersion *ret);
