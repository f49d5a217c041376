/* Strict JSON: the one reader and the small writer every part of Drover
 * uses for its JSON documents (configurations, guest definitions, status
 * files, stored migration parameters, droverctl's output).
 *
 * Reading is strict because our documents come from operators and the
 * network and a typo must never silently change anything: no comments, no
 * single quotes, no trailing commas or trailing data, valid UTF-8, no NUL
 * bytes, a size limit, and no member given twice in one object (json-c would
 * silently keep the last one; a pass over the text finds the first repeat
 * and names its path).  Syntax errors name the line and column.
 *
 * A parsed tree is read through JsonNode: a value plus its member path
 * ("disks[1].path", "tls.cert"), so every error names the member:
 *     'tls.cert' must be a string, not an integer
 *     'disks[1]' has 9 entries, at most 8 are allowed
 *     'max_guests' must be between 1 and 65536, not 0
 * Every reading error is -EINVAL (-E2BIG for an oversized document) with a
 * detail starting with the quoted path; callers prefix their context
 * ("config: ...").  Getters for object members return 1 when the member was
 * read, 0 when it is absent and optional (the output is then untouched).
 * Values from the document shown in details are cut and reduced to
 * printable ASCII (text_shown()), since details end up in logs and gRPC
 * statuses.
 *
 * Peers whose protocol grows (QEMU's QMP, the guest agent) are read with
 * the same parser and getters, with json_parse() options for what they
 * need (any top-level value, a deeper nesting limit, no repeated-member
 * pass since QEMU never repeats a member) and lenient getters
 * (json_get_*_lenient) for members a newer peer may reshape: those read a
 * member of the wrong type or range as absent, and never fail.
 *
 * The writer builds objects and arrays and serializes them; members keep
 * the order they were added in.
 *
 * JsonValue is json-c's node type, declared here without json-c's headers:
 * only core/json.c (and core/status.c) call json-c.  A tree stays on one
 * thread; other threads are handed JSON text.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"

typedef struct json_object JsonValue;

/* Longest member path kept for errors (longer ones are cut). */
#define JSON_PATH_MAX 128

/* At most this many bytes of a user's value are quoted in an error. */
#define SHOWN_MAX 64

/* @s for an error detail: at most SHOWN_MAX bytes of printable ASCII,
 * anything else shown as '?', "..." when cut.  Returns @buf. */
const char *text_shown(const char *s, char buf[SHOWN_MAX + 4]);

/* Copy @src into @dst[@size] (@size > 0), cut at a UTF-8 character
 * boundary when it does not fit, so a cut text stays valid UTF-8. */
void text_copy_utf8(char *dst, size_t size, const char *src);

/* ---- reading ---- */

/* A value of a parsed tree and where it is in the document.  The value is
 * borrowed from the tree: a node is valid while its tree lives. */
typedef struct JsonNode {
        JsonValue *value;
        char path[JSON_PATH_MAX]; /* "" for the root */
} JsonNode;

/* Parse @len bytes of @text (NUL termination not needed) that must hold
 * one JSON object, strictly (see the top of this file).  Errors: -E2BIG
 * over @max_bytes; -EINVAL for an empty document, a NUL byte, invalid JSON
 * (line and column named), a document that ends inside a value, a top
 * level that is not an object, a repeated member.  On success *ret_root
 * is a new tree the caller frees with json_unref(). */
int json_parse_object(const char *text, size_t len, size_t max_bytes, JsonValue **ret_root);

/* Nesting limit of json_parse_object() (json-c's default). */
#define JSON_DEPTH_DEFAULT 32

/* How json_parse() reads a document.  Zeroed fields are the strict
 * defaults of json_parse_object(). */
