/* QMP channel behaviour under everything a monitor peer can do wrong or
 * slowly, driven by the fake QEMU: framing, greeting, error replies, events
 * anywhere, malformed / oversized / truncated input, unknown and
 * out-of-order ids, EOF, the wedged state and its recovery, abort latency,
 * one command in flight, the bounded event queue, close with a command in
 * flight.  Each case asserts the documented error code AND its detail text.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "qmp-priv.h"
#include "qmptest.h"

#define STATUS_RUNNING "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}"

/* Assert code and that the detail contains @part. */
#define assert_err(r, code, part)                                                         \
        do {                                                                              \
                int _r = (r);                                                             \
                if (_r != (code) || !strstr(err_msg(), (part)))                           \
                        fprintf(stderr, "got %d '%s', wanted %d '...%s...'\n", _r,        \
                                err_msg(), (code), (part));                               \
                assert_int_equal(_r, (code));                                             \
                assert_non_null(strstr(err_msg(), (part)));                               \
        } while (0)

typedef struct Fixture {
        FakeQemu *fake;
        const char *path;
        EvRec rec;
        QmpMonitor *m;
} Fixture;

/* A fake with the 7.2 greeting and the capabilities negotiation queued. */
static void fx_begin(Fixture *fx) {
        fx->fake = qt_fake(&fx->path);
        evrec_init(&fx->rec);
        fake_expect(fx->fake, "qmp_capabilities", NULL);
        fake_reply(fx->fake, "{\"return\": {}}");
}

static void fx_connect(Fixture *fx) {
        fake_start(fx->fake);
        fx->m = qt_connect(fx->path, &fx->rec);
}

static void fx_end(Fixture *fx, bool expect_clean) {
        int failures = fake_finish(fx->fake, 5000, "faults");
        qmp_monitor_close(fx->m);
        fake_free(fx->fake);
        evrec_destroy(&fx->rec);
        if (expect_clean)
                assert_int_equal(failures, 0);
}

/* ---- greeting and framing ---------------------------------------------- */

