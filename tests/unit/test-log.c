/* core/log: the two line formats (journald's "<N>" stream and the ISO 8601
 * timestamp elsewhere), how the journald stream is recognised, and the
 * fields of log_fields() (words on a line, journal fields in a record). */
#define _GNU_SOURCE
#include <errno.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "log-priv.h"
#include "log.h"
#include "testutil.h"

static char captured[4096];

static void capture(LogLevel level, const char *line, void *opaque) {
        snprintf(captured, sizeof(captured), "%s", line);
}

static bool matches(const char *text, const char *re) {
        regex_t r;
        assert_int_equal(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
        bool m = regexec(&r, text, 0, NULL, 0) == 0;
        regfree(&r);
        return m;
}

/* Run @fn with stderr sent to a fresh file and JOURNAL_STREAM set to
 * @stream ("self": that file's dev:ino; NULL: unset); returns what was
 * written (static). */
static const char *with_stderr(const char *stream, void (*fn)(void)) {
        static char out[4096];
        const char *path = tu_path(tu_tmpdir("log"), "stderr");
        FILE *f = fopen(path, "w+");
        struct stat st;
        char value[64];
        assert_non_null(f);
        assert_int_equal(fstat(fileno(f), &st), 0);
        if (stream && strcmp(stream, "self") == 0) {
                snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev,
                         (unsigned long long) st.st_ino);
                stream = value;
        }
        if (stream)
                setenv("JOURNAL_STREAM", stream, 1);
        else
                unsetenv("JOURNAL_STREAM");
        int saved = dup(STDERR_FILENO);
        dup2(fileno(f), STDERR_FILENO);
        log_reset_journal_detection();
        fn();
        dup2(saved, STDERR_FILENO);
        close(saved);
        log_reset_journal_detection();
        unsetenv("JOURNAL_STREAM");
        rewind(f);
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        fclose(f);
        return out;
}

static void log_two(void) {
        log_info("hello %d", 42);
        log_error("broken");
}

static void log_with_fields(void) {
        log_fields(LOG_LEVEL_WARNING, LOG_FIELDS(.guest = "web1", .phase = "switchover"), "slow %s", "switch");
}

/* Elsewhere: an ISO 8601 UTC timestamp with milliseconds, the level, the place. */
static void test_plain_lines_have_an_iso_timestamp(void **state) {
        log_set_level(LOG_LEVEL_DEBUG);
        const char *out = with_stderr(NULL, log_two);
        assert_true(matches(out, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z info    "
                                 "\\[test-log\\.c:[0-9]+\\] hello 42\n"
                                 "[0-9-]{10}T[0-9:.]{12}Z error   \\[test-log\\.c:[0-9]+\\] broken\n$"));
}

/* JOURNAL_STREAM naming stderr: "<N>" priorities and no timestamp. */
static void test_journal_stream_lines_carry_priorities(void **state) {
        log_set_level(LOG_LEVEL_DEBUG);
        const char *out = with_stderr("self", log_two);
        assert_true(matches(out, "^<6>\\[test-log\\.c:[0-9]+\\] hello 42\n<3>\\[test-log\\.c:[0-9]+\\] broken\n$"));
}

/* Only a JOURNAL_STREAM that names this very stderr counts: a child whose
 * stderr went elsewhere, or a malformed value, gets plain lines. */
static void test_journal_stream_must_name_our_stderr(void **state) {
        const char *bad[] = { "1:2", "", "12", "12:34x", "x:y" };
        log_set_level(LOG_LEVEL_DEBUG);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                const char *out = with_stderr(bad[i], log_two);
                assert_true(matches(out, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T"));
                assert_null(strchr(out, '<'));
        }
}

/* Fields are words at the end of a plain line (and of a sink's line). */
static void test_fields_are_words_on_a_plain_line(void **state) {
        log_set_level(LOG_LEVEL_DEBUG);
        const char *out = with_stderr(NULL, log_with_fields);
        assert_true(matches(out, "Z warning \\[test-log\\.c:[0-9]+\\] slow switch guest=web1 phase=switchover\n$"));

        log_set_sink(capture, NULL);
        log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.job = "j-7", .op = "", .host = "h1"), "moved");
        log_set_sink(NULL, NULL);
        assert_true(matches(captured, "\\] moved job=j-7 host=h1$")); /* "" is left out */

        log_set_level(LOG_LEVEL_ERROR);
        captured[0] = '\0';
        log_set_sink(capture, NULL);
        log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.guest = "x"), "filtered");
        log_set_sink(NULL, NULL);
        assert_string_equal(captured, "");
}

/* The journal record: the fixed fields, then the set ones only. */
static void test_journal_record_has_the_fields(void **state) {
        char buf[512];
        struct iovec iov[LOG_JOURNAL_MAX_IOV];
        int n = log_journal_record(LOG_LEVEL_WARNING, "agent/agent-migrate-out.c", 77,
                                   LOG_FIELDS(.guest = "web1", .op = "op-3", .phase = "switchover"),
                                   "two\nlines", buf, sizeof(buf), iov);
        const char *want[] = { "MESSAGE=two\nlines", "PRIORITY=4", "CODE_FILE=agent-migrate-out.c", "CODE_LINE=77",
                               NULL /* SYSLOG_IDENTIFIER */, "GUEST=web1", "OP=op-3", "PHASE=switchover" };
        assert_int_equal(n, ELEMENTSOF(want));
        for (int i = 0; i < n; i++) {
                char got[128];
                snprintf(got, sizeof(got), "%.*s", (int) iov[i].iov_len, (const char *) iov[i].iov_base);
                if (want[i])
                        assert_string_equal(got, want[i]);
                else
                        assert_true(strncmp(got, "SYSLOG_IDENTIFIER=", 18) == 0);
        }
        /* a record never overruns its buffer */
        char small[40];
        n = log_journal_record(LOG_LEVEL_INFO, "f.c", 1, LOG_FIELDS(.guest = "a-rather-long-guest-name"),
                               "a message longer than the buffer", small, sizeof(small), iov);
        for (int i = 0; i < n; i++)
                assert_true((char *) iov[i].iov_base + iov[i].iov_len < small + sizeof(small));
}

/* Under journald without a journal socket to send the record to, the
 * message still reaches the stream, with its fields as words. */
static void test_fields_fall_back_to_the_stream(void **state) {
        if (access("/run/systemd/journal/socket", F_OK) == 0)
                skip(); /* a real journald would take the record */
        log_set_level(LOG_LEVEL_DEBUG);
        const char *out = with_stderr("self", log_with_fields);
        assert_true(matches(out, "^<4>\\[test-log\\.c:[0-9]+\\] slow switch guest=web1 phase=switchover\n$"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plain_lines_have_an_iso_timestamp),
                cmocka_unit_test(test_journal_stream_lines_carry_priorities),
                cmocka_unit_test(test_journal_stream_must_name_our_stderr),
                cmocka_unit_test(test_fields_are_words_on_a_plain_line),
                cmocka_unit_test(test_journal_record_has_the_fields),
                cmocka_unit_test(test_fields_fall_back_to_the_stream),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
