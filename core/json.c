/* Strict JSON reader and writer (see json.h).
 *
 * json-c's tokener does the parsing, in strict mode with UTF-8 validation;
 * trailing characters are allowed by the tokener only so that this file can
 * tell "trailing data" apart from other syntax errors.  The tokener reports
 * a byte offset, turned into a line and column here.  Since json-c keeps
 * only the last of repeated member names, a second pass over the (by then
 * valid) text decodes every member name and looks for a repeat within each
 * object, with a hash set per object so the pass stays linear.  That pass
 * also refuses single-quoted names, which json-c's strict mode lets through.
 * It costs about as much as the parse: on a 1 MiB QMP-schema-like reply
 * (7,000 objects of 3 levels, -O2) json_parse() took 20.5 ms with it and 10 ms
 * without (json-c's tokener alone: 7.9 ms; the rest is the UTF-8 check),
 * so json_parse() can skip it for peers that never repeat a member (QEMU's
 * QMP and guest agent, whose lines are parsed on a channel's I/O thread).
 * The lenient getters check the type before reading, so they never set
 * an error.
 */
#define _GNU_SOURCE
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "text.h"

DEFINE_POINTER_CLEANUP(json_tokener, json_tokener_free)

_Static_assert(JSON_DEPTH_DEFAULT == JSON_TOKENER_DEFAULT_DEPTH, "json-c's default nesting limit");

/* The most a caller may ask for: the repeated-member pass recurses once per level. */
#define JSON_DEPTH_LIMIT 1024

const char *text_shown(const char *s, char buf[SHOWN_MAX + 4]) {
        size_t i = 0;
        for (; s[i] && i < SHOWN_MAX; i++)
                buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        if (s[i]) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
        return buf;
}

void text_copy_utf8(char *dst, size_t size, const char *src) {
        size_t len = strlen(src);
        if (len >= size) {
                len = size - 1;
                while (len > 0 && ((unsigned char) src[len] & 0xC0) == 0x80)
                        len--;
        }
        memcpy(dst, src, len);
        dst[len] = '\0';
}

/* 1-based line and column (in bytes) of offset @off. */
static void line_col(const char *s, size_t off, unsigned *ret_line, unsigned *ret_col) {
        unsigned line = 1;
        size_t start = 0;
        for (size_t i = 0; i < off; i++)
                if (s[i] == '\n') {
                        line++;
                        start = i + 1;
                }
        *ret_line = line;
        *ret_col = (unsigned) (off - start + 1);
}

static int syntax_error(const char *s, size_t off, const char *what) {
        unsigned line, col;
        line_col(s, off, &line, &col);
        return err_set(-EINVAL, "invalid JSON at line %u, column %u: %s", line, col, what);
}

/* ---- the repeated-member pass ---- */

typedef struct Scan {
        const char *s;
        size_t len, pos;
        int max_depth; /* the tokener's limit; deeper text was refused already */
} Scan;

