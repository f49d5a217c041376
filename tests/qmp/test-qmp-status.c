/* Every MigrationStatus and RunState value QEMU knows (from
 * tests/data/qmp/ground-truth-migration-schema.json: QEMU 7.2.22 and
 * upstream 9.1) reaches Drover as its own enum value, through both the
 * MIGRATION event and query-migrate; values from a future QEMU map to
 * _UNKNOWN without an error.  Every MigrationStats field is filled from its
 * own member (distinct values catch a swapped member).  A counter of
 * another type or out of range, or a "ram" that is not an object, reads as
 * absent while the rest of the reply counts; only a reply that is not an
 * object, or whose status is not a string (or missing next to counters),
 * fails the call with -EPROTO, and the monitor stays usable.
 * Every migration parameter the agent sets survives set and query through
 * the schema-checked fake.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "qmp-priv.h"
#include "every-param.h"
#include "qmptest.h"

static json_object *ground_truth(void) {
        char *text = qt_data("ground-truth-migration-schema.json");
        json_object *o = json_tokener_parse(text);
        free(text);
        assert_non_null(o);
        return o;
}

static json_object *path2(json_object *o, const char *a, const char *b) {
        json_object *x = NULL, *y = NULL;
        assert_true(json_object_object_get_ex(o, a, &x));
        assert_true(json_object_object_get_ex(x, b, &y));
        return y;
}

/* The union of the status lists of every version in the ground truth. */
static json_object *all_statuses(json_object *gt) {
        json_object *seen = json_object_new_object(), *list = json_object_new_array();
        const char *versions[] = { "qemu-7.2.22", "upstream-9.1" };
        for (size_t v = 0; v < ELEMENTSOF(versions); v++) {
                json_object *l = path2(gt, "MigrationStatus", versions[v]);
                for (size_t i = 0; i < json_object_array_length(l); i++) {
                        const char *s = json_object_get_string(json_object_array_get_idx(l, i));
                        if (!json_object_object_get_ex(seen, s, NULL)) {
                                json_object_object_add(seen, s, NULL);
                                json_object_array_add(list, json_object_new_string(s));
                        }
                }
        }
        json_object_put(seen);
        return list;
}

static void test_every_migration_status(void **state) {
        json_object *gt = ground_truth(), *list = all_statuses(gt);
        size_t n = json_object_array_length(list);
        const char *path;
        FakeQemu *f = qt_fake(&path);
        EvRec rec;
        QmpMonitor *m;
        char buf[256];
        (void) state;

        assert_int_equal(n, 15);
        evrec_init(&rec);
        fake_expect(f, "qmp_capabilities", NULL);
        fake_reply(f, "{\"return\": {}}");
        for (size_t i = 0; i <= n; i++) {
                const char *s = i < n ? json_object_get_string(json_object_array_get_idx(list, i))
                                      : "x-status-from-qemu-12";
                snprintf(buf, sizeof(buf), "{\"status\": \"%s\"}", s);
                fake_event(f, "MIGRATION", buf);
                fake_expect(f, "query-migrate", NULL);
                snprintf(buf, sizeof(buf), "{\"return\": {\"status\": \"%s\", \"x-new-member\": {}}}", s);
                fake_reply(f, buf);
        }
        fake_event(f, "MIGRATION", "{}"); /* no status at all */
        fake_start(f);
        m = qt_connect(path, &rec);

        for (size_t i = 0; i <= n; i++) {
                const char *s = i < n ? json_object_get_string(json_object_array_get_idx(list, i)) : NULL;
                MigrationStats ms;
                assert_int_equal(qmp_query_migrate(m, 2000, &ms), 0);
                assert_true(evrec_wait(&rec, (int) i + 1, 2000));
                if (s) {
                        MigrationStatus want = migration_status_from_string(s);
                        assert_int_not_equal(want, MIGRATION_STATUS_UNKNOWN);
                        assert_string_equal(migration_status_to_string(want), s);
                        assert_int_equal(ms.status, want);
                        assert_int_equal(rec.ev[i].migration_status, want);
                } else {
                        assert_int_equal(ms.status, MIGRATION_STATUS_UNKNOWN);
                        assert_int_equal(rec.ev[i].migration_status, MIGRATION_STATUS_UNKNOWN);
                }
                assert_int_equal(rec.ev[i].type, QMP_EVENT_MIGRATION);
        }
        assert_true(evrec_wait(&rec, (int) n + 2, 2000));
        assert_int_equal(rec.ev[n + 1].migration_status, MIGRATION_STATUS_UNKNOWN);
        assert_false(qmp_monitor_is_dead(m));

        /* the terminal set agrees with the ground truth */
        json_object *term = path2(gt, "MigrationStatus", "terminal");
        int n_term = 0;
        for (int st = 0; st < MIGRATION_STATUS_MAX; st++)
                n_term += migration_status_is_terminal((MigrationStatus) st);
        assert_int_equal(n_term, (int) json_object_array_length(term));
        for (size_t i = 0; i < json_object_array_length(term); i++)
                assert_true(migration_status_is_terminal(
                        migration_status_from_string(json_object_get_string(json_object_array_get_idx(term, i)))));

        assert_int_equal(fake_finish(f, 3000, "statuses"), 0);
        qmp_monitor_close(m);
        fake_free(f);
        evrec_destroy(&rec);
        json_object_put(list);
        json_object_put(gt);
}

