/* Unit tests for the strict JSON reader and writer (core/json.c) and the
 * JSON form of the migration parameters (core/migparams.c): every getter,
 * the exact text of every error, repeated members at any depth, line and
 * column of syntax errors, size limits and invalid UTF-8; the parse
 * options and lenient getters the QMP and QGA wires use. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "json.h"
#include "migparams.h"

/* Parse @text; the test fails unless that succeeds. */
static JsonValue *parse_ok(const char *text, JsonNode *ret_root) {
        JsonValue *root = NULL;
        err_clear();
        if (json_parse_object(text, strlen(text), 65536, &root) < 0)
                fail_msg("'%s': %s", text, err_msg());
        json_node_root(root, ret_root);
        return root;
}

/* Parse @text expecting @err and exactly @detail. */
static void parse_bad(const char *text, size_t len, size_t max, int err, const char *detail) {
        JsonValue *root = (JsonValue *) 0x1;
        err_clear();
        int r = json_parse_object(text, len, max, &root);
        if (r != err || strcmp(err_msg(), detail) != 0)
                fail_msg("'%s'\n  got %d '%s'\n want %d '%s'", text, r, err_msg(), err, detail);
        assert_ptr_equal(root, (JsonValue *) 0x1); /* untouched on failure */
}

#define BAD(text, detail) parse_bad(text, strlen(text), 65536, -EINVAL, detail)

static void test_syntax_errors_name_line_and_column(void **state) {
        BAD("{\"a\":1 x}", "invalid JSON at line 1, column 8: object value separator ',' expected");
        BAD("{\n  \"a\": 1,\n  \"b\": tru\n}", "invalid JSON at line 3, column 11: boolean expected");
        BAD("{\"a\":1,}", "invalid JSON at line 1, column 8: unexpected character");
        BAD("{\"a\":01}", "invalid JSON at line 1, column 8: number expected");
        BAD("{} x", "invalid JSON at line 1, column 4: trailing data after the JSON value");
        BAD("{}\n{}", "invalid JSON at line 2, column 1: trailing data after the JSON value");
        BAD("{'a':1}", "invalid JSON at line 1, column 2: member names must be in double quotes");
        BAD("{\"a\":[1,'x']}", "invalid JSON at line 1, column 9: unexpected character");
        BAD("{\"a\":", "truncated JSON (the document ends inside a value)");
        BAD("[1,2", "truncated JSON (the document ends inside a value)");
        BAD("", "empty document");
        parse_bad(NULL, 0, 100, -EINVAL, "empty document");
        parse_bad("{}\n \0{}", 6, 100, -EINVAL, "NUL byte at line 2, column 2");
        /* trailing white space is fine */
        JsonNode n;
        json_unref(parse_ok(" {\"a\":1}\n\t\r\n ", &n));
}

static void test_not_an_object(void **state) {
        BAD("[]", "must be a JSON object, not an array");
        BAD("null", "must be a JSON object, not null");
        BAD("12", "must be a JSON object, not an integer");
        BAD("1.5", "must be a JSON object, not a fractional number");
        BAD("\"x\"", "must be a JSON object, not a string");
        BAD("true", "must be a JSON object, not a boolean");
}

static void test_size_and_encoding(void **state) {
        parse_bad("{\"a\":12345}", 11, 10, -E2BIG, "11 bytes, more than the limit of 10");
        json_unref(parse_ok("{\"a\":\"caf\xc3\xa9\"}", &(JsonNode){ 0 }));
        BAD("{\"a\":\"\xff\xfe\"}", "invalid JSON at line 1, column 7: invalid UTF-8");
        /* a cut sequence: the byte that should have continued it */
        BAD("{\"a\":\"\xc3\"}", "invalid JSON at line 1, column 8: invalid UTF-8");
        BAD("{\"a\":\"\xe2\x82\"}", "invalid JSON at line 1, column 9: invalid UTF-8");
        /* overlong forms, surrogates, beyond U+10FFFF; in names too */
        BAD("{\"\xc0\xaf\":1}", "invalid JSON at line 1, column 3: invalid UTF-8");
        BAD("{\"a\":\"\xe0\x80\xaf\"}", "invalid JSON at line 1, column 7: invalid UTF-8");
        BAD("{\"a\":\"\xed\xa0\x80\"}", "invalid JSON at line 1, column 7: invalid UTF-8");
        BAD("{\"a\":\"\xf4\x90\x80\x80\"}", "invalid JSON at line 1, column 7: invalid UTF-8");
        json_unref(parse_ok("{\"a\":\"\xf0\x9f\x98\x80\xef\xbf\xbf\"}", &(JsonNode){ 0 }));
}