static void scan_ws(Scan *sc) {
        while (sc->pos < sc->len && strchr(" \t\r\n", sc->s[sc->pos]))
                sc->pos++;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static unsigned hex4(const char *p) {
        unsigned v = 0;
        for (int i = 0; i < 4; i++)
                v = v << 4 | (unsigned) MAX(hexval(p[i]), 0);
        return v;
}

static size_t put_utf8(char *out, unsigned cp) {
        if (cp < 0x80) {
                out[0] = (char) cp;
                return 1;
        }
        if (cp < 0x800) {
                out[0] = (char) (0xc0 | cp >> 6);
                out[1] = (char) (0x80 | (cp & 0x3f));
                return 2;
        }
        if (cp < 0x10000) {
                out[0] = (char) (0xe0 | cp >> 12);
                out[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
                out[2] = (char) (0x80 | (cp & 0x3f));
                return 3;
        }
        out[0] = (char) (0xf0 | cp >> 18);
        out[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
        out[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
        out[3] = (char) (0x80 | (cp & 0x3f));
        return 4;
}

/* Read the string at sc->pos (on its '"') and, when @ret is not NULL,
 * decode it into a malloc'ed C string (cut at an escaped NUL, as json-c
 * cuts member names).  The text is valid JSON, so escapes are well formed;
 * a lone surrogate becomes U+FFFD. */
static int scan_string(Scan *sc, char **ret) {
        size_t start = ++sc->pos;
        while (sc->pos < sc->len && sc->s[sc->pos] != '"')
                sc->pos += sc->s[sc->pos] == '\\' ? 2 : 1;
        size_t end = MIN(sc->pos, sc->len);
        sc->pos++;
        if (!ret)
                return 0;
        /* decoding never makes a string longer */
        char *out = malloc(end - start + 1);
        size_t n = 0;
        if (!out)
                return err_set(-ENOMEM, "out of memory");
        for (size_t i = start; i < end; i++) {
                if (sc->s[i] != '\\') {
                        out[n++] = sc->s[i];
                        continue;
                }
                char c = sc->s[++i];
                if (c != 'u') {
                        const char *esc = strchr("b\bf\fn\nr\rt\t", c);
                        out[n++] = esc ? esc[1] : c; /* \" \\ \/ stand for themselves */
                        continue;
                }
                unsigned cp = i + 4 < end ? hex4(sc->s + i + 1) : 0xfffd;
                i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < end && sc->s[i + 1] == '\\' && sc->s[i + 2] == 'u') {
                        unsigned lo = hex4(sc->s + i + 3);
                        if (lo >= 0xdc00 && lo < 0xe000) {
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                                i += 6;
                        }
                }
                if (cp >= 0xd800 && cp < 0xe000)
                        cp = 0xfffd;
                n += put_utf8(out + n, cp);
        }
        out[n] = '\0';
        *ret = out;
        return 0;
}

/* Paths longer than JSON_PATH_MAX are cut; they only serve error details. */
static void path_printf(char buf[JSON_PATH_MAX], const char *fmt, ...) _printf_(2, 3);
static void path_printf(char buf[JSON_PATH_MAX], const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(buf, JSON_PATH_MAX, fmt, ap);
        va_end(ap);
}

static void child_path(char buf[JSON_PATH_MAX], const char *path, const char *key) {
        char sh[SHOWN_MAX + 4];
        path_printf(buf, "%s%s%s", path, path[0] ? "." : "", text_shown(key, sh));
}

static int scan_value(Scan *sc, const char *path, int depth);

static int scan_object(Scan *sc, const char *path, int depth) {
        _cleanup_(json_unrefp) JsonValue *seen = json_object_new_object();
        char sub[JSON_PATH_MAX];
        int r;

        if (!seen)
                return err_set(-ENOMEM, "out of memory");
        sc->pos++; /* '{' */
        for (;;) {
                scan_ws(sc);
                if (sc->pos >= sc->len || sc->s[sc->pos] == '}') {
                        sc->pos++;
                        return 0;
                }
                if (sc->s[sc->pos] == ',') {
                        sc->pos++;
                        continue;
                }
                if (sc->s[sc->pos] != '"')
                        return syntax_error(sc->s, sc->pos, "member names must be in double quotes");
                _cleanup_free_ char *key = NULL;
                if ((r = scan_string(sc, &key)) < 0)
                        return r;
                child_path(sub, path, key);
                if (json_object_object_get_ex(seen, key, NULL))
                        return err_set(-EINVAL, "'%s' appears more than once", sub);
                if (json_object_object_add(seen, key, NULL) < 0)
                        return err_set(-ENOMEM, "out of memory");
                scan_ws(sc);
                sc->pos++; /* ':' */
                if ((r = scan_value(sc, sub, depth + 1)) < 0)
                        return r;
        }
}

static int scan_value(Scan *sc, const char *path, int depth) {
        char sub[JSON_PATH_MAX];
        int r;

        scan_ws(sc);
        if (sc->pos >= sc->len || depth > sc->max_depth)
                return 0;
        char c = sc->s[sc->pos];
        if (c == '{')
                return scan_object(sc, path, depth);
        if (c == '[') {
                sc->pos++;
                for (size_t i = 0;; i++) {
                        scan_ws(sc);
                        if (sc->pos >= sc->len || sc->s[sc->pos] == ']') {
                                sc->pos++;
                                return 0;
                        }
                        if (sc->s[sc->pos] == ',') {
                                sc->pos++;
                                i--;
                                continue;
                        }
                        path_printf(sub, "%s[%zu]", path, i);
                        if ((r = scan_value(sc, sub, depth + 1)) < 0)
                                return r;
                }
        }
        if (c == '"')
                return scan_string(sc, NULL);
        if (c == '\'')
                return syntax_error(sc->s, sc->pos, "strings must be in double quotes");
        while (sc->pos < sc->len && !strchr(",]} \t\r\n", sc->s[sc->pos]))
                sc->pos++;
        return 0;
}

/* ---- parsing ---- */

int json_parse(const char *text, size_t len, const JsonParseOptions *opt, JsonValue **ret_root) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        int depth = opt->max_depth ? (int) MIN(opt->max_depth, JSON_DEPTH_LIMIT) : JSON_DEPTH_DEFAULT;
        enum json_tokener_error e;
        size_t end;
        int r;

        if (len > opt->max_bytes)
                return err_set(-E2BIG, "%zu bytes, more than the limit of %zu", len, opt->max_bytes);
        if (!text || len == 0)
                return err_set(-EINVAL, "empty document");
        if (len > INT32_MAX)
                return err_set(-E2BIG, "%zu bytes, more than the parser takes", len);
        const char *nul = memchr(text, '\0', len);
        if (nul) {
                unsigned line, col;
                line_col(text, (size_t) (nul - text), &line, &col);
                return err_set(-EINVAL, "NUL byte at line %u, column %u", line, col);
        }
        size_t bad_utf8 = text_utf8_invalid_at(text, len); /* json-c's own check lets overlong forms through */
        if (bad_utf8 < len)
                return syntax_error(text, bad_utf8, "invalid UTF-8");
        if (!(tok = json_tokener_new_ex(depth)))
                return err_set(-ENOMEM, "out of memory");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 |
                                    JSON_TOKENER_ALLOW_TRAILING_CHARS);
        root = json_tokener_parse_ex(tok, text, (int) len);
        e = json_tokener_get_error(tok);
        end = json_tokener_get_parse_end(tok);
        if (!root && e == json_tokener_continue) {
                root = json_tokener_parse_ex(tok, " ", 1); /* ends a bare number */
                e = json_tokener_get_error(tok);
                end = len;
        }
        if (e == json_tokener_continue)
                return err_set(-EINVAL, "truncated JSON (the document ends inside a value)");
        if (e != json_tokener_success)
                return syntax_error(text, MIN(end, len), json_tokener_error_desc(e));
        for (size_t i = end; i < len; i++)
                if (!strchr(" \t\r\n", text[i]))
                        return syntax_error(text, i, "trailing data after the JSON value");
        if (!opt->any_value && !json_object_is_type(root, json_type_object)) {
                JsonNode n = { .value = root };
                return err_set(-EINVAL, "must be a JSON object, not %s", json_type_name(&n));
        }
        if (!opt->skip_repeat_check) {
                Scan sc = { .s = text, .len = end, .max_depth = depth };
                if ((r = scan_value(&sc, "", 0)) < 0)
                        return r;
        }
        *ret_root = TAKE_PTR(root);
        return 0;
}

int json_parse_object(const char *text, size_t len, size_t max_bytes, JsonValue **ret_root) {
        return json_parse(text, len, &(JsonParseOptions){ .max_bytes = max_bytes }, ret_root);
}

int json_parse_file(const char *path, size_t max_bytes, JsonValue **ret_root) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;

        if (fd < 0)
                return err_set(-errno, "cannot open: %s", strerror(errno));
        if (max_bytes >= SIZE_MAX - 1 || !(buf = malloc(max_bytes + 1)))
                return err_set(-ENOMEM, "out of memory");
        for (;;) {
                ssize_t n = read(fd, buf + len, max_bytes + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return err_set(-errno, "cannot read: %s", strerror(errno));
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > max_bytes)
                        return err_set(-E2BIG, "larger than the limit of %zu bytes", max_bytes);
        }
        return json_parse_object(buf, len, max_bytes, ret_root);
}

