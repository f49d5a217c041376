/* The guest agent's wire: reply lines read and classified, requests framed,
 * guest-info read (implemented in qga-wire.c).
 *
 * The QGA code is three layers whose calls run one way:
 *     qga-commands.c (typed calls) -> qga.c (channel) -> qga-wire.c -> json.c
 * and qga-commands.c also reads the "return" texts it gets back with
 * qga_wire_parse_return().  The channel owns the socket, the resync scan,
 * the in-flight slot and the guest-info state, and never sees a JSON tree:
 * it has each request framed here, each reply line converted here (the
 * "return" member as text, or the error's class and description), the
 * reply to its guest-sync-delimited recognised here, and guest-info read
 * here.  Agent replies are parsed with core/json and qga_wire_json (any
 * value at the top, 64 levels, no repeated-member pass: qemu-ga writes its
 * replies with QEMU's JSON writer, which never repeats a member).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "qga.h"

/* How guest-agent text is parsed (see the top of this file). */
extern const JsonParseOptions qga_wire_json;

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

/* Parse a "return" member handed over as text into a new tree *ret_tree
 * (json_unref(); NULL for JSON null, which a NULL @return_json also reads
 * as) with *ret_root its node (path "return").  -EPROTO "reply is not
 * valid JSON: ...", -ENOMEM. */
int qga_wire_parse_return(const char *return_json, JsonValue **ret_tree, JsonNode *ret_root);

/* Read a guest-info "return" (JSON text) into a new QgaInfo (free with
 * qga_wire_info_free()).  -EPROTO with a detail, or -ENOMEM. */
int qga_wire_parse_info(const char *return_json, QgaInfo **ret);
void qga_wire_info_free(QgaInfo *info);