static void test_greeting_and_version(void **state) {
        Fixture fx;
        QmpVersion v;
        (void) state;
        fx_begin(&fx);
        fx_connect(&fx);
        qmp_monitor_version(fx.m, &v);
        assert_int_equal(v.major, 7);
        assert_int_equal(v.minor, 2);
        assert_int_equal(v.micro, 22);
        assert_string_equal(v.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
        assert_true(v.oob);
        assert_false(qmp_monitor_is_dead(fx.m));
        assert_false(qmp_monitor_is_wedged(fx.m));
        fx_end(&fx, true);
}

/* LF-only framing, blank lines, unknown greeting members and capabilities,
 * a message split across several writes. */
static void test_framing_tolerance(void **state) {
        Fixture fx;
        QmpVersion v;
        QmpStatus st;
        (void) state;
        fx.fake = qt_fake(&fx.path);
        evrec_init(&fx.rec);
        fake_set_greeting(fx.fake, NULL);
        fake_send(fx.fake,
                  "\n{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 1, \"major\": 99, \"nano\": 4}, "
                  "\"package\": \"\"}, \"capabilities\": [\"future-cap\"], \"extra\": {}}}\n",
                  0, false);
        fake_expect(fx.fake, "qmp_capabilities", NULL);
        fake_send(fx.fake, "{\"return\": {}, \"id\": $ID}\n\r\n\n", 0, true);
        fake_expect(fx.fake, "query-status", NULL);
        fake_send(fx.fake, "{\"return\": {\"status\": \"run", 0, false);
        fake_delay(fx.fake, 30);
        fake_send(fx.fake, "ning\", \"running\": true, \"new-member\": [1, 2]}, \"id\": ", 0, false);
        fake_delay(fx.fake, 30);
        fake_send(fx.fake, "$ID}\r", 0, true);
        fake_delay(fx.fake, 30);
        fake_send(fx.fake, "\n", 0, false);
        fx_connect(&fx);
        qmp_monitor_version(fx.m, &v);
        assert_int_equal(v.major, 99);
        assert_false(v.oob);
        assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        assert_true(st.running);
        assert_int_equal(st.status, RUN_STATE_RUNNING);
        fx_end(&fx, true);
}

static void test_no_greeting_times_out(void **state) {
        Fixture fx;
        QmpMonitor *m = NULL;
        QmpCallbacks cb;
        double t0;
        int r;
        (void) state;
        fx.fake = qt_fake(&fx.path);
        evrec_init(&fx.rec);
        cb = evrec_callbacks(&fx.rec);
        fake_set_greeting(fx.fake, NULL);
        fake_start(fx.fake);
        t0 = qt_now_ms();
        r = qmp_monitor_connect(fx.path, &cb, deadline_in_ms(300), &m);
        assert_err(r, -ETIMEDOUT, "no QMP greeting");
        assert_true(qt_now_ms() - t0 < 1500);
        assert_null(m);
        assert_int_equal(fx.rec.eof_calls, 0);
        fake_free(fx.fake);
        evrec_destroy(&fx.rec);
}

static void test_first_message_not_greeting(void **state) {
        Fixture fx;
        QmpMonitor *m = NULL;
        QmpCallbacks cb;
        (void) state;
        fx.fake = qt_fake(&fx.path);
        evrec_init(&fx.rec);
        cb = evrec_callbacks(&fx.rec);
        fake_set_greeting(fx.fake, "{\"return\": {}}");
        fake_start(fx.fake);
        assert_err(qmp_monitor_connect(fx.path, &cb, deadline_in_ms(2000), &m), -EPROTO,
                   "expected the QMP greeting");
        assert_null(m);
        assert_int_equal(fx.rec.eof_calls, 0); /* connect failed: no callback */
        fake_free(fx.fake);
        evrec_destroy(&fx.rec);
}

static void test_connect_no_listener(void **state) {
        QmpMonitor *m = NULL;
        const char *path;
        FakeQemu *f = qt_fake(&path);
        int r;
        (void) state;
        fake_free(f); /* unlinks the socket */
        r = qmp_monitor_connect(path, NULL, deadline_in_ms(500), &m);
        assert_true(r == -ENOENT || r == -ECONNREFUSED);
        assert_non_null(strstr(err_msg(), path));
        assert_null(m);
        assert_int_equal(qmp_monitor_connect("", NULL, deadline_in_ms(500), &m), -EINVAL);
}

static void test_capabilities_refused(void **state) {
        Fixture fx;
        QmpMonitor *m = NULL;
        (void) state;
        fx.fake = qt_fake(&fx.path);
        evrec_init(&fx.rec);
        fake_expect(fx.fake, "qmp_capabilities", NULL);
        fake_reply(fx.fake, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                            "\"Capabilities negotiation is already complete, command ignored\"}}");
        fake_start(fx.fake);
        assert_err(qmp_monitor_connect(fx.path, NULL, deadline_in_ms(2000), &m), -EOPNOTSUPP,
                   "QMP capabilities negotiation on");
        assert_non_null(strstr(err_msg(), "already complete"));
        assert_null(m);
        assert_int_equal(fake_finish(fx.fake, 2000, "caps"), 0);
        fake_free(fx.fake);
        evrec_destroy(&fx.rec);
}

/* ---- replies ------------------------------------------------------------ */

static void test_error_replies(void **state) {
        Fixture fx;
        char *ret = NULL;
        QmpStatus st;
        (void) state;
        fx_begin(&fx);
        fake_expect_invalid(fx.fake, "no-such-command", NULL);
        fake_reply(fx.fake, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                            "\"The command no-such-command has not been found\"}}");
        fake_expect(fx.fake, "migrate", "{\"uri\": \"unix:/x\"}");
        fake_reply(fx.fake, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                            "\"Can't migrate the vm that was paused due to previous migration\"}}");
        fake_expect(fx.fake, "query-status", NULL);
        fake_reply(fx.fake, "{\"error\": \"bare string error\"}");
        fake_expect(fx.fake, "query-status", NULL);
        fake_reply(fx.fake, STATUS_RUNNING);
        fx_connect(&fx);
        assert_err(qmp_call(fx.m, "no-such-command", NULL, 2000, &ret), -EOPNOTSUPP,
                   "QEMU error CommandNotFound: The command no-such-command has not been found");
        assert_null(ret);
        assert_err(qmp_migrate(fx.m, 2000, "unix:/x", false), -EREMOTEIO,
                   "QEMU error GenericError: Can't migrate the vm that was paused");
        assert_err(qmp_query_status(fx.m, 2000, &st), -EREMOTEIO, "bare string error");
        /* errors leave the channel usable */
        assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        assert_false(qmp_monitor_is_dead(fx.m));
        fx_end(&fx, true);
}

static void test_bad_arguments_not_sent(void **state) {
        Fixture fx;
        (void) state;
        fx_begin(&fx);
        fake_quiet(fx.fake, 300); /* nothing of the below reaches QEMU */
        fx_connect(&fx);
        assert_err(qmp_call(fx.m, "migrate", "[1]", 1000, NULL), -EINVAL, "not a JSON object");
        assert_err(qmp_call(fx.m, "migrate", "{uri:", 1000, NULL), -EINVAL, "not valid JSON");
        assert_err(qmp_call(fx.m, "", NULL, 1000, NULL), -EINVAL, "invalid QMP command name");
        assert_err(qmp_migrate(fx.m, 1000, "", false), -EINVAL, "no URI");
        assert_err(qmp_migrate_continue(fx.m, 1000, "sideways"), -EINVAL, "not a migration status");
        assert_int_equal(qmp_migrate_set_capabilities(fx.m, 1000, 0, true), -EINVAL);
        assert_int_equal(fake_finish(fx.fake, 2000, "bad-args"), 0);
        assert_int_equal(fake_commands_seen(fx.fake), 1); /* qmp_capabilities only */
        fx_end(&fx, true);
}

static void test_reply_without_id(void **state) {
        Fixture fx;
        QmpStatus st;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-status", NULL);
        fake_send(fx.fake, STATUS_RUNNING "\r\n", 0, false); /* no id */
        fx_connect(&fx);
        assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        assert_true(st.running);
        fx_end(&fx, true);
}

/* ---- events ------------------------------------------------------------- */

static void test_events_anywhere_in_order(void **state) {
        Fixture fx;
        QmpStatus st;
        MigrationStats ms;
        (void) state;
        fx_begin(&fx);
        fake_event(fx.fake, "EV_0", "{\"n\": 0}"); /* right after negotiation */
        fake_expect(fx.fake, "query-status", NULL);
        fake_event(fx.fake, "EV_1", "{\"n\": 1}"); /* between command and reply */
        fake_event(fx.fake, "EV_2", NULL);
        fake_reply(fx.fake, STATUS_RUNNING);
        fake_event(fx.fake, "EV_3", "{\"n\": 3}"); /* after the reply, nothing in flight */
        fake_expect(fx.fake, "query-migrate", NULL);
        /* several messages in one write, reply in the middle */
        fake_send(fx.fake,
                  "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"EV_4\"}\r\n"
                  "{\"return\": {\"status\": \"active\"}, \"id\": $ID}\r\n"
                  "{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, \"event\": \"EV_5\", \"data\": {\"n\": 5}}\r\n",
                  0, true);
        fake_event(fx.fake, "MIGRATION", "{\"status\": \"completed\", \"future\": true}");
        fake_event(fx.fake, "SHUTDOWN", "{\"guest\": true, \"reason\": \"guest-shutdown\"}");
        fake_event(fx.fake, "MIGRATION_PASS", "{\"pass\": 3}");
        fx_connect(&fx);
        assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        /* events sent before a reply are handled when the command returns */
        assert_true(evrec_count(&fx.rec) >= 3);
        assert_int_equal(qmp_query_migrate(fx.m, 2000, &ms), 0);
        assert_true(evrec_count(&fx.rec) >= 5);
        assert_int_equal(ms.status, MIGRATION_STATUS_ACTIVE);
        assert_true(evrec_wait(&fx.rec, 9, 3000));
        for (int i = 0; i < 6; i++) {
                char name[16];
                snprintf(name, sizeof(name), "EV_%d", i);
                assert_string_equal(fx.rec.ev[i].name, name);
                assert_int_equal(fx.rec.ev[i].type, QMP_EVENT_OTHER);
                assert_true(fx.rec.ev[i].received_ns > 0);
                if (i > 0)
                        assert_true(fx.rec.ev[i].received_ns >= fx.rec.ev[i - 1].received_ns);
        }
        assert_null(fx.rec.ev[2].data_json);
        assert_string_equal(fx.rec.ev[1].data_json, "{\"n\":1}");
        assert_int_equal(fx.rec.ev[4].qemu_timestamp_us, 1000002);
        assert_int_equal(fx.rec.ev[5].qemu_timestamp_us, 3000004);
        assert_int_equal(fx.rec.ev[6].type, QMP_EVENT_MIGRATION);
        assert_int_equal(fx.rec.ev[6].migration_status, MIGRATION_STATUS_COMPLETED);
        assert_int_equal(fx.rec.ev[7].type, QMP_EVENT_SHUTDOWN);
        assert_true(fx.rec.ev[7].guest);
        assert_string_equal(fx.rec.ev[7].reason, "guest-shutdown");
        assert_int_equal(fx.rec.ev[8].type, QMP_EVENT_MIGRATION_PASS);
        assert_int_equal(fx.rec.ev[8].pass, 3);
        /* handlers run on the monitor's event thread, not the caller's */
        assert_false(pthread_equal(fx.rec.event_thread, pthread_self()));
        fx_end(&fx, true);
}

/* Drop oldest, count, stay bounded, deliver the newest in order. */
static void test_event_queue_overflow(void **state) {
        enum { EXTRA = 100, TOTAL = 1 + QMP_EVENT_QUEUE_MAX + EXTRA };
        Fixture fx;
        char *burst;
        size_t len = 0;
        (void) state;
        fx_begin(&fx);
        fake_event(fx.fake, "EV", "{\"n\": 0}");
        fake_gate(fx.fake);
        burst = malloc((size_t) TOTAL * 96 + 256);
        for (int i = 1; i < TOTAL; i++)
                len += (size_t) sprintf(burst + len,
                                        "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, "
                                        "\"event\": \"EV\", \"data\": {\"n\": %d}}\r\n", i);
        fake_send(fx.fake, burst, len, false);
        free(burst);

        evrec_hold(&fx.rec, true);
        fx_connect(&fx);
        /* the event thread is now stuck in the callback with event 0 */
        for (int i = 0; i < 300 && evrec_in_callback(&fx.rec) == 0; i++)
                sleep_ms(10);
        assert_int_equal(evrec_in_callback(&fx.rec), 1);
        fake_open_gate(fx.fake);
        for (int i = 0; i < 500 && qmp_monitor_events_dropped(fx.m) < EXTRA; i++)
                sleep_ms(10);
        sleep_ms(100); /* and no more than that */
        assert_int_equal(qmp_monitor_events_dropped(fx.m), EXTRA);
        evrec_hold(&fx.rec, false);
        assert_true(evrec_wait(&fx.rec, 1 + QMP_EVENT_QUEUE_MAX, 5000));
        sleep_ms(100);
        assert_int_equal(evrec_count(&fx.rec), 1 + QMP_EVENT_QUEUE_MAX);
        assert_string_equal(fx.rec.ev[0].data_json, "{\"n\":0}");
        for (int i = 1; i <= QMP_EVENT_QUEUE_MAX; i++) {
                char want[32];
                snprintf(want, sizeof(want), "{\"n\":%d}", i + EXTRA);
                assert_string_equal(fx.rec.ev[i].data_json, want);
        }
        fx_end(&fx, true);
}

/* ---- protocol errors kill the monitor ---------------------------------- */

/* Issue query-status, let the fake answer with @raw, expect @code/@part for
 * the call, the eof callback once with the same code, and a dead monitor. */
static void expect_fatal_reply(const char *raw, bool tmpl, bool prev_command, int code,
                               const char *part) {
        Fixture fx;
        QmpStatus st;
        (void) prev_command;
        fx_begin(&fx);
        if (prev_command) {
                fake_expect(fx.fake, "query-status", NULL);
                fake_reply(fx.fake, STATUS_RUNNING);
        }
        fake_expect(fx.fake, "query-status", NULL);
        fake_send(fx.fake, raw, 0, tmpl);
        fx_connect(&fx);
        if (prev_command)
                assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        assert_err(qmp_query_status(fx.m, 2000, &st), code, part);
        assert_true(evrec_wait_eof(&fx.rec, 2000));
        assert_true(qmp_monitor_is_dead(fx.m));
        assert_int_equal(fx.rec.eof_error, code);
        assert_non_null(strstr(fx.rec.eof_reason, part));
        /* dead for good: later commands fail at once with the reason */
        assert_err(qmp_query_status(fx.m, 2000, &st), -ECONNRESET, "monitor is dead");
        assert_non_null(strstr(err_msg(), part));
        sleep_ms(50);
        assert_int_equal(fx.rec.eof_calls, 1);
        fx_end(&fx, true);
}

static void test_malformed_json(void **state) {
        (void) state;
        expect_fatal_reply("{\"return\": {\"status\": }, \"id\": $ID}\r\n", true, false, -EPROTO,
                           "malformed QMP message");
        expect_fatal_reply("{\"return\": {}, \"id\": $ID} trailing\r\n", true, false, -EPROTO,
                           "malformed QMP message (invalid JSON at line 1, column 25: trailing data");
        expect_fatal_reply("{\"return\": {}, \"id\": $ID} {}\r\n", true, false, -EPROTO,
                           "malformed QMP message");
        expect_fatal_reply("{\"return\": {}\r\n", false, false, -EPROTO,
                           "malformed QMP message (truncated JSON (the document ends inside a value))");
        expect_fatal_reply("[1, 2]\r\n", false, false, -EPROTO, "not a JSON object");
        expect_fatal_reply("{\"hello\": 1}\r\n", false, false, -EPROTO, "neither a reply nor an event");
        expect_fatal_reply("{\"event\": 5}\r\n", false, false, -EPROTO,
                           "QMP event: 'event' must be a string, not an integer");
        expect_fatal_reply(FAKE_GREETING_7_2 "\r\n", false, false, -EPROTO, "second QMP greeting");
}

static void test_truncated_then_eof(void **state) {
        static const char partial[] = "{\"return\": {\"status\": \"runn";
        Fixture fx;
        QmpStatus st;
        char want[256];
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-status", NULL);
        fake_send(fx.fake, partial, 0, false);
        fake_close(fx.fake);
        fx_connect(&fx);
        snprintf(want, sizeof(want), "QEMU closed the monitor (EOF) inside a message, %zu bytes truncated",
                 strlen(partial));
        assert_err(qmp_query_status(fx.m, 2000, &st), -ECONNRESET, want);
        assert_true(evrec_wait_eof(&fx.rec, 2000));
        assert_int_equal(fx.rec.eof_error, -ECONNRESET);
        assert_string_equal(fx.rec.eof_reason, want);
        fx_end(&fx, true);
}

static void test_unknown_and_out_of_order_ids(void **state) {
        (void) state;
        /* an id we never sent */
        expect_fatal_reply("{\"return\": {}, \"id\": 999999}\r\n", false, false, -EPROTO,
                           "QMP reply id 999999 unknown");
        /* our id with another JSON type: QEMU preserves the type, so this is
         * not our reply */
        expect_fatal_reply("{\"return\": {}, \"id\": \"$ID\"}\r\n", true, false, -EPROTO, "unknown");
        /* the reply to the previous (already answered) command */
        expect_fatal_reply("{\"return\": {}, \"id\": $PREVID}\r\n", true, true, -EPROTO,
                           "unknown (command in flight has id");
}

static void test_reply_with_nothing_in_flight(void **state) {
        Fixture fx;
        QmpStatus st;
        (void) state;
        fx_begin(&fx);
        fake_gate(fx.fake);
        fake_send(fx.fake, "{\"return\": {}, \"id\": 77}\r\n", 0, false);
        fx_connect(&fx);
        fake_open_gate(fx.fake);
        assert_true(evrec_wait_eof(&fx.rec, 2000));
        assert_int_equal(fx.rec.eof_error, -EPROTO);
        assert_non_null(strstr(fx.rec.eof_reason, "QMP reply id 77 unknown (no command in flight)"));
        assert_err(qmp_query_status(fx.m, 1000, &st), -ECONNRESET, "no command in flight");
        fx_end(&fx, true);
}

static void test_oversized(void **state) {
        Fixture fx;
        QmpStatus st;
        char *ret = NULL;
        (void) state;

        /* exactly the limit is fine */
        fx_begin(&fx);
        fake_expect(fx.fake, "query-status", NULL);
        fake_send_big(fx.fake, QMP_MESSAGE_MAX, true);
        fake_expect(fx.fake, "query-status", NULL);
        fake_reply(fx.fake, STATUS_RUNNING);
        fx_connect(&fx);
        /* the fake's big reply has no id: it answers the command in flight */
        assert_int_equal(qmp_call(fx.m, "query-status", NULL, 10000, &ret), 0);
        assert_non_null(ret);
        assert_true(strlen(ret) > QMP_MESSAGE_MAX - 64);
        assert_memory_equal(ret, "{\"pad\":\"xxx", 11);
        free(ret);
        assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        fx_end(&fx, true);

        /* one byte more, terminated: refused when the line is complete */
        fx_begin(&fx);
        fake_expect(fx.fake, "query-status", NULL);
        fake_send_big(fx.fake, QMP_MESSAGE_MAX + 1, true);
        fx_connect(&fx);
        assert_err(qmp_query_status(fx.m, 10000, &st), -EPROTO, "exceeds the 10485760-byte limit");
        assert_true(evrec_wait_eof(&fx.rec, 2000));
        assert_int_equal(fx.rec.eof_error, -EPROTO);
        fx_end(&fx, true);

        /* endless: refused as soon as the limit is passed, not at the end */
        fx_begin(&fx);
        fake_expect(fx.fake, "query-status", NULL);
        fake_send_big(fx.fake, 3 * QMP_MESSAGE_MAX, false);
        fx_connect(&fx);
        assert_err(qmp_query_status(fx.m, 10000, &st), -EPROTO, "and no end");
        fx_end(&fx, true);
}

/* ---- EOF ---------------------------------------------------------------- */

static void test_eof_idle_after_events(void **state) {
        Fixture fx;
        QmpStatus st;
        (void) state;
        fx_begin(&fx);
        fake_gate(fx.fake); /* after connect returned */
        fake_event(fx.fake, "STOP", NULL);
        fake_event(fx.fake, "SHUTDOWN", "{\"guest\": false, \"reason\": \"host-signal\"}");
        fake_close(fx.fake);
        evrec_hold(&fx.rec, true); /* the eof callback must still come last */
        fx_connect(&fx);
        fake_open_gate(fx.fake);
        sleep_ms(100);
        assert_int_equal(fx.rec.eof_calls, 0);
        evrec_hold(&fx.rec, false);
        assert_true(evrec_wait_eof(&fx.rec, 3000));
        assert_int_equal(evrec_count(&fx.rec), 2); /* both events before the eof */
        assert_int_equal(fx.rec.ev[1].type, QMP_EVENT_SHUTDOWN);
        assert_string_equal(fx.rec.ev[1].reason, "host-signal");
        assert_int_equal(fx.rec.eof_error, -ECONNRESET);
        assert_string_equal(fx.rec.eof_reason, "QEMU closed the monitor (EOF)");
        /* eof on the I/O thread, events on the event thread */
        assert_false(pthread_equal(fx.rec.eof_thread, fx.rec.event_thread));
        assert_true(qmp_monitor_is_dead(fx.m));
        assert_err(qmp_query_status(fx.m, 1000, &st), -ECONNRESET, "monitor is dead");
        sleep_ms(100);
        assert_int_equal(fx.rec.eof_calls, 1);
        fx_end(&fx, true);
}

static void test_eof_during_command(void **state) {
        Fixture fx;
        MigrationStats ms;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-migrate", NULL);
        fake_delay(fx.fake, 100);
        fake_close(fx.fake);
        fx_connect(&fx);
        assert_err(qmp_query_migrate(fx.m, 5000, &ms), -ECONNRESET,
                   "QMP command 'query-migrate' failed: QEMU closed the monitor (EOF)");
        assert_true(evrec_wait_eof(&fx.rec, 2000));
        assert_int_equal(fx.rec.eof_calls, 1);
        fx_end(&fx, true);
}

/* ---- deadlines, wedged, abort, one in flight --------------------------- */

typedef struct Caller {
        QmpMonitor *m;
        const char *command;
        int64_t timeout_ms;
        int r;
        char detail[512];
        double t_end;
        pthread_t thread;
} Caller;

static void *caller_main(void *p) {
        Caller *c = p;
        c->r = qmp_call(c->m, c->command, NULL, c->timeout_ms, NULL);
        snprintf(c->detail, sizeof(c->detail), "%s", err_msg());
        c->t_end = qt_now_ms();
        return NULL;
}

static void caller_start(Caller *c, QmpMonitor *m, const char *command, int64_t timeout_ms) {
        memset(c, 0, sizeof(*c));
        c->m = qmp_monitor_ref(m);
        c->command = command;
        c->timeout_ms = timeout_ms;
        assert_int_equal(pthread_create(&c->thread, NULL, caller_main, c), 0);
}

static void caller_join(Caller *c) {
        pthread_join(c->thread, NULL);
        qmp_monitor_unref(c->m);
}

static void wait_in_flight(QmpMonitor *m) {
        for (int i = 0; i < 500 && !qmp_monitor_command_in_flight(m); i++)
                sleep_ms(2);
        assert_true(qmp_monitor_command_in_flight(m));
}

static void test_wedged_and_recovery(void **state) {
        Fixture fx;
        QmpStatus st;
        double t0, dt;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-status", NULL);
        fake_gate(fx.fake);   /* QEMU hangs */
        fake_quiet(fx.fake, 200); /* -EBUSY calls must not reach QEMU */
        fake_event(fx.fake, "RESUME", NULL);
        fake_reply(fx.fake, STATUS_RUNNING); /* the overdue reply */
        fake_expect(fx.fake, "query-status", NULL);
        fake_reply(fx.fake, "{\"return\": {\"status\": \"paused\", \"running\": false}}");
        fx_connect(&fx);

        t0 = qt_now_ms();
        /* the detail names the command, its deadline and the likely cause */
        assert_err(qmp_query_status(fx.m, 300, &st), -ETIMEDOUT,
                   "QEMU did not answer 'query-status' (id 2) in 300 ms (frozen?)");
        dt = qt_now_ms() - t0;
        assert_true(dt >= 290 && dt < 1000);
        assert_non_null(strstr(err_msg(), "monitor wedged"));
        assert_true(qmp_monitor_is_wedged(fx.m));
        assert_false(qmp_monitor_is_dead(fx.m));

        t0 = qt_now_ms();
        assert_err(qmp_stop(fx.m, 5000), -EBUSY,
                   "QMP command 'stop' not sent: monitor wedged, 'query-status' (id 2) has been overdue for");
        assert_true(qt_now_ms() - t0 < 50);
        assert_err(qmp_query_status(fx.m, 5000, &st), -EBUSY, "wedged");

        fake_open_gate(fx.fake);
        for (int i = 0; i < 300 && qmp_monitor_is_wedged(fx.m); i++)
                sleep_ms(10);
        assert_false(qmp_monitor_is_wedged(fx.m));
        assert_int_equal(qmp_query_status(fx.m, 2000, &st), 0);
        assert_false(st.running);
        assert_int_equal(st.status, RUN_STATE_PAUSED);
        assert_true(evrec_wait(&fx.rec, 1, 1000));
        assert_string_equal(fx.rec.ev[0].name, "RESUME");
        assert_int_equal(fx.rec.eof_calls, 0);
        fx_end(&fx, true);
}

/* A deadline in whole seconds is named in seconds, with the command: the
 * text a source's migration loop ends with when QEMU freezes. */
static void test_timeout_names_command_and_deadline(void **state) {
        Fixture fx;
        MigrationStats ms;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-migrate", NULL);
        fake_gate(fx.fake);
        fake_reply(fx.fake, "{\"return\": {}}"); /* overdue */
        fx_connect(&fx);
        assert_err(qmp_query_migrate(fx.m, 1000, &ms), -ETIMEDOUT,
                   "QEMU did not answer 'query-migrate' (id 2) in 1 s (frozen?)");
        fake_open_gate(fx.fake);
        for (int i = 0; i < 300 && qmp_monitor_is_wedged(fx.m); i++)
                sleep_ms(10);
        assert_false(qmp_monitor_is_wedged(fx.m));
        fx_end(&fx, true);
}

static void test_abort_latency(void **state) {
        Fixture fx;
        Caller a, b;
        QmpStatus st;
        double t0, lat_a, lat_b;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-migrate", NULL);
        fake_gate(fx.fake);
        fake_reply(fx.fake, "{\"return\": {}}"); /* late reply after the abort */
        fake_event(fx.fake, "STOP", NULL);
        fx_connect(&fx);

        caller_start(&a, fx.m, "query-migrate", 10000);
        wait_in_flight(fx.m);
        caller_start(&b, fx.m, "query-status", 10000); /* queued behind a */
        sleep_ms(50);
        t0 = qt_now_ms();
        qmp_monitor_abort(fx.m, "VM destroyed");
        caller_join(&a);
        caller_join(&b);
        lat_a = a.t_end - t0;
        lat_b = b.t_end - t0;
        printf("abort latency: in-flight caller %.3f ms, queued caller %.3f ms\n", lat_a, lat_b);
        assert_int_equal(a.r, -ECANCELED);
        assert_non_null(strstr(a.detail, "QMP command 'query-migrate' aborted: VM destroyed"));
        assert_int_equal(b.r, -ECANCELED);
        assert_non_null(strstr(b.detail, "VM destroyed"));
        assert_true(lat_a < 100.0);
        assert_true(lat_b < 100.0);

        /* every later command fails at once */
        t0 = qt_now_ms();
        assert_err(qmp_query_status(fx.m, 5000, &st), -ECANCELED, "not sent: VM destroyed");
        assert_true(qt_now_ms() - t0 < 20);

        /* the late reply to the aborted command is dropped quietly: no
         * protocol error, events still flow */
        fake_open_gate(fx.fake);
        assert_true(evrec_wait(&fx.rec, 1, 2000));
        assert_false(qmp_monitor_is_dead(fx.m));
        assert_int_equal(fx.rec.eof_calls, 0);
        fx_end(&fx, true);
}

static void test_one_command_in_flight(void **state) {
        Fixture fx;
        Caller a, b;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-migrate", NULL);
        fake_quiet(fx.fake, 300); /* b is waiting; nothing may arrive */
        fake_reply(fx.fake, "{\"return\": {}}");
        fake_expect(fx.fake, "query-status", NULL);
        fake_reply(fx.fake, STATUS_RUNNING);
        fx_connect(&fx);
        caller_start(&a, fx.m, "query-migrate", 5000);
        wait_in_flight(fx.m);
        caller_start(&b, fx.m, "query-status", 5000);
        caller_join(&a);
        caller_join(&b);
        assert_int_equal(a.r, 0);
        assert_int_equal(b.r, 0);
        assert_true(b.t_end >= a.t_end);
        fx_end(&fx, true);
}

static void test_slot_timeout_names_holder(void **state) {
        Fixture fx;
        Caller a;
        QmpStatus st;
        double t0;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-migrate", NULL);
        fake_gate(fx.fake);
        fake_reply(fx.fake, "{\"return\": {}}");
        fx_connect(&fx);
        caller_start(&a, fx.m, "query-migrate", 5000);
        wait_in_flight(fx.m);
        t0 = qt_now_ms();
        assert_err(qmp_query_status(fx.m, 150, &st), -ETIMEDOUT,
                   "waiting for the channel: 'query-migrate' (id 2) in flight for");
        assert_true(qt_now_ms() - t0 >= 140);
        /* a caller that never got the channel does not wedge the monitor */
        assert_false(qmp_monitor_is_wedged(fx.m));
        fake_open_gate(fx.fake);
        caller_join(&a);
        assert_int_equal(a.r, 0);
        fx_end(&fx, true);
}

static void test_close_with_command_in_flight(void **state) {
        Fixture fx;
        Caller a;
        double t0;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "query-migrate", NULL);
        fake_gate(fx.fake);
        fake_close(fx.fake);
        fx_connect(&fx);
        caller_start(&a, fx.m, "query-migrate", 10000);
        wait_in_flight(fx.m);
        t0 = qt_now_ms();
        qmp_monitor_close(fx.m); /* a still holds its own reference */
        fx.m = NULL;
        caller_join(&a);
        printf("close returned the caller in %.3f ms: %d %s\n", a.t_end - t0, a.r, a.detail);
        assert_true(a.t_end - t0 < 100.0);
        assert_int_equal(a.r, -ECANCELED);
        assert_non_null(strstr(a.detail, "monitor closed"));
        /* QEMU going away after close calls nothing */
        fake_open_gate(fx.fake);
        sleep_ms(100);
        assert_int_equal(fx.rec.eof_calls, 0);
        fx_end(&fx, true);
}