void json_unref(JsonValue *v) {
        json_object_put(v);
}

void json_node_root(JsonValue *root, JsonNode *ret) {
        ret->value = root;
        ret->path[0] = '\0';
}

/* ---- reading values ---- */

/* "'<path>' <detail>", -EINVAL. */
static int bad(const JsonNode *n, const char *fmt, ...) _printf_(2, 3);
static int bad(const JsonNode *n, const char *fmt, ...) {
        char detail[ERR_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
        if (!n->path[0])
                return err_set(-EINVAL, "the document %s", detail);
        return err_set(-EINVAL, "'%s' %s", n->path, detail);
}

const char *json_type_name(const JsonNode *n) {
        switch (json_object_get_type(n->value)) {
        case json_type_null:
                return "null";
        case json_type_boolean:
                return "a boolean";
        case json_type_double:
                return "a fractional number";
        case json_type_int:
                return "an integer";
        case json_type_object:
                return "an object";
        case json_type_array:
                return "an array";
        case json_type_string:
                return "a string";
        }
        return "unknown";
}

static int want(const JsonNode *n, json_type t, const char *what) {
        if (json_object_is_type(n->value, t))
                return 0;
        return bad(n, "must be %s, not %s", what, json_type_name(n));
}

bool json_is_object(const JsonNode *n) {
        return json_object_is_type(n->value, json_type_object);
}

bool json_is_array(const JsonNode *n) {
        return json_object_is_type(n->value, json_type_array);
}

bool json_is_null(const JsonNode *n) {
        return json_object_is_type(n->value, json_type_null);
}

bool json_is_string(const JsonNode *n) {
        return json_object_is_type(n->value, json_type_string);
}

int json_read_string_ref(const JsonNode *n, const char **ret, size_t *ret_len) {
        int r = want(n, json_type_string, "a string");
        if (r < 0)
                return r;
        const char *s = json_object_get_string(n->value);
        size_t len = (size_t) json_object_get_string_len(n->value);
        if (strlen(s) != len)
                return bad(n, "must not contain NUL characters");
        *ret = s;
        if (ret_len)
                *ret_len = len;
        return 0;
}

int json_read_string(const JsonNode *n, char *buf, size_t size) {
        const char *s;
        size_t len;
        int r = json_read_string_ref(n, &s, &len);
        if (r < 0)
                return r;
        if (len >= size)
                return bad(n, "is too long (%zu bytes, at most %zu)", len, size - 1);
        memcpy(buf, s, len + 1);
        return 0;
}

int json_read_bool(const JsonNode *n, bool *ret) {
        int r = want(n, json_type_boolean, "a boolean");
        if (r < 0)
                return r;
        *ret = json_object_get_boolean(n->value);
        return 0;
}

int json_read_i64(const JsonNode *n, int64_t min, int64_t max, int64_t *ret) {
        int r = want(n, json_type_int, "an integer");
        if (r < 0)
                return r;
        int64_t x = json_object_get_int64(n->value); /* saturates: out of range either way */
        if (x < min || x > max)
                return bad(n, "must be between %" PRId64 " and %" PRId64 ", not %s", min, max,
                           json_object_to_json_string(n->value));
        *ret = x;
        return 0;
}

int json_read_u64(const JsonNode *n, uint64_t min, uint64_t max, uint64_t *ret) {
        int r = want(n, json_type_int, "an integer");
        if (r < 0)
                return r;
        bool negative = json_object_get_int64(n->value) < 0;
        uint64_t x = json_object_get_uint64(n->value);
        if (negative || x < min || x > max)
                return bad(n, "must be between %" PRIu64 " and %" PRIu64 ", not %s", min, max,
                           json_object_to_json_string(n->value));
        *ret = x;
        return 0;
}

int json_read_u32(const JsonNode *n, uint32_t min, uint32_t max, uint32_t *ret) {
        uint64_t x;
        int r = json_read_u64(n, min, max, &x);
        if (r < 0)
                return r;
        *ret = (uint32_t) x;
        return 0;
}

int json_read_number(const JsonNode *n, double *ret) {
        if (!json_object_is_type(n->value, json_type_int) && !json_object_is_type(n->value, json_type_double))
                return bad(n, "must be a number, not %s", json_type_name(n));
        double x = json_object_get_double(n->value);
        if (!isfinite(x))
                return bad(n, "must be a finite number, not %s", json_object_to_json_string(n->value));
        *ret = x;
        return 0;
}

int json_node_to_string(const JsonNode *n, char **ret) {
        const char *s = json_object_to_json_string_ext(n->value, JSON_C_TO_STRING_PLAIN |
                                                                       JSON_C_TO_STRING_NOSLASHESCAPE);
        char *copy = s ? strdup(s) : NULL;
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        return 0;
}

int json_want_object(const JsonNode *n) {
        return want(n, json_type_object, "an object");
}

int json_want_array(const JsonNode *n, size_t max, size_t *ret_len) {
        int r = want(n, json_type_array, "an array");
        if (r < 0)
                return r;
        size_t len = json_object_array_length(n->value);
        if (len > max)
                return bad(n, "has %zu entries, at most %zu are allowed", len, max);
        if (ret_len)
                *ret_len = len;
        return 0;
}

void json_array_at(const JsonNode *arr, size_t i, JsonNode *ret) {
        ret->value = json_object_array_get_idx(arr->value, i);
        path_printf(ret->path, "%s[%zu]", arr->path, i);
}

/* ---- reading members ---- */

int json_member(const JsonNode *obj, const char *key, bool required, JsonNode *ret) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(obj->value, key, &v)) {
                if (!required)
                        return 0;
                JsonNode missing;
                child_path(missing.path, obj->path, key);
                return bad(&missing, "is required");
        }
        ret->value = v;
        child_path(ret->path, obj->path, key);
        return 1;
}