static void test_repeated_members_named_with_path(void **state) {
        BAD("{\"a\":1,\"b\":2,\"a\":3}", "'a' appears more than once");
        BAD("{\"x\":{\"y\":{\"z\":1,\"z\":1}}}", "'x.y.z' appears more than once");
        BAD("{\"l\":[{\"p\":1},{\"p\":1,\"q\":2,\"p\":3}]}", "'l[1].p' appears more than once");
        /* the same name written two ways is still the same name */
        BAD("{\"name\":1,\"na\\u006de\":2}", "'name' appears more than once");
        BAD("{\"\\u00e9\":1,\"\xc3\xa9\":2}", "'?" "?' appears more than once");
        BAD("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", "'?" "?" "?" "?' appears more than once");
        BAD("{\"a\\\"b\":1,\"a\\u0022b\":2}", "'a\"b' appears more than once");
        /* equal names in different objects are fine */
        JsonNode n;
        json_unref(parse_ok("{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}],\"c\":\"a\\\"a\"}", &n));
}

static void test_string_getters(void **state) {
        JsonNode root;
        JsonValue *t = parse_ok("{\"s\":\"abc\",\"n\":5,\"z\":\"a\\u0000b\",\"u\":\"\\u00e9\"}", &root);
        char buf[4];
        const char *ref;
        size_t len;

        assert_int_equal(json_get_string(&root, "s", true, buf, sizeof(buf)), 1);
        assert_string_equal(buf, "abc");
        assert_int_equal(json_get_string(&root, "absent", false, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "abc"); /* untouched */
        assert_int_equal(json_get_string(&root, "absent", true, buf, sizeof(buf)), -EINVAL);
        assert_string_equal(err_msg(), "'absent' is required");
        assert_int_equal(json_get_string(&root, "s", true, buf, 3), -EINVAL);
        assert_string_equal(err_msg(), "'s' is too long (3 bytes, at most 2)");
        assert_int_equal(json_get_string(&root, "n", true, buf, sizeof(buf)), -EINVAL);
        assert_string_equal(err_msg(), "'n' must be a string, not an integer");
        assert_int_equal(json_get_string(&root, "z", true, buf, sizeof(buf)), -EINVAL);
        assert_string_equal(err_msg(), "'z' must not contain NUL characters");

        JsonNode m;
        assert_int_equal(json_member(&root, "u", true, &m), 1);
        assert_int_equal(json_read_string_ref(&m, &ref, &len), 0);
        assert_int_equal(len, 2);
        assert_string_equal(ref, "\xc3\xa9");
        json_unref(t);
}

static void test_integer_getters(void **state) {
        JsonNode root;
        JsonValue *t = parse_ok("{\"i\":-5,\"u\":18446744073709551615,\"big\":99999999999999999999999,"
                                "\"f\":1.5,\"s\":\"7\",\"z\":0,\"b\":true}",
                                &root);
        int64_t i = 42;
        uint64_t u = 42;
        uint32_t w = 42;

        assert_int_equal(json_get_i64(&root, "i", true, -10, 10, &i), 1);
        assert_int_equal(i, -5);
        assert_int_equal(json_get_i64(&root, "i", true, 0, 10, &i), -EINVAL);
        assert_string_equal(err_msg(), "'i' must be between 0 and 10, not -5");
        assert_int_equal(i, -5);
        assert_int_equal(json_get_i64(&root, "f", true, 0, 10, &i), -EINVAL);
        assert_string_equal(err_msg(), "'f' must be an integer, not a fractional number");
        assert_int_equal(json_get_i64(&root, "s", true, 0, 10, &i), -EINVAL);
        assert_string_equal(err_msg(), "'s' must be an integer, not a string");
        assert_int_equal(json_get_i64(&root, "nope", false, 0, 10, &i), 0);

        assert_int_equal(json_get_u64(&root, "u", true, 0, UINT64_MAX, &u), 1);
        assert_true(u == UINT64_MAX);
        assert_int_equal(json_get_u64(&root, "u", true, 0, 100, &u), -EINVAL);
        assert_string_equal(err_msg(), "'u' must be between 0 and 100, not 18446744073709551615");
        assert_int_equal(json_get_u64(&root, "i", true, 0, 100, &u), -EINVAL);
        assert_string_equal(err_msg(), "'i' must be between 0 and 100, not -5");
        assert_int_equal(json_get_u64(&root, "z", true, 1, 100, &u), -EINVAL);
        assert_string_equal(err_msg(), "'z' must be between 1 and 100, not 0");
        /* beyond uint64: json-c saturates, the range check still refuses */
        assert_int_equal(json_get_u64(&root, "big", true, 0, UINT64_MAX - 1, &u), -EINVAL);
        assert_int_equal(json_get_i64(&root, "big", true, 0, INT64_MAX - 1, &i), -EINVAL);

        assert_int_equal(json_get_u32(&root, "z", true, 0, 5, &w), 1);
        assert_int_equal(w, 0);
        assert_int_equal(json_get_u32(&root, "u", true, 0, UINT32_MAX, &w), -EINVAL);
        assert_string_equal(err_msg(), "'u' must be between 0 and 4294967295, not 18446744073709551615");
        assert_int_equal(json_get_u32(&root, "b", true, 0, 5, &w), -EINVAL);
        assert_string_equal(err_msg(), "'b' must be an integer, not a boolean");
        assert_int_equal(json_get_u32(&root, "nope", true, 0, 5, &w), -EINVAL);
        assert_string_equal(err_msg(), "'nope' is required");
        json_unref(t);
}

static void test_bool_object_array_getters(void **state) {
        JsonNode root, o, a, e;
        JsonValue *t = parse_ok("{\"b\":false,\"n\":null,\"o\":{\"k\":{\"deep\":[1,{\"x\":\"y\"}]}},"
                                "\"a\":[\"p\",2,[]]}",
                                &root);
        bool b = true;
        size_t len = 0;
        char buf[8];

        assert_int_equal(json_get_bool(&root, "b", true, &b), 1);
        assert_false(b);
        assert_int_equal(json_get_bool(&root, "n", true, &b), -EINVAL);
        assert_string_equal(err_msg(), "'n' must be a boolean, not null");
        assert_int_equal(json_get_bool(&root, "n", false, &b), -EINVAL); /* null is not "absent" */
        assert_int_equal(json_get_bool(&root, "o", false, &b), -EINVAL);
        assert_string_equal(err_msg(), "'o' must be a boolean, not an object");

        assert_int_equal(json_get_object(&root, "o", true, &o), 1);
        assert_string_equal(o.path, "o");
        assert_int_equal(json_get_object(&o, "k", true, &o), 1);
        assert_int_equal(json_get_array(&o, "deep", true, 5, &a, &len), 1);
        assert_int_equal(len, 2);
        assert_string_equal(a.path, "o.k.deep");
        json_array_at(&a, 1, &e);
        assert_string_equal(e.path, "o.k.deep[1]");
        assert_true(json_is_object(&e));
        assert_int_equal(json_get_u32(&e, "x", true, 0, 1, &(uint32_t){ 0 }), -EINVAL);
        assert_string_equal(err_msg(), "'o.k.deep[1].x' must be an integer, not a string");
        assert_int_equal(json_get_object(&e, "missing", true, &o), -EINVAL);
        assert_string_equal(err_msg(), "'o.k.deep[1].missing' is required");

        assert_int_equal(json_get_array(&root, "a", true, 2, &a, &len), -EINVAL);
        assert_string_equal(err_msg(), "'a' has 3 entries, at most 2 are allowed");
        assert_int_equal(json_get_array(&root, "a", true, 3, &a, &len), 1);
        json_array_at(&a, 1, &e);
        assert_int_equal(json_read_string(&e, buf, sizeof(buf)), -EINVAL);
        assert_string_equal(err_msg(), "'a[1]' must be a string, not an integer");
        json_array_at(&a, 2, &e);
        assert_true(json_is_array(&e));
        assert_int_equal(json_want_object(&e), -EINVAL);
        assert_string_equal(err_msg(), "'a[2]' must be an object, not an array");
        assert_int_equal(json_get_array(&root, "b", true, 3, &a, &len), -EINVAL);
        assert_string_equal(err_msg(), "'b' must be an array, not a boolean");
        assert_int_equal(json_get_object(&root, "a", true, &o), -EINVAL);
        assert_string_equal(err_msg(), "'a' must be an object, not an array");
        assert_int_equal(json_get_object(&root, "zz", false, &o), 0);
        json_unref(t);
}

static void test_iteration_and_unknown_members(void **state) {
        static const char *const known[] = { "one", "two", NULL };
        JsonNode root, m, o;
        JsonValue *t = parse_ok("{\"one\":1,\"two\":2,\"t\\u0001ree\":{\"x\":1}}", &root);
        JsonIter it;
        const char *key;
        char order[64] = "";

        for (json_iter_init(&it, &root); json_iter_next(&it, &key, &m);) {
                strcat(order, m.path);
                strcat(order, ";");
        }
        assert_string_equal(order, "one;two;t?ree;");
        assert_int_equal(json_check_members(&root, known), -EINVAL);
        assert_string_equal(err_msg(), "'t?ree' is not a known member");
        assert_int_equal(json_get_object(&root, "t\001ree", true, &o), 1);
        assert_int_equal(json_check_members(&o, known), -EINVAL);
        assert_string_equal(err_msg(), "'t?ree.x' is not a known member");
        json_unref(t);

        t = parse_ok("{\"two\":2}", &root);
        assert_int_equal(json_check_members(&root, known), 0);
        json_unref(t);
}

static void test_text_shown(void **state) {
        char sh[SHOWN_MAX + 4], long_text[200];
        assert_string_equal(text_shown("a\tb\xc3\xa9", sh), "a?b??");
        memset(long_text, 'x', sizeof(long_text) - 1);
        long_text[sizeof(long_text) - 1] = '\0';
        text_shown(long_text, sh);
        assert_int_equal(strlen(sh), SHOWN_MAX + 3);
        assert_string_equal(sh + SHOWN_MAX, "...");
}

static void test_writer_round_trip(void **state) {
        JsonValue *o = json_new_object(), *a = json_new_array(), *inner = json_new_object();
        char *text = NULL;
        JsonNode root, arr, e;

        assert_int_equal(json_add_string(o, "s", "a/\"b\""), 0);
        assert_int_equal(json_add_string(o, "null_string", NULL), 0);
        assert_int_equal(json_add_i64(o, "i", -3), 0);
        assert_int_equal(json_add_u64(o, "u", UINT64_MAX), 0);
        assert_int_equal(json_add_double(o, "d", 1.5), 0);
        assert_int_equal(json_add_bool(o, "b", true), 0);
        assert_int_equal(json_add_i64(inner, "k", 1), 0);
        assert_int_equal(json_append(a, inner), 0);
        assert_int_equal(json_add(o, "a", a), 0);
        assert_int_equal(json_to_string(o, false, &text), 0);
        assert_string_equal(text, "{\"s\":\"a/\\\"b\\\"\",\"null_string\":\"\",\"i\":-3,\"u\":18446744073709551615,"
                                  "\"d\":1.5,\"b\":true,\"a\":[{\"k\":1}]}");
        /* what the writer writes, the reader reads */
        JsonValue *t = parse_ok(text, &root);
        uint64_t u;
        assert_int_equal(json_get_u64(&root, "u", true, 0, UINT64_MAX, &u), 1);
        assert_true(u == UINT64_MAX);
        assert_int_equal(json_get_array(&root, "a", true, 1, &arr, NULL), 1);
        json_array_at(&arr, 0, &e);
        assert_int_equal(json_get_i64(&e, "k", true, 1, 1, &(int64_t){ 0 }), 1);
        json_unref(t);
        free(text);

        assert_int_equal(json_to_string(o, true, &text), 0);
        assert_non_null(strchr(text, '\n'));
        free(text);
        json_unref(o);

        /* a failed allocation anywhere surfaces at the next add */
        assert_int_equal(json_add_string(NULL, "k", "v"), -ENOMEM);
        assert_int_equal(json_add(NULL, "k", json_new_object()), -ENOMEM); /* and frees the value */
        assert_int_equal(json_append(NULL, json_new_array()), -ENOMEM);
}

/* Nested arrays @depth deep inside an object: {"a":[[...]]}. */
static char *nested(int depth) {
        char *s = malloc((size_t) depth * 2 + 16);
        int n = sprintf(s, "{\"a\":");
        for (int i = 0; i < depth; i++)
                s[n++] = '[';
        for (int i = 0; i < depth; i++)
                s[n++] = ']';
        strcpy(s + n, "}");
        return s;
}

static void test_parse_options(void **state) {
        JsonParseOptions opt = { .max_bytes = 65536, .any_value = true };
        JsonValue *t = (JsonValue *) 0x1;
        JsonNode n;

        /* any value at the top; JSON null is a NULL tree */
        assert_int_equal(json_parse("[1,2]", 5, &opt, &t), 0);
        json_node_root(t, &n);
        assert_true(json_is_array(&n));
        json_unref(t);
        assert_int_equal(json_parse(" null ", 6, &opt, &t), 0);
        assert_null(t);
        json_node_root(t, &n);
        assert_true(json_is_null(&n));
        assert_string_equal(json_type_name(&n), "null");
        assert_int_equal(json_parse("7", 1, &opt, &t), 0);
        json_node_root(t, &n);
        assert_int_equal(json_read_i64(&n, 0, 10, &(int64_t){ 0 }), 0);
        json_unref(t);
        /* the strict checks still hold */
        assert_int_equal(json_parse("[1] x", 5, &opt, &t), -EINVAL);
        assert_string_equal(err_msg(), "invalid JSON at line 1, column 5: trailing data after the JSON value");
        opt.max_bytes = 4;
        assert_int_equal(json_parse("[1,2]", 5, &opt, &t), -E2BIG);
        opt.max_bytes = 65536;

        /* nesting: JSON_DEPTH_DEFAULT unless asked for more */
        char *deep = nested(JSON_DEPTH_DEFAULT);
        assert_int_equal(json_parse_object(deep, strlen(deep), 65536, &t), -EINVAL);
        assert_non_null(strstr(err_msg(), "nesting too deep"));
        opt.max_depth = 64;
        assert_int_equal(json_parse(deep, strlen(deep), &opt, &t), 0);
        json_unref(t);
        free(deep);
        deep = nested(64);
        assert_int_equal(json_parse(deep, strlen(deep), &opt, &t), -EINVAL);
        assert_non_null(strstr(err_msg(), "nesting too deep"));
        free(deep);

        /* without the second pass a repeated member is json-c's: the last wins */
        static const char rep[] = "{\"a\":1,\"b\":{\"c\":2,\"c\":3},\"a\":4}";
        assert_int_equal(json_parse(rep, strlen(rep), &opt, &t), -EINVAL);
        assert_string_equal(err_msg(), "'b.c' appears more than once");
        opt.skip_repeat_check = true;
        assert_int_equal(json_parse(rep, strlen(rep), &opt, &t), 0);
        json_node_root(t, &n);
        int64_t a = 0;
        assert_int_equal(json_get_i64(&n, "a", true, 0, 10, &a), 1);
        assert_int_equal(a, 4);
        json_unref(t);
}

static void test_lenient_getters(void **state) {
        JsonNode root, o, arr;
        JsonValue *t = parse_ok("{\"u\":7,\"neg\":-3,\"max\":18446744073709551615,\"big\":99999999999999999999999,"
                                "\"f\":2.5,\"inf\":1e400,\"s\":\"text\",\"nul\":\"a\\u0000b\",\"b\":true,\"n\":null,"
                                "\"o\":{\"k\":1},\"a\":[1,2,3]}",
                                &root);
        uint64_t u = 42;
        int64_t i = 42;
        double d = 42;
        bool b = false;
        const char *str = "untouched";
        size_t len = 0;

        err_set(-EIO, "an earlier error");
        assert_true(json_get_u64_lenient(&root, "u", 0, UINT64_MAX, &u));
        assert_int_equal(u, 7);
        u = 42;
        /* wrong type, null, absent, negative, out of range: absent, output untouched */
        static const char *const not_u64[] = { "f", "s", "b", "n", "o", "a", "missing", "neg" };
        for (size_t k = 0; k < sizeof(not_u64) / sizeof(not_u64[0]); k++)
                assert_false(json_get_u64_lenient(&root, not_u64[k], 0, UINT64_MAX, &u));
        assert_false(json_get_u64_lenient(&root, "u", 8, 100, &u));
        assert_int_equal(u, 42);
        /* beyond uint64 json-c saturates: a max below UINT64_MAX tells it apart */
        assert_true(json_get_u64_lenient(&root, "max", 0, UINT64_MAX, &u));
        assert_true(u == UINT64_MAX);
        assert_false(json_get_u64_lenient(&root, "big", 0, UINT64_MAX - 1, &u));

        assert_true(json_get_i64_lenient(&root, "neg", INT64_MIN, INT64_MAX, &i));
        assert_int_equal(i, -3);
        assert_false(json_get_i64_lenient(&root, "neg", 0, INT64_MAX, &i));
        assert_false(json_get_i64_lenient(&root, "f", INT64_MIN, INT64_MAX, &i));
        assert_int_equal(i, -3);

        assert_true(json_get_number_lenient(&root, "f", &d));
        assert_true(d == 2.5);
        assert_true(json_get_number_lenient(&root, "u", &d));
        assert_true(d == 7.0);
        assert_false(json_get_number_lenient(&root, "inf", &d)); /* not finite */
        assert_false(json_get_number_lenient(&root, "s", &d));
        assert_true(d == 7.0);

        assert_true(json_get_bool_lenient(&root, "b", &b));
        assert_true(b);
        assert_false(json_get_bool_lenient(&root, "n", &b));
        assert_false(json_get_bool_lenient(&root, "u", &b));

        assert_true(json_get_string_lenient(&root, "s", &str));
        assert_string_equal(str, "text");
        assert_false(json_get_string_lenient(&root, "nul", &str)); /* a NUL inside */
        assert_false(json_get_string_lenient(&root, "n", &str));
        assert_string_equal(str, "text");

        assert_true(json_get_object_lenient(&root, "o", &o));
        assert_string_equal(o.path, "o");
        assert_false(json_get_object_lenient(&root, "a", &o));
        assert_true(json_get_array_lenient(&root, "a", &arr, &len));
        assert_int_equal(len, 3);
        assert_string_equal(arr.path, "a");
        assert_false(json_get_array_lenient(&root, "o", &arr, &len));
        /* on something that is not an object every member is absent */
        assert_false(json_get_u64_lenient(&arr, "u", 0, UINT64_MAX, &u));
        assert_false(json_get_string_lenient(&arr, "s", &str));

        assert_string_equal(err_msg(), "an earlier error"); /* never touched */
        json_unref(t);
}

static void test_number_null_and_node_text(void **state) {
        JsonNode root, m;
        JsonValue *t = parse_ok("{\"i\":3,\"f\":-0.5,\"inf\":1e400,\"s\":\"x\",\"n\":null,"
                                "\"o\":{\"p\":\"a/b\",\"q\":[true,null]}}",
                                &root);
        double d = 0;
        char *text = NULL;

        assert_int_equal(json_member(&root, "i", true, &m), 1);
        assert_int_equal(json_read_number(&m, &d), 0);
        assert_true(d == 3.0);
        assert_int_equal(json_member(&root, "f", true, &m), 1);
        assert_int_equal(json_read_number(&m, &d), 0);
        assert_true(d == -0.5);
        assert_int_equal(json_member(&root, "inf", true, &m), 1);
        assert_int_equal(json_read_number(&m, &d), -EINVAL);
        assert_non_null(strstr(err_msg(), "'inf' must be a finite number, not "));
        assert_int_equal(json_member(&root, "s", true, &m), 1);
        assert_true(json_is_string(&m));
        assert_false(json_is_null(&m));
        assert_int_equal(json_read_number(&m, &d), -EINVAL);
        assert_string_equal(err_msg(), "'s' must be a number, not a string");

        assert_int_equal(json_member(&root, "n", true, &m), 1);
        assert_true(json_is_null(&m));
        assert_false(json_is_string(&m));
        assert_int_equal(json_node_to_string(&m, &text), 0);
        assert_string_equal(text, "null");
        free(text);
        assert_int_equal(json_member(&root, "o", true, &m), 1);
        assert_int_equal(json_node_to_string(&m, &text), 0);
        assert_string_equal(text, "{\"p\":\"a/b\",\"q\":[true,null]}");
        free(text);
        json_unref(t);

        assert_int_equal(json_quote("exe/c \"x\"\n", &text), 0);
        assert_string_equal(text, "\"exe/c \\\"x\\\"\\n\"");
        free(text);
}

static void test_text_copy_utf8(void **state) {
        char buf[5];
        text_copy_utf8(buf, sizeof(buf), "abc");
        assert_string_equal(buf, "abc");
        text_copy_utf8(buf, sizeof(buf), "abcdef");
        assert_string_equal(buf, "abcd");
        /* "ab" + U+20AC (3 bytes): the euro sign does not fit and is dropped whole */
        text_copy_utf8(buf, sizeof(buf), "ab\xe2\x82\xac");
        assert_string_equal(buf, "ab");
        text_copy_utf8(buf, sizeof(buf), "a\xc3\xa9\xc3\xa9");
        assert_string_equal(buf, "a\xc3\xa9");
        text_copy_utf8(buf, 1, "abc");
        assert_string_equal(buf, "");
}

static void test_mig_params_json(void **state) {
        MigParams p = { .bandwidth = 1ull << 40, .downtime_ms = 250, .max_downtime_ms = 900, .auto_converge = true,
                        .postcopy = POSTCOPY_POLICY_AFTER, .postcopy_after_s = 7, .multifd_channels = 4,
                        .completion_s_per_gib = 60, .progress_timeout_s = 20, .skip_time_sync = true };
        MigParams q;
        char buf[MIG_PARAMS_JSON_MAX];

        assert_int_equal(mig_params_to_json(&p, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "{\"bandwidth\":1099511627776,\"downtime_ms\":250,\"max_downtime_ms\":900,"
                                 "\"auto_converge\":true,\"postcopy\":\"after\",\"postcopy_after_s\":7,"
                                 "\"multifd_channels\":4,\"completion_s_per_gib\":60,\"progress_timeout_s\":20,"
                                 "\"skip_time_sync\":true}");
        memset(&q, 0x5a, sizeof(q));
        assert_int_equal(mig_params_from_json(buf, strlen(buf), &q), 0);
        assert_true(q.bandwidth == p.bandwidth);
        assert_int_equal(q.downtime_ms, p.downtime_ms);
        assert_int_equal(q.max_downtime_ms, p.max_downtime_ms);
        assert_true(q.auto_converge);
        assert_int_equal(q.postcopy, p.postcopy);
        assert_int_equal(q.postcopy_after_s, p.postcopy_after_s);
        assert_int_equal(q.multifd_channels, p.multifd_channels);
        assert_int_equal(q.completion_s_per_gib, p.completion_s_per_gib);
        assert_int_equal(q.progress_timeout_s, p.progress_timeout_s);
        assert_true(q.skip_time_sync);
        assert_int_equal(mig_params_to_json(&p, buf, 20), -ENOBUFS);

        /* absent members are 0; the integers of PostcopyMode are read too */
        assert_int_equal(mig_params_from_json("{\"postcopy\":1}", 14, &q), 0);
        assert_int_equal(q.postcopy, POSTCOPY_POLICY_ALLOWED);
        assert_int_equal(q.downtime_ms, 0);
        assert_int_equal(mig_params_from_json("{}", 2, &q), 0);
        assert_int_equal(q.postcopy, POSTCOPY_POLICY_NEVER);

        static const struct {
                const char *json, *detail;
        } bad[] = {
                { "{\"postcopy\":\"sometimes\"}", "params: 'postcopy' must be never, allowed or after, not 'sometimes'" },
                { "{\"postcopy\":3}", "params: 'postcopy' must be between 0 and 2, not 3" },
                { "{\"postcopy\":true}", "params: 'postcopy' must be never, allowed or after, not a boolean" },
                { "{\"downtime_ms\":4294967296}", "params: 'downtime_ms' must be between 0 and 4294967295, not 4294967296" },
                { "{\"bandwidth\":-1}", "params: 'bandwidth' must be between 0 and 18446744073709551615, not -1" },
                { "{\"auto_converge\":1}", "params: 'auto_converge' must be a boolean, not an integer" },
                { "{\"downtime\":300}", "params: 'downtime' is not a known member" },
                { "{\"downtime_ms\":1,\"downtime_ms\":2}", "params: 'downtime_ms' appears more than once" },
                { "[]", "params: must be a JSON object, not an array" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                err_clear();
                int r = mig_params_from_json(bad[i].json, strlen(bad[i].json), &q);
                if (r != -EINVAL || strcmp(err_msg(), bad[i].detail) != 0)
                        fail_msg("%s\n  got %d '%s'\n want '%s'", bad[i].json, r, err_msg(), bad[i].detail);
        }

        /* read into existing values: only the members given change */
        JsonNode root;
        JsonValue *t = parse_ok("{\"p\":{\"downtime_ms\":100}}", &root);
        JsonNode o;
        MigParams d = { .max_downtime_ms = 5000, .auto_converge = true };
        assert_int_equal(json_get_object(&root, "p", true, &o), 1);
        assert_int_equal(mig_params_read_json(&o, &d), 0);
        assert_int_equal(d.downtime_ms, 100);
        assert_int_equal(d.max_downtime_ms, 5000);
        assert_true(d.auto_converge);
        json_unref(t);
        t = parse_ok("{\"p\":{\"multifd_channels\":\"4\"}}", &root);
        assert_int_equal(json_get_object(&root, "p", true, &o), 1);
        assert_int_equal(mig_params_read_json(&o, &d), -EINVAL);
        assert_string_equal(err_msg(), "'p.multifd_channels' must be an integer, not a string");
        assert_int_equal(d.downtime_ms, 100); /* nothing written on failure */
        json_unref(t);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_syntax_errors_name_line_and_column),
                cmocka_unit_test(test_not_an_object),
                cmocka_unit_test(test_size_and_encoding),
                cmocka_unit_test(test_repeated_members_named_with_path),
                cmocka_unit_test(test_string_getters),
                cmocka_unit_test(test_integer_getters),
                cmocka_unit_test(test_bool_object_array_getters),
                cmocka_unit_test(test_iteration_and_unknown_members),
                cmocka_unit_test(test_text_shown),
                cmocka_unit_test(test_writer_round_trip),
                cmocka_unit_test(test_parse_options),
                cmocka_unit_test(test_lenient_getters),
                cmocka_unit_test(test_number_null_and_node_text),
                cmocka_unit_test(test_text_copy_utf8),
                cmocka_unit_test(test_mig_params_json),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
