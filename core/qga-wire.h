/* The seam between the QGA channel (qga.c) and the guest agent's JSON
 * (qga-commands.c).
 *
 * qga.c owns the socket, the resync scan, the in-flight slot and the
 * guest-info state, and never sees a JSON tree; qga-commands.c is the only
 * QGA code that includes json-c.  The channel asks it to frame a request,
 * to recognise the reply to a guest-sync-delimited, to convert a reply line
 * and to read guest-info; the typed calls in qga-commands.c send through
 * qga_agent_command() with their arguments as JSON text.  Only these two
 * files include this header.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qga.h"

typedef enum QgaWireKind {
        QGA_WIRE_RETURN, /* a "return" member (and no "error") */
        QGA_WIRE_ERROR,  /* an "error" member */
        QGA_WIRE_OTHER,  /* a JSON object with neither */
} QgaWireKind;

/* One reply line, converted.  Strings are malloc'ed and owned here. */
typedef struct QgaWireReply {
        QgaWireKind kind;
        char *return_json; /* RETURN: the member as JSON text ("null" for null) */
        char *error_class; /* ERROR: "class" when the error is an object with one */
        char *error_desc;  /* ERROR: "desc", or the error itself when a bare string */
} QgaWireReply;

/* Parse @s[0..@len) as exactly one JSON object and classify it.  0 with
 * *ret filled (release with qga_wire_reply_clear()); -EPROTO (detail: why
 * it is not one JSON object) or -ENOMEM. */
int qga_wire_parse_reply(const char *s, size_t len, QgaWireReply *ret);
/* Free what *r owns.  Accepts a zeroed reply. */
void qga_wire_reply_clear(QgaWireReply *r);
/* True when @s[0..@len) is `{"return": @id}`, the reply to our sync. */
bool qga_wire_is_sync_reply(const char *s, size_t len, uint64_t id);

/* The request line for @command with @args_json (a JSON object as text, or
 * NULL), newline-terminated, malloc'ed in *ret.  -EINVAL for an empty
 * command or a 0xFF byte (the agent would drop the request). */
int qga_wire_request(const char *command, const char *args_json, char **ret);

/* Read a guest-info "return" (JSON text) into a new QgaInfo (free with
 * qga_wire_info_free()).  -EPROTO with a detail, or -ENOMEM. */
int qga_wire_parse_info(const char *return_json, QgaInfo **ret);
void qga_wire_info_free(QgaInfo *info);

/* The socket path (immutable), for error details. */
const char *qga_path(QgaAgent *a);

/* Copy @src into @dst[@n], cutting at a UTF-8 character boundary. */
void qga_copy_utf8(char *dst, size_t n, const char *src);

/* Run @command through the channel: the contract of qga_call() (qga.h),
 * with @args_json already checked to be a JSON object or NULL.  On success
 * *ret_return_json (optional) gets the "return" member as malloc'ed text.
 * Implemented in qga.c. */
int qga_agent_command(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms,
                      char **ret_return_json);