/* The member getters: look up, read into a temporary, store on success. */
#define GET_MEMBER(obj, key, required, read)                      \
        ({                                                        \
                JsonNode m_;                                      \
                int r_ = json_member(obj, key, required, &m_);    \
                if (r_ > 0) {                                     \
                        int e_ = (read);                          \
                        if (e_ < 0)                               \
                                r_ = e_;                          \
                }                                                 \
                r_;                                               \
        })

int json_get_string(const JsonNode *obj, const char *key, bool required, char *buf, size_t size) {
        return GET_MEMBER(obj, key, required, json_read_string(&m_, buf, size));
}

int json_get_bool(const JsonNode *obj, const char *key, bool required, bool *ret) {
        return GET_MEMBER(obj, key, required, json_read_bool(&m_, ret));
}

int json_get_i64(const JsonNode *obj, const char *key, bool required, int64_t min, int64_t max, int64_t *ret) {
        return GET_MEMBER(obj, key, required, json_read_i64(&m_, min, max, ret));
}

int json_get_u64(const JsonNode *obj, const char *key, bool required, uint64_t min, uint64_t max,
                 uint64_t *ret) {
        return GET_MEMBER(obj, key, required, json_read_u64(&m_, min, max, ret));
}

int json_get_u32(const JsonNode *obj, const char *key, bool required, uint32_t min, uint32_t max,
                 uint32_t *ret) {
        return GET_MEMBER(obj, key, required, json_read_u32(&m_, min, max, ret));
}

