/* core/text: the bounded append every list-building loop uses, and the
 * UTF-8 repairs that keep guest and QEMU text valid in protobuf strings. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "text.h"

/* Appending never writes past the buffer, however long the pieces, and a
 * cut list ends with the mark and takes nothing more. */
static void test_append_never_writes_past_the_buffer(void **state) {
        char buf[40 + 16];
        memset(buf, 'Z', sizeof(buf));
        buf[0] = '\0';
        size_t n = 0;
        char long_name[300];
        memset(long_name, 'n', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = '\0';
        for (int i = 0; i < 100; i++) {
                n = text_append(buf, 40, n, "%s%s", i ? ", " : "", i == 1 ? long_name : "g");
                assert_true(n < 40);
                assert_int_equal(strlen(buf), n);
        }
        for (size_t i = 40; i < sizeof(buf); i++)
                assert_int_equal(buf[i], 'Z'); /* nothing past the buffer */
        assert_int_equal(n, 39);
        assert_memory_equal(buf + n - 3, TEXT_CUT_MARK, 3);
        assert_memory_equal(buf, "g, nnn", 6);

        /* a piece that fits after a cut is not appended behind the mark */
        n = text_append(buf, 40, n, "x");
        assert_int_equal(n, 39);
        assert_memory_equal(buf + n - 3, TEXT_CUT_MARK, 3);

        /* what fits is appended whole */
        char small[16] = "";
        n = text_append(small, sizeof(small), 0, "%d", 12);
        n = text_append(small, sizeof(small), n, "-%s", "ab");
        assert_string_equal(small, "12-ab");
        assert_int_equal(n, 5);

        /* a length past the end (a caller's snprintf) reads as a full buffer */
        char full[8];
        memcpy(full, "abcdefg", 8); /* as snprintf leaves "abcdefghij" cut */
        n = text_append(full, sizeof(full), 10, "more");
        assert_true(n < sizeof(full));
        assert_string_equal(full, "abcd" TEXT_CUT_MARK);
}

/* A cut never splits a character. */
static void test_append_cuts_at_a_character_boundary(void **state) {
        char buf[12] = "";
        /* "é" is 2 bytes: 8 of them do not fit in 11 */
        size_t n = text_append(buf, sizeof(buf), 0, "%s", "éééééééé");
        assert_true(text_utf8_valid(buf));
        assert_string_equal(buf, "éééé" TEXT_CUT_MARK);
        assert_int_equal(n, strlen(buf));
}

static void test_utf8_checks_and_repair(void **state) {
        assert_true(text_utf8_valid("plain ascii"));
        assert_true(text_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
        assert_false(text_utf8_valid("\xff"));
        assert_false(text_utf8_valid("\xc0\xaf"));         /* overlong '/' */
        assert_false(text_utf8_valid("\xed\xa0\x80"));     /* a surrogate */
        assert_false(text_utf8_valid("\xf4\x90\x80\x80")); /* past U+10FFFF */
        assert_false(text_utf8_valid("ab\xc3"));           /* cut */
        assert_int_equal(text_utf8_invalid_at("ab\xc3", 3), 2);

        char *out = (char *) 1;
        size_t len = 0;
        assert_int_equal(text_utf8_sanitize("fine \xc3\xa9", 7, &out, &len), 0);
        assert_null(out);
        const char bad[] = "host\xff\xfe-\xc3(\xe2\x82";
        assert_int_equal(text_utf8_sanitize(bad, sizeof(bad) - 1, &out, &len), 4);
        assert_string_equal(out, "host\xef\xbf\xbd\xef\xbf\xbd-\xef\xbf\xbd(\xef\xbf\xbd");
        assert_int_equal(len, strlen(out));
        assert_true(text_utf8_valid(out));
        free(out);

        char cut[] = "abc\xe2\x82";
        assert_int_equal(text_utf8_trim(cut), 3);
        assert_string_equal(cut, "abc");
        char whole[] = "abc\xe2\x82\xac";
        assert_int_equal(text_utf8_trim(whole), 6);
}

/* An error detail cut to ERR_MSG_MAX stays valid UTF-8 (details reach
 * protobuf strings: a guest's error text in last_error, for one). */
static void test_error_details_are_cut_at_a_character_boundary(void **state) {
        char *many = malloc(3 * ERR_MSG_MAX);
        many[0] = '\0';
        for (size_t i = 0; i + 2 < 3 * ERR_MSG_MAX - 1; i += 2)
                strcat(many, "é");
        for (int shift = 0; shift < 4; shift++) {
                err_set(-EIO, "%.*s%s", shift, "xxx", many);
                assert_true(text_utf8_valid(err_msg()));
                err_set(-EIO, "%s", many + 2);
                err_prefix(-EIO, "%.*s%s", shift, "xxx", many);
                assert_true(text_utf8_valid(err_msg()));
        }
        free(many);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_append_never_writes_past_the_buffer),
                cmocka_unit_test(test_append_cuts_at_a_character_boundary),
                cmocka_unit_test(test_utf8_checks_and_repair),
                cmocka_unit_test(test_error_details_are_cut_at_a_character_boundary),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