typedef struct JsonParseOptions {
        size_t max_bytes;       /* longer documents are -E2BIG */
        unsigned max_depth;     /* nesting limit; 0 is JSON_DEPTH_DEFAULT */
        bool any_value;         /* the top level may be any value, not only an object */
        /* Skip the second pass over the text, which finds repeated member
         * names and refuses single-quoted names and strings (json-c's strict
         * mode accepts those); json-c then keeps the last of repeated
         * members.  Only for peers that never repeat a member and never
         * single-quote (QEMU's QMP and guest agent, text our own writer made),
         * where the pass costs time on a channel's I/O thread: on a 1 MiB
         * reply it is about as costly as the parse itself (figures in json.c). */
        bool skip_repeat_check;
} JsonParseOptions;

/* Parse @len bytes of @text as json_parse_object() does, with @opt.
 * Besides those of json_parse_object(): -EINVAL "nesting too deep" beyond
 * max_depth.  On success *ret_root is a new tree (json_unref()); with
 * any_value it may be NULL, which is JSON null. */
int json_parse(const char *text, size_t len, const JsonParseOptions *opt, JsonValue **ret_root);

/* Read the file @path and parse it as json_parse_object() does.  Errors:
 * -errno "cannot open: <reason>" / "cannot read: <reason>", -E2BIG "larger
 * than the limit of N bytes", then those of json_parse_object(). */
int json_parse_file(const char *path, size_t max_bytes, JsonValue **ret_root);

/* Drop a tree (or a value built by the writer).  Accepts NULL. */
void json_unref(JsonValue *v);
DEFINE_POINTER_CLEANUP(JsonValue, json_unref)

/* The node of a tree's root (path ""). */
void json_node_root(JsonValue *root, JsonNode *ret);

/* "null", "a boolean", "an integer", "a fractional number", "a string",
 * "an object", "an array": for details such as "must be X, not Y". */
const char *json_type_name(const JsonNode *n);
bool json_is_object(const JsonNode *n);
bool json_is_array(const JsonNode *n);
bool json_is_null(const JsonNode *n);
bool json_is_string(const JsonNode *n);

/* Readers of one value; every error names n->path. */
/* A string without NUL characters that fits @size with its NUL. */
int json_read_string(const JsonNode *n, char *buf, size_t size);
/* A string without NUL characters, borrowed from the tree. */
int json_read_string_ref(const JsonNode *n, const char **ret, size_t *ret_len);
int json_read_bool(const JsonNode *n, bool *ret);
/* An integer in [@min, @max]; fractions are refused. */
int json_read_i64(const JsonNode *n, int64_t min, int64_t max, int64_t *ret);
int json_read_u64(const JsonNode *n, uint64_t min, uint64_t max, uint64_t *ret);
int json_read_u32(const JsonNode *n, uint32_t min, uint32_t max, uint32_t *ret);
/* A number, integer or fractional, that is finite (json-c reads 1e400 as
 * infinity, which is refused). */
int json_read_number(const JsonNode *n, double *ret);
/* The node as compact JSON text (null included) in a malloc'ed *ret, to
 * hand a part of a tree to another thread.  0 or -ENOMEM. */
int json_node_to_string(const JsonNode *n, char **ret);
/* Type checks: "must be an object/an array, not ...".  json_want_array
 * also refuses more than @max entries and returns the length. */
int json_want_object(const JsonNode *n);
int json_want_array(const JsonNode *n, size_t max, size_t *ret_len);
/* Entry @i of array @arr (i < its length): path "arr[i]". */
void json_array_at(const JsonNode *arr, size_t i, JsonNode *ret);

/* Members of object @obj (checked with json_want_object first).  All
 * return 1 when the member was read, 0 when it is absent and not
 * @required (output untouched), or -EINVAL: "'obj.key' is required" or the
 * reader's error.  An explicit null is a value of the wrong type, not an
 * absent member. */