static void test_every_run_state(void **state) {
        json_object *gt = ground_truth();
        json_object *l = path2(gt, "RunState(query-status.status)", "qemu-7.2.22");
        char buf[256];
        QmpStatus st;
        (void) state;

        assert_int_equal(json_object_array_length(l), 16);
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(l, i));
                bool running = strcmp(s, "running") == 0;
                snprintf(buf, sizeof(buf), "{\"status\": \"%s\", \"singlestep\": false, \"running\": %s}", s,
                         running ? "true" : "false");
                assert_int_equal(qmp_parse_status(buf, &st), 0);
                assert_int_not_equal(st.status, RUN_STATE_UNKNOWN);
                assert_string_equal(run_state_to_string(st.status), s);
                assert_string_equal(st.status_name, s);
                assert_int_equal(st.running, running);
        }
        /* a future value, and 8.1+ without singlestep */
        assert_int_equal(qmp_parse_status("{\"status\": \"x-hibernating\", \"running\": false}", &st), 0);
        assert_int_equal(st.status, RUN_STATE_UNKNOWN);
        assert_string_equal(st.status_name, "x-hibernating");
        json_object_put(gt);
}

/* Distinct values in every member: each field must come from its own. */
static void test_every_stats_field(void **state) {
        static const char reply[] =
                "{\"status\": \"active\", \"total-time\": 101, \"downtime\": 102, \"expected-downtime\": 103, "
                "\"setup-time\": 104, \"cpu-throttle-percentage\": 105, \"error-desc\": \"e\", "
                "\"blocked-reasons\": [], \"socket-address\": [], \"x-future\": 1, "
                "\"ram\": {\"transferred\": 201, \"remaining\": 202, \"total\": 203, \"duplicate\": 204, "
                "\"skipped\": 999, \"normal\": 205, \"normal-bytes\": 206, \"dirty-pages-rate\": 207, "
                "\"mbps\": 208.5, \"dirty-sync-count\": 209, \"postcopy-requests\": 210, \"page-size\": 211, "
                "\"multifd-bytes\": 998, \"pages-per-second\": 997, \"precopy-bytes\": 996}, "
                "\"disk\": {\"total\": 995}, \"xbzrle-cache\": {\"cache-size\": 994}}";
        MigrationStats s;
        (void) state;

        assert_int_equal(qmp_parse_migrate_stats(reply, &s), 0);
        assert_int_equal(s.status, MIGRATION_STATUS_ACTIVE);
        assert_int_equal(s.total_time_ms, 101);
        assert_int_equal(s.downtime_ms, 102);
        assert_int_equal(s.expected_downtime_ms, 103);
        assert_int_equal(s.setup_time_ms, 104);
        assert_int_equal(s.cpu_throttle_percentage, 105);
        assert_true(s.has_error_desc);
        assert_string_equal(s.error_desc, "e");
        assert_int_equal(s.ram_transferred, 201);
        assert_int_equal(s.ram_remaining, 202);
        assert_int_equal(s.ram_total, 203);
        assert_int_equal(s.ram_duplicate, 204);
        assert_int_equal(s.ram_normal, 205);
        assert_int_equal(s.ram_normal_bytes, 206);
        assert_int_equal(s.ram_dirty_pages_rate, 207);
        assert_true(fabs(s.ram_mbps - 208.5) < 1e-12);
        assert_int_equal(s.ram_dirty_sync_count, 209);
        assert_int_equal(s.ram_postcopy_requests, 210);
        assert_int_equal(s.ram_page_size, 211);

        /* mbps may be an integer; a long error-desc is cut, not refused */
        char big[1024];
        memset(big, 'z', 600);
        big[600] = '\0';
        char *r2 = NULL;
        assert_true(asprintf(&r2, "{\"status\": \"failed\", \"error-desc\": \"%s\", \"ram\": {\"mbps\": 7}}", big) > 0);
        assert_int_equal(qmp_parse_migrate_stats(r2, &s), 0);
        free(r2);
        assert_true(fabs(s.ram_mbps - 7.0) < 1e-12);
        assert_int_equal(strlen(s.error_desc), sizeof(s.error_desc) - 1);

        /* a long unknown status is cut, not refused */
        assert_int_equal(qmp_parse_migrate_stats("{\"status\": \"x-a-very-long-status-name-from-a-qemu-of-2030\"}",
                                                 &s), 0);
        assert_int_equal(s.status, MIGRATION_STATUS_UNKNOWN);
        assert_int_equal(strlen(s.status_name), sizeof(s.status_name) - 1);

        /* before any migration: {} is status none, everything 0; so is a
         * destination waiting for its connection (socket-address only) */
        assert_int_equal(qmp_parse_migrate_stats("{\"blocked-reasons\": [\"x\"], \"socket-address\": []}", &s), 0);
        assert_int_equal(s.status, MIGRATION_STATUS_NONE);
        assert_int_equal(qmp_parse_migrate_stats("{}", &s), 0);
        assert_int_equal(s.status, MIGRATION_STATUS_NONE);
        assert_string_equal(s.status_name, "");
        assert_int_equal(s.total_time_ms + s.ram_total + s.downtime_ms, 0);
        assert_false(s.has_error_desc);
}