/* QEMU dies with our command still unread: the kernel resets the socket
 * instead of a clean EOF; same outcome for the caller, clear reason. */
static void test_reset_with_command_unread(void **state) {
        Fixture fx;
        Caller a;
        (void) state;
        fx_begin(&fx);
        fake_wait_unread(fx.fake); /* the command arrived, not read */
        fake_close(fx.fake);       /* close with it unread */
        fx_connect(&fx);
        caller_start(&a, fx.m, "query-status", 10000);
        caller_join(&a);
        if (!strstr(a.detail, "QMP command 'query-status' failed: QEMU closed the monitor (connection reset)"))
                fprintf(stderr, "got %d '%s', eof '%s'\n", a.r, a.detail, fx.rec.eof_reason);
        assert_int_equal(a.r, -ECONNRESET);
        assert_non_null(strstr(a.detail, "QMP command 'query-status' failed: QEMU closed the monitor (connection reset)"));
        assert_true(evrec_wait_eof(&fx.rec, 2000));
        assert_int_equal(fx.rec.eof_error, -ECONNRESET);
        assert_string_equal(fx.rec.eof_reason, "QEMU closed the monitor (connection reset)");
        fx_end(&fx, true);
}

/* A command returns after the handlers of the events that preceded its
 * reply have run (STOP handled when stop returns), bounded by its deadline. */