int json_get_object(const JsonNode *obj, const char *key, bool required, JsonNode *ret) {
        JsonNode m;
        int r = json_member(obj, key, required, &m);
        if (r <= 0)
                return r;
        if ((r = json_want_object(&m)) < 0)
                return r;
        *ret = m;
        return 1;
}

int json_get_array(const JsonNode *obj, const char *key, bool required, size_t max, JsonNode *ret,
                   size_t *ret_len) {
        JsonNode m;
        int r = json_member(obj, key, required, &m);
        if (r <= 0)
                return r;
        if ((r = json_want_array(&m, max, ret_len)) < 0)
                return r;
        *ret = m;
        return 1;
}

/* ---- lenient members ---- */

/* Member @key of @obj when @obj is an object and the member has type @t
 * (json-c's null is a NULL value, which has no other type). */
static json_object *lenient_member(const JsonNode *obj, const char *key, json_type t) {
        json_object *v = NULL;
        if (!json_object_is_type(obj->value, json_type_object) ||
            !json_object_object_get_ex(obj->value, key, &v) || !json_object_is_type(v, t))
                return NULL;
        return v;
}

bool json_get_u64_lenient(const JsonNode *obj, const char *key, uint64_t min, uint64_t max,
                          uint64_t *ret) {
        json_object *v = lenient_member(obj, key, json_type_int);
        if (!v || json_object_get_int64(v) < 0)
                return false;
        uint64_t x = json_object_get_uint64(v); /* saturates: out of range unless max is UINT64_MAX */
        if (x < min || x > max)
                return false;
        *ret = x;
        return true;
}

bool json_get_i64_lenient(const JsonNode *obj, const char *key, int64_t min, int64_t max,
                          int64_t *ret) {
        json_object *v = lenient_member(obj, key, json_type_int);
        if (!v)
                return false;
        int64_t x = json_object_get_int64(v);
        if (x < min || x > max)
                return false;
        *ret = x;
        return true;
}