static void test_wrong_shapes(void **state) {
        MigrationStats s;
        MigrationParams p;
        MigrationCaps c;
        QmpStatus st;
        const char *path;
        FakeQemu *f = qt_fake(&path);
        QmpMonitor *m;
        (void) state;

        assert_int_equal(qmp_parse_migrate_stats("{\"status\": 3, \"total-time\": 5}", &s), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate: 'return.status' must be a string, not an integer");
        assert_int_equal(qmp_parse_migrate_stats("{\"status\": null, \"total-time\": 5}", &s), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate: 'return.status' must be a string, not null");
        /* counters without a status: a status moved or renamed, not "none" */
        assert_int_equal(qmp_parse_migrate_stats("{\"total-time\": 5, \"ram\": {\"total\": 1}}", &s),
                         -EPROTO);
        assert_string_equal(err_msg(), "query-migrate: reply has 'total-time' but no 'status'");
        assert_int_equal(qmp_parse_migrate_stats("[]", &s), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate: 'return' must be an object, not an array");
        assert_int_equal(qmp_parse_migrate_params("{\"downtime-limit\": true}", &p), -EPROTO);
        assert_string_equal(err_msg(),
                            "query-migrate-parameters: 'return.downtime-limit' must be an integer, not a boolean");
        /* null is absent; a negative count (QEMU sends none) reads as 0 */
        memset(&p, 0xa5, sizeof(p));
        assert_int_equal(qmp_parse_migrate_params("{\"downtime-limit\": null, \"max-bandwidth\": -1}", &p), 0);
        assert_false(p.has_downtime_limit);
        assert_true(p.has_max_bandwidth);
        assert_int_equal(p.max_bandwidth, 0);
        {
                char creds[200], *txt = NULL;
                memset(creds, 'c', 100);
                creds[100] = '\0';
                assert_true(asprintf(&txt, "{\"tls-creds\": \"%s\"}", creds) > 0);
                assert_int_equal(qmp_parse_migrate_params(txt, &p), -EPROTO);
                assert_string_equal(err_msg(), "query-migrate-parameters: 'return.tls-creds' is too long "
                                               "(100 bytes, at most 63)");
                free(txt);
        }
        assert_int_equal(qmp_parse_migrate_caps("{}", &c), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate-capabilities: 'return' must be an array, not an object");
        assert_int_equal(qmp_parse_migrate_caps("[{\"state\": true}]", &c), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate-capabilities: 'return[0].capability' is required");
        assert_int_equal(qmp_parse_migrate_caps("[{\"capability\": \"xbzrle\", \"state\": 1}]", &c), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate-capabilities: 'return[0].state' must be a boolean, not an integer");
        assert_int_equal(qmp_parse_migrate_caps("[{\"capability\": \"x-new\", \"state\": true}]", &c), 0);
        assert_int_equal(c.known, 0); /* unknown capability skipped */
        assert_int_equal(qmp_parse_status("{\"running\": \"yes\"}", &st), -EPROTO);
        assert_string_equal(err_msg(), "query-status: 'return.running' must be a boolean, not a string");

        /* through a monitor: the call fails, the stream is still in sync */
        fake_expect(f, "qmp_capabilities", NULL);
        fake_reply(f, "{\"return\": {}}");
        fake_expect(f, "query-migrate", NULL);
        fake_reply(f, "{\"return\": [1, 2]}");
        fake_expect(f, "query-status", NULL);
        fake_reply(f, "{\"return\": {\"status\": \"paused\", \"running\": false}}");
        fake_start(f);
        m = qt_connect(path, NULL);
        assert_int_equal(qmp_query_migrate(m, 2000, &s), -EPROTO);
        assert_string_equal(err_msg(), "query-migrate: 'return' must be an object, not an array");
        assert_false(qmp_monitor_is_dead(m));
        assert_int_equal(qmp_query_status(m, 2000, &st), 0);
        assert_int_equal(st.status, RUN_STATE_PAUSED);
        assert_int_equal(fake_finish(f, 3000, "shapes"), 0);
        qmp_monitor_close(m);
        fake_free(f);
}

/* What a newer QEMU may send in query-migrate: a status this build does
 * not know, counters as floats, strings, objects, negative or beyond
 * uint64, a "ram" that is not an object, an "mbps" that is not a number, an
 * error-desc that is not a string, and members nobody knows.  Each such
 * counter reads as absent (0); the well-formed ones keep their values; the
 * unknown status is in flight as far as the caller can tell.  Polled in a
 * row like the source's migration loop, every reply parses and the monitor
 * stays in sync. */
static void test_future_query_migrate_tolerated(void **state) {
        static const char *const replies[] = {
                "{\"return\": {\"status\": \"device-xyz\", \"total-time\": 1500.0, \"downtime\": \"12\", "
                "\"expected-downtime\": 18446744073709551616, \"setup-time\": 99999999999999999999999, "
                "\"cpu-throttle-percentage\": -3, \"error-desc\": 7, \"x-new-counter\": {\"a\": [1.5]}, "
                "\"ram\": {\"transferred\": 123, \"remaining\": 12.0, \"total\": \"1G\", \"duplicate\": true, "
                "\"normal\": {}, \"normal-bytes\": [], \"mbps\": \"fast\", \"dirty-sync-count\": 4, "
                "\"page-size\": 9223372036854775808, \"dirty-pages-rate\": null, \"x-future\": 1e300}}}",
                "{\"return\": {\"status\": \"wait-unplug-2\", \"total-time\": 77, \"ram\": [1, 2], "
                "\"x-future-object\": {\"deep\": {\"er\": true}}}}",
                "{\"return\": {\"status\": \"active\", \"total-time\": 78, \"ram\": \"lots\"}}",
                "{\"return\": {\"status\": \"completed\", \"total-time\": 79, \"downtime\": 5, "
                "\"ram\": {\"total\": 4096, \"mbps\": 1e400}}}",
        };
        const char *path;
        FakeQemu *f = qt_fake(&path);
        MigrationStats s;
        QmpStatus st;
        QmpMonitor *m;
        (void) state;

        fake_expect(f, "qmp_capabilities", NULL);
        fake_reply(f, "{\"return\": {}}");
        for (size_t i = 0; i < ELEMENTSOF(replies); i++) {
                fake_expect(f, "query-migrate", NULL);
                fake_reply(f, replies[i]);
        }
        fake_expect(f, "query-status", NULL);
        fake_reply(f, "{\"return\": {\"status\": \"paused\", \"running\": false}}");
        fake_start(f);
        m = qt_connect(path, NULL);

        memset(&s, 0xa5, sizeof(s));
        if (qmp_query_migrate(m, 2000, &s) != 0)
                fail_msg("first reply refused: %s", err_msg());
        assert_int_equal(s.status, MIGRATION_STATUS_UNKNOWN);
        assert_string_equal(s.status_name, "device-xyz"); /* for error texts */
        assert_true(migration_status_is_active(s.status));
        assert_false(migration_status_is_terminal(s.status));
        assert_int_equal(s.total_time_ms, 0);
        assert_int_equal(s.downtime_ms, 0);
        assert_int_equal(s.expected_downtime_ms, 0);
        assert_int_equal(s.setup_time_ms, 0);
        assert_int_equal(s.cpu_throttle_percentage, 0);
        assert_false(s.has_error_desc);
        assert_int_equal(s.ram_transferred, 123);
        assert_int_equal(s.ram_remaining, 0);
        assert_int_equal(s.ram_total, 0);
        assert_int_equal(s.ram_duplicate, 0);
        assert_int_equal(s.ram_normal, 0);
        assert_int_equal(s.ram_normal_bytes, 0);
        assert_int_equal(s.ram_dirty_pages_rate, 0);
        assert_true(s.ram_mbps == 0.0);
        assert_int_equal(s.ram_dirty_sync_count, 4);
        assert_true(s.ram_page_size == UINT64_C(9223372036854775808)); /* in uint64: kept */

        if (qmp_query_migrate(m, 2000, &s) != 0)
                fail_msg("second reply refused: %s", err_msg());
        assert_int_equal(s.status, MIGRATION_STATUS_UNKNOWN);
        assert_string_equal(s.status_name, "wait-unplug-2");
        assert_true(migration_status_is_active(s.status));
        assert_int_equal(s.total_time_ms, 77);
        assert_int_equal(s.ram_total + s.ram_transferred + s.ram_remaining, 0);

        if (qmp_query_migrate(m, 2000, &s) != 0)
                fail_msg("third reply refused: %s", err_msg());
        assert_int_equal(s.status, MIGRATION_STATUS_ACTIVE);
        assert_int_equal(s.total_time_ms, 78);

        if (qmp_query_migrate(m, 2000, &s) != 0)
                fail_msg("fourth reply refused: %s", err_msg());
        assert_int_equal(s.status, MIGRATION_STATUS_COMPLETED);
        assert_int_equal(s.total_time_ms, 79);
        assert_int_equal(s.downtime_ms, 5);
        assert_int_equal(s.ram_total, 4096);
        assert_true(s.ram_mbps == 0.0); /* 1e400 is no rate */

        assert_false(qmp_monitor_is_dead(m));
        assert_int_equal(qmp_query_status(m, 2000, &st), 0);
        assert_int_equal(st.status, RUN_STATE_PAUSED);
        assert_int_equal(fake_finish(f, 3000, "future-query-migrate"), 0);
        qmp_monitor_close(m);
        fake_free(f);
}

/* Every parameter the agent sets (tests/lib/every-param.h; the JSON below
 * is written out by hand) goes to the fake QEMU (which checks it against
 * QEMU 7.2's schema) under its QAPI name, and comes back from
 * query-migrate-parameters as the same typed value; members this build
 * does not know are skipped. */
static void test_every_param_through_fake(void **state) {
        static const char every[] =
                "{\"max-bandwidth\": 1099511627776, \"downtime-limit\": 301, "
                "\"cpu-throttle-initial\": 21, \"cpu-throttle-increment\": 11, "
                "\"max-cpu-throttle\": 97, \"multifd-channels\": 5, "
                "\"multifd-compression\": \"zstd\", \"multifd-zstd-level\": 3, "
                "\"max-postcopy-bandwidth\": 123456789, \"tls-creds\": \"tls0\", "
                "\"tls-hostname\": \"dst.example\"}";
        MigrationParams p, back;
        const char *path;
        FakeQemu *f = qt_fake(&path);
        QmpMonitor *m;
        (void) state;

        tu_fill_every_param(&p);

        fake_expect(f, "qmp_capabilities", NULL);
        fake_reply(f, "{\"return\": {}}");
        fake_expect(f, "migrate-set-parameters", every);
        fake_reply(f, "{\"return\": {}}");
        fake_expect(f, "query-migrate-parameters", NULL);
        fake_reply(f, "{\"return\": {\"max-bandwidth\": 1099511627776, \"downtime-limit\": 301, "
                      "\"cpu-throttle-initial\": 21, \"cpu-throttle-increment\": 11, "
                      "\"max-cpu-throttle\": 97, \"multifd-channels\": 5, "
                      "\"multifd-compression\": \"zstd\", \"multifd-zstd-level\": 3, "
                      "\"max-postcopy-bandwidth\": 123456789, \"tls-creds\": \"tls0\", "
                      "\"tls-hostname\": \"dst.example\", \"announce-initial\": 50, "
                      "\"tls-authz\": \"\"}}");
        fake_start(f);
        m = qt_connect(path, NULL);
        assert_int_equal(qmp_migrate_set_parameters(m, 2000, &p), 0);
        memset(&back, 0xa5, sizeof(back));
        assert_int_equal(qmp_query_migrate_parameters(m, 2000, &back), 0);
        assert_memory_equal(&p, &back, sizeof(p));
        assert_int_equal(fake_finish(f, 3000, "every-param"), 0);
        qmp_monitor_close(m);
        fake_free(f);
}

/* Text QEMU relays that is not UTF-8 (a guest's, a device's) is repaired
 * on arrival: each invalid sequence becomes U+FFFD and is counted; the
 * message is handled as usual and the monitor lives (it used to die of a
 * "malformed QMP message"), and no such text reaches a protobuf string. */
static void test_invalid_utf8_is_repaired_not_fatal(void **state) {
        const char *path;
        FakeQemu *f = qt_fake(&path);
        EvRec rec;
        QmpMonitor *m;
        MigrationStats ms;
        (void) state;

        evrec_init(&rec);
        fake_expect(f, "qmp_capabilities", NULL);
        fake_reply(f, "{\"return\": {}}");
        const char ev[] = "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"failed\", \"x\": \"\xc3(\"}, "
                          "\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n";
        fake_send(f, ev, sizeof(ev) - 1, false);
        fake_expect(f, "query-migrate", NULL);
        const char reply[] = "{\"return\": {\"status\": \"failed\", \"error-desc\": \"disk \xfe\xfe full\"}, \"id\": $ID}\r\n";
        fake_send(f, reply, sizeof(reply) - 1, true);
        fake_start(f);
        m = qt_connect(path, &rec);

        assert_true(evrec_wait(&rec, 1, 2000));
        assert_int_equal(rec.ev[0].migration_status, MIGRATION_STATUS_FAILED);
        assert_int_equal(qmp_query_migrate(m, 2000, &ms), 0);
        assert_true(ms.has_error_desc);
        assert_string_equal(ms.error_desc, "disk \xef\xbf\xbd\xef\xbf\xbd full");
        assert_int_equal(qmp_monitor_bad_utf8(m), 3);
        assert_false(evrec_wait_eof(&rec, 50)); /* the monitor lives */
        assert_int_equal(fake_finish(f, 3000, "utf8"), 0);
        qmp_monitor_close(m);
        fake_free(f);
        evrec_destroy(&rec);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_migration_status),
                cmocka_unit_test(test_every_run_state),
                cmocka_unit_test(test_every_stats_field),
                cmocka_unit_test(test_wrong_shapes),
                cmocka_unit_test(test_future_query_migrate_tolerated),
                cmocka_unit_test(test_every_param_through_fake),
                cmocka_unit_test(test_invalid_utf8_is_repaired_not_fatal),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
