/* The seam between the QMP channel (qmp.c) and QMP's JSON (qmp-commands.c).
 *
 * qmp.c moves bytes, threads and the one command in flight and never sees
 * a JSON tree; qmp-commands.c is the only QMP code that includes json-c.
 * The channel asks qmp-commands.c to classify each incoming line (greeting,
 * event or reply, with what it needs to route it) and to frame each
 * outgoing command; qmp-commands.c sends its typed calls through
 * qmp_monitor_command() with the arguments as JSON text.  Only these two
 * files include this header.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deadline.h"
#include "err.h"
#include "qmp.h"

#define QMP_COMMAND_NAME_MAX 64

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
 * excerpt of the input. */
int qmp_wire_parse(const char *s, size_t len, bool greeted, QmpWireMessage *ret);
/* Free what *msg owns.  Accepts a zeroed message. */
void qmp_wire_message_clear(QmpWireMessage *msg);

/* The wire form of one command, {"execute", "arguments", "id"} plus CRLF, as
 * malloc'ed text in *ret.  @args_json is a JSON object as text or NULL.
 * -EINVAL when the whole exceeds QMP_MESSAGE_MAX. */
int qmp_wire_command_text(const char *command, const char *args_json, uint64_t id, char **ret);

/* One command through the channel (contract of qmp_call() in qmp.h), with
 * @args_json already checked to be a JSON object or NULL, and one deadline
 * for queueing, writing and the reply.  Implemented in qmp.c. */
int qmp_monitor_command(QmpMonitor *m, const char *command, const char *args_json, Deadline d,
                        char **ret_json);
