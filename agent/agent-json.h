/* Strict-JSON helpers shared by the agent's JSON readers (agent-def.c,
 * agent-config.c).  json-c keeps only the last of repeated member names, so
 * a document that says a member twice would silently lose one; comparing
 * the members in the text with the members in the tree finds it. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* At most this many bytes of a user's value are quoted in an error. */
#define SHOWN_MAX 64

/* @s for an error detail: at most SHOWN_MAX bytes of printable ASCII,
 * anything else shown as '?', "..." when cut.  Returns @buf. */
const char *json_shown(const char *s, char buf[SHOWN_MAX + 4]);

/* Members in the text: every ':' outside a string separates one. */
size_t json_text_member_count(const char *s, size_t len);
/* Members in the parsed tree, nested ones included. */
size_t json_tree_member_count(json_object *v);
/* True when the text repeats a member name somewhere. */
static inline bool json_has_repeated_members(const char *s, size_t len, json_object *tree) {
        return json_text_member_count(s, len) != json_tree_member_count(tree);
}