int json_member(const JsonNode *obj, const char *key, bool required, JsonNode *ret);
int json_get_string(const JsonNode *obj, const char *key, bool required, char *buf, size_t size);
int json_get_bool(const JsonNode *obj, const char *key, bool required, bool *ret);
int json_get_i64(const JsonNode *obj, const char *key, bool required, int64_t min, int64_t max, int64_t *ret);
int json_get_u64(const JsonNode *obj, const char *key, bool required, uint64_t min, uint64_t max,
                 uint64_t *ret);
int json_get_u32(const JsonNode *obj, const char *key, bool required, uint32_t min, uint32_t max,
                 uint32_t *ret);
int json_get_object(const JsonNode *obj, const char *key, bool required, JsonNode *ret);
int json_get_array(const JsonNode *obj, const char *key, bool required, size_t max, JsonNode *ret,
                   size_t *ret_len);
/* -EINVAL "'obj.key' is not a known member" for the first member of @obj
 * (in document order) whose name is not in the NULL-terminated @known. */
int json_check_members(const JsonNode *obj, const char *const *known);

/* Lenient member getters, for peers whose protocol grows (see the top of
 * this file).  Each returns true with the output written when member @key
 * of @obj is present with the right type (and within [@min, @max]);
 * false, output untouched, when it is absent, null, of another type, out
 * of range, or when @obj is not an object.  They never fail and leave the
 * error slot alone.  A string is borrowed from the tree and has no NUL
 * characters (one that has reads as absent). */
bool json_get_u64_lenient(const JsonNode *obj, const char *key, uint64_t min, uint64_t max,
                          uint64_t *ret);
bool json_get_i64_lenient(const JsonNode *obj, const char *key, int64_t min, int64_t max,
                          int64_t *ret);
bool json_get_bool_lenient(const JsonNode *obj, const char *key, bool *ret);
bool json_get_number_lenient(const JsonNode *obj, const char *key, double *ret);
bool json_get_string_lenient(const JsonNode *obj, const char *key, const char **ret);
bool json_get_object_lenient(const JsonNode *obj, const char *key, JsonNode *ret);
bool json_get_array_lenient(const JsonNode *obj, const char *key, JsonNode *ret, size_t *ret_len);

/* Members of an object in document order:
 *     JsonIter it;  const char *key;  JsonNode m;
 *     for (json_iter_init(&it, &obj); json_iter_next(&it, &key, &m);) ...
 * @obj must be an object and outlive the iteration. */
typedef struct JsonIter {
        const JsonNode *obj;
        void *next; /* json-c's entry */
} JsonIter;
void json_iter_init(JsonIter *it, const JsonNode *obj);
bool json_iter_next(JsonIter *it, const char **ret_key, JsonNode *ret_member);

/* ---- writing ---- */

/* New empty containers (one reference, json_unref()); NULL when out of
 * memory. */
JsonValue *json_new_object(void);
JsonValue *json_new_array(void);
/* Add a member to object @obj (a NULL string is written as "").  0 or
 * -ENOMEM; a NULL @obj is -ENOMEM too, so building code may check once. */
int json_add_string(JsonValue *obj, const char *key, const char *s);
int json_add_i64(JsonValue *obj, const char *key, int64_t x);
int json_add_u64(JsonValue *obj, const char *key, uint64_t x);
int json_add_double(JsonValue *obj, const char *key, double x);
int json_add_bool(JsonValue *obj, const char *key, bool b);
/* Add @v (taken, also on failure; NULL is -ENOMEM) as member @key of @obj
 * or as the next entry of array @arr. */
int json_add(JsonValue *obj, const char *key, JsonValue *v);
int json_append(JsonValue *arr, JsonValue *v);
/* Serialize @v to a malloc'ed string: compact, or indented when @pretty.
 * Slashes are not escaped.  0 or -ENOMEM. */
int json_to_string(JsonValue *v, bool pretty, char **ret);
/* @s as a JSON string (quoted and escaped as json_to_string() does), for
 * framing a message around JSON text made elsewhere.  0 or -ENOMEM. */
int json_quote(const char *s, char **ret);