static void test_events_handled_before_return(void **state) {
        Fixture fx;
        Caller a;
        QmpStatus st;
        double t0;
        (void) state;
        fx_begin(&fx);
        fake_expect(fx.fake, "stop", NULL);
        fake_event(fx.fake, "STOP", NULL);
        fake_reply(fx.fake, "{\"return\": {}}");
        fake_expect(fx.fake, "query-status", NULL);
        fake_event(fx.fake, "RESUME", NULL);
        fake_reply(fx.fake, STATUS_RUNNING);
        fx_connect(&fx);

        evrec_hold(&fx.rec, true);
        caller_start(&a, fx.m, "stop", 5000);
        sleep_ms(300);
        assert_int_equal(pthread_tryjoin_np(a.thread, NULL), EBUSY); /* handler still blocked */
        assert_int_equal(evrec_in_callback(&fx.rec), 1);
        t0 = qt_now_ms();
        evrec_hold(&fx.rec, false);
        caller_join(&a);
        assert_int_equal(a.r, 0);
        assert_true(a.t_end - t0 < 100.0);
        assert_int_equal(evrec_count(&fx.rec), 1);
        assert_int_equal(fx.rec.ev[0].type, QMP_EVENT_STOP);

        /* a stuck handler delays a command only up to its deadline, and the
         * command still succeeds: its reply is there */
        evrec_hold(&fx.rec, true);
        t0 = qt_now_ms();
        assert_int_equal(qmp_query_status(fx.m, 300, &st), 0);
        assert_true(qt_now_ms() - t0 >= 290);
        assert_true(st.running);
        assert_false(qmp_monitor_is_wedged(fx.m));
        evrec_hold(&fx.rec, false);
        assert_true(evrec_wait(&fx.rec, 2, 2000));
        fx_end(&fx, true);
}