bool json_get_bool_lenient(const JsonNode *obj, const char *key, bool *ret) {
        json_object *v = lenient_member(obj, key, json_type_boolean);
        if (!v)
                return false;
        *ret = json_object_get_boolean(v);
        return true;
}

bool json_get_number_lenient(const JsonNode *obj, const char *key, double *ret) {
        json_object *v = lenient_member(obj, key, json_type_int);
        if (!v)
                v = lenient_member(obj, key, json_type_double);
        if (!v || !isfinite(json_object_get_double(v)))
                return false;
        *ret = json_object_get_double(v);
        return true;
}

bool json_get_string_lenient(const JsonNode *obj, const char *key, const char **ret) {
        json_object *v = lenient_member(obj, key, json_type_string);
        if (!v || strlen(json_object_get_string(v)) != (size_t) json_object_get_string_len(v))
                return false;
        *ret = json_object_get_string(v);
        return true;
}

bool json_get_object_lenient(const JsonNode *obj, const char *key, JsonNode *ret) {
        json_object *v = lenient_member(obj, key, json_type_object);
        if (!v)
                return false;
        ret->value = v;
        child_path(ret->path, obj->path, key);
        return true;
}

bool json_get_array_lenient(const JsonNode *obj, const char *key, JsonNode *ret, size_t *ret_len) {
        json_object *v = lenient_member(obj, key, json_type_array);
        if (!v)
                return false;
        ret->value = v;
        child_path(ret->path, obj->path, key);
        if (ret_len)
                *ret_len = json_object_array_length(v);
        return true;
}

void json_iter_init(JsonIter *it, const JsonNode *obj) {
        it->obj = obj;
        it->next = lh_table_head(json_object_get_object(obj->value));
}

bool json_iter_next(JsonIter *it, const char **ret_key, JsonNode *ret_member) {
        struct lh_entry *e = it->next;
        if (!e)
                return false;
        it->next = lh_entry_next(e);
        *ret_key = lh_entry_k(e);
        ret_member->value = lh_entry_v(e);
        child_path(ret_member->path, it->obj->path, *ret_key);
        return true;
}

int json_check_members(const JsonNode *obj, const char *const *known) {
        JsonIter it;
        const char *key;
        JsonNode m;

        for (json_iter_init(&it, obj); json_iter_next(&it, &key, &m);) {
                const char *const *k = known;
                while (*k && strcmp(*k, key) != 0)
                        k++;
                if (!*k)
                        return bad(&m, "is not a known member");
        }
        return 0;
}

/* ---- writing ---- */

JsonValue *json_new_object(void) {
        return json_object_new_object();
}

JsonValue *json_new_array(void) {
        return json_object_new_array();
}

int json_add(JsonValue *obj, const char *key, JsonValue *v) {
        if (!obj || !v || json_object_object_add(obj, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

int json_append(JsonValue *arr, JsonValue *v) {
        if (!arr || !v || json_object_array_add(arr, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

int json_add_string(JsonValue *obj, const char *key, const char *s) {
        return json_add(obj, key, json_object_new_string(s ? s : ""));
}

int json_add_i64(JsonValue *obj, const char *key, int64_t x) {
        return json_add(obj, key, json_object_new_int64(x));
}

int json_add_u64(JsonValue *obj, const char *key, uint64_t x) {
        return json_add(obj, key, json_object_new_uint64(x));
}

int json_add_double(JsonValue *obj, const char *key, double x) {
        return json_add(obj, key, json_object_new_double(x));
}

int json_add_bool(JsonValue *obj, const char *key, bool b) {
        return json_add(obj, key, json_object_new_boolean(b));
}

int json_to_string(JsonValue *v, bool pretty, char **ret) {
        int flags = (pretty ? JSON_C_TO_STRING_PRETTY : JSON_C_TO_STRING_PLAIN) | JSON_C_TO_STRING_NOSLASHESCAPE;
        const char *s = v ? json_object_to_json_string_ext(v, flags) : NULL;
        char *copy = s ? strdup(s) : NULL;
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        return 0;
}

int json_quote(const char *s, char **ret) {
        _cleanup_(json_unrefp) JsonValue *v = json_object_new_string(s ? s : "");
        return v ? json_to_string(v, false, ret) : -ENOMEM;
}
