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
 * The writer builds objects and arrays and serializes them; members keep
 * the order they were added in.
 *
 * JsonValue is json-c's node type, declared here without json-c's headers:
 * only core/json.c (and the few wire modules that still build QMP/QGA
 * messages) call json-c.  A tree stays on one thread.
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