static QmpMonitor *hook_mon;
static int hook_r = 1;
static QmpStatus hook_st;

static void command_from_handler(EvRec *r, const QmpEvent *ev) {
        (void) r;
        if (strcmp(ev->name, "PING") == 0)
                hook_r = qmp_query_status(hook_mon, 2000, &hook_st);
}

/* A handler may issue a command on its own monitor: events that precede
 * that reply are queued behind the handler itself, so no waiting there. */
static void test_command_from_handler(void **state) {
        Fixture fx;
        (void) state;
        fx_begin(&fx);
        fake_gate(fx.fake); /* until hook_mon is set */
        fake_event(fx.fake, "PING", NULL);
        fake_expect(fx.fake, "query-status", NULL);
        fake_event(fx.fake, "AFTER", NULL);
        fake_reply(fx.fake, STATUS_RUNNING);
        fx.rec.hook = command_from_handler;
        fx_connect(&fx);
        hook_mon = fx.m;
        fake_open_gate(fx.fake);
        assert_true(evrec_wait(&fx.rec, 2, 5000));
        assert_int_equal(hook_r, 0);
        assert_true(hook_st.running);
        assert_string_equal(fx.rec.ev[1].name, "AFTER");
        fx_end(&fx, true);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_greeting_and_version),
                cmocka_unit_test(test_framing_tolerance),
                cmocka_unit_test(test_no_greeting_times_out),
                cmocka_unit_test(test_first_message_not_greeting),
                cmocka_unit_test(test_connect_no_listener),
                cmocka_unit_test(test_capabilities_refused),
                cmocka_unit_test(test_error_replies),
                cmocka_unit_test(test_bad_arguments_not_sent),
                cmocka_unit_test(test_reply_without_id),
                cmocka_unit_test(test_events_anywhere_in_order),
                cmocka_unit_test(test_event_queue_overflow),
                cmocka_unit_test(test_malformed_json),
                cmocka_unit_test(test_truncated_then_eof),
                cmocka_unit_test(test_unknown_and_out_of_order_ids),
                cmocka_unit_test(test_reply_with_nothing_in_flight),
                cmocka_unit_test(test_oversized),
                cmocka_unit_test(test_eof_idle_after_events),
                cmocka_unit_test(test_eof_during_command),
                cmocka_unit_test(test_wedged_and_recovery),
                cmocka_unit_test(test_timeout_names_command_and_deadline),
                cmocka_unit_test(test_abort_latency),
                cmocka_unit_test(test_one_command_in_flight),
                cmocka_unit_test(test_slot_timeout_names_holder),
                cmocka_unit_test(test_close_with_command_in_flight),
                cmocka_unit_test(test_reset_with_command_unread),
                cmocka_unit_test(test_events_handled_before_return),
                cmocka_unit_test(test_command_from_handler),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
