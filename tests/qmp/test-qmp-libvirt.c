/* Replay of libvirt's QMP fixtures through the fake QEMU:
 *  - qemumonitorjsontest extracts: the canned replies and the parse results
 *    libvirt asserts, mapped onto Drover's typed results;
 *  - qemucapabilitiesdata excerpts of real QEMU 7.2 and 4.2 probe sessions
 *    (request/reply pairs, error replies included);
 *  - qemumigparamsdata: query-migrate-parameters replies parsed, and the
 *    migrate-set-parameters arguments Drover builds from them compared with
 *    libvirt's expected JSON as objects.
 * Every command Drover sends is also checked against the 7.2 schema.
 */
#define _GNU_SOURCE
#include <errno.h>
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

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;
        return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *str_or(json_object *o, const char *key, const char *dflt) {
        json_object *v = member(o, key);
        return v && !json_object_is_type(v, json_type_null) ? json_object_get_string(v) : dflt;
}

typedef struct Session {
        FakeQemu *fake;
        const char *path;
        QmpMonitor *m;
} Session;

static void session_open(Session *s, const char *greeting) {
        s->fake = qt_fake(&s->path);
        if (greeting)
                fake_set_greeting(s->fake, greeting);
        fake_expect(s->fake, "qmp_capabilities", NULL);
        fake_reply(s->fake, "{\"return\": {}}");
        fake_start(s->fake);
        s->m = qt_connect(s->path, NULL);
}

static void session_close(Session *s, const char *label) {
        assert_int_equal(fake_finish(s->fake, 3000, label), 0);
        qmp_monitor_close(s->m);
        fake_free(s->fake);
}

/* ---- qemumonitorjsontest ------------------------------------------------ */

static void run_exchange_case(json_object *c) {
        const char *test = str_or(c, "test", "?"), *cmd = str_or(c, "command", "?");
        json_object *reply = member(c, "reply"), *expect = member(c, "expect");
        Session s;
        int r;

        session_open(&s, NULL);
        if (strcmp(cmd, "migrate-set-capabilities") == 0)
                fake_expect(s.fake, cmd, "{\"capabilities\": [{\"capability\": \"events\", \"state\": true}]}");
        else
                fake_expect(s.fake, cmd, NULL);
        fake_reply(s.fake, json_object_to_json_string(reply));

        if (strcmp(cmd, "query-status") == 0) {
                QmpStatus st;
                const char *why = str_or(expect, "paused_reason", "?");
                assert_int_equal(qmp_query_status(s.m, 2000, &st), 0);
                assert_int_equal(st.running, json_object_get_boolean(member(expect, "running")));
                /* libvirt's paused reason "migration" is our inmigrate state;
                 * "unknown" covers running and a missing status */
                if (strcmp(why, "migration") == 0)
                        assert_int_equal(st.status, RUN_STATE_INMIGRATE);
                else {
                        assert_string_equal(why, "unknown");
                        assert_int_not_equal(st.status, RUN_STATE_INMIGRATE);
                }
                if (!member(member(reply, "return"), "status")) {
                        assert_int_equal(st.status, RUN_STATE_UNKNOWN);
                        assert_string_equal(st.status_name, "");
                }
        } else if (strcmp(cmd, "query-version") == 0) {
                QmpVersion v;
                assert_int_equal(qmp_query_version(s.m, 2000, &v), 0);
                assert_int_equal(v.major, json_object_get_int(member(expect, "major")));
                assert_int_equal(v.minor, json_object_get_int(member(expect, "minor")));
                assert_int_equal(v.micro, json_object_get_int(member(expect, "micro")));
                assert_string_equal(v.package, str_or(expect, "package", "?"));
        } else if (strcmp(cmd, "query-target") == 0) {
                char *ret = NULL;
                json_object *o;
                assert_int_equal(qmp_call(s.m, "query-target", NULL, 2000, &ret), 0);
                o = json_tokener_parse(ret);
                assert_string_equal(str_or(o, "arch", "?"), str_or(expect, "arch", "!"));
                json_object_put(o);
                free(ret);
        } else if (strcmp(cmd, "query-migrate") == 0) {
                MigrationStats ms;
                const char *st = str_or(expect, "status", "?");
                assert_int_equal(qmp_query_migrate(s.m, 2000, &ms), 0);
                if (strcmp(st, "failed(error)") == 0) {
                        assert_int_equal(ms.status, MIGRATION_STATUS_FAILED);
                        assert_true(ms.has_error_desc);
                        assert_string_equal(ms.error_desc, str_or(expect, "error", "?"));
                } else {
                        assert_int_equal(ms.status, migration_status_from_string(st));
                        assert_int_equal(ms.total_time_ms, json_object_get_int64(member(expect, "total_time")));
                        assert_int_equal(ms.ram_total, json_object_get_int64(member(expect, "ram_total")));
                        assert_int_equal(ms.ram_remaining, json_object_get_int64(member(expect, "ram_remaining")));
                        assert_int_equal(ms.ram_transferred,
                                         json_object_get_int64(member(expect, "ram_transferred")));
                        assert_false(ms.has_error_desc); /* "error": null */
                }
        } else if (strcmp(cmd, "query-migrate-capabilities") == 0) {
                MigrationCaps caps;
                json_object *names = member(expect, "capabilities");
                uint64_t want_known = 0, want_enabled = 0;
                json_object *list = member(reply, "return");
                assert_int_equal(qmp_query_migrate_capabilities(s.m, 2000, &caps), 0);
                for (size_t i = 0; i < json_object_array_length(names); i++)
                        want_known |= MIGRATION_CAP_BIT(migration_cap_from_string(
                                json_object_get_string(json_object_array_get_idx(names, i))));
                for (size_t i = 0; i < json_object_array_length(list); i++)
                        if (json_object_get_boolean(member(json_object_array_get_idx(list, i), "state")))
                                want_enabled |= MIGRATION_CAP_BIT(migration_cap_from_string(
                                        str_or(json_object_array_get_idx(list, i), "capability", "")));
                assert_int_equal(caps.known, want_known);
                assert_int_equal(caps.enabled, want_enabled);
                assert_int_equal(caps.enabled, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS));
        } else if (strcmp(cmd, "migrate-set-capabilities") == 0) {
                assert_string_equal(json_object_get_string(expect), "success");
                r = qmp_migrate_set_capabilities(s.m, 2000, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), true);
                assert_int_equal(r, 0);
        } else {
                fail_msg("case %s: no mapping for command %s", test, cmd);
        }
        session_close(&s, test);
}

static void test_monitorjson_cases(void **state) {
        char *text = qt_data("libvirt-qemumonitorjsontest-exchanges.json");
        json_object *root = json_tokener_parse(text), *cases = member(root, "cases");
        (void) state;
        assert_non_null(cases);
        assert_int_equal(json_object_array_length(cases), 10);
        for (size_t i = 0; i < json_object_array_length(cases); i++)
                run_exchange_case(json_object_array_get_idx(cases, i));
        json_object_put(root);
        free(text);
}

/* Simple commands with an empty return, and the generated tests: the same
 * commands answered with an error reply propagate it. */
static void test_monitorjson_simple_commands(void **state) {
        char *text = qt_data("libvirt-qemumonitorjsontest-exchanges.json");
        json_object *root = json_tokener_parse(text), *list = member(root, "simple_commands_tested_with_empty_return");
        Session s;
        (void) state;
        assert_non_null(list);
        session_open(&s, NULL);
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                const char *cmd = json_object_get_string(json_object_array_get_idx(list, i));
                if (strcmp(cmd, "qmp_capabilities") == 0)
                        continue; /* done by connect */
                fake_expect(s.fake, cmd, NULL);
                fake_reply(s.fake, "{\"return\": {}}");
                fake_expect(s.fake, cmd, NULL);
                fake_reply(s.fake, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"boom\"}}");
        }
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                const char *cmd = json_object_get_string(json_object_array_get_idx(list, i));
                char *ret = NULL;
                int r1, r2;
                if (strcmp(cmd, "qmp_capabilities") == 0)
                        continue;
                if (strcmp(cmd, "migrate_cancel") == 0) {
                        r1 = qmp_migrate_cancel(s.m, 2000);
                        r2 = qmp_migrate_cancel(s.m, 2000);
                } else if (strcmp(cmd, "migrate-pause") == 0) {
                        r1 = qmp_migrate_pause(s.m, 2000);
                        r2 = qmp_migrate_pause(s.m, 2000);
                } else {
                        r1 = qmp_call(s.m, cmd, NULL, 2000, &ret);
                        assert_string_equal(ret, "{}");
                        free(ret);
                        r2 = qmp_call(s.m, cmd, NULL, 2000, NULL);
                }
                assert_int_equal(r1, 0);
                assert_int_equal(r2, -EREMOTEIO);
                assert_string_equal(err_msg(), "QEMU error GenericError: boom");
        }
        /* DO_TEST_GEN(Migrate), (MigrateRecover) */
        fake_expect(s.fake, "migrate", "{\"uri\": \"tcp:localhost:12345\"}");
        fake_reply(s.fake, "{\"return\": {}}");
        fake_expect(s.fake, "migrate", "{\"uri\": \"tcp:localhost:12345\", \"resume\": true}");
        fake_reply(s.fake, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}");
        fake_expect(s.fake, "migrate-recover", "{\"uri\": \"tcp:localhost:12345\"}");
        fake_reply(s.fake, "{\"return\": {}}");
        fake_expect(s.fake, "migrate-recover", "{\"uri\": \"tcp:localhost:12345\"}");
        fake_reply(s.fake, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}");
        fake_expect(s.fake, "migrate-start-postcopy", NULL);
        fake_reply(s.fake, "{\"return\": {}}");
        fake_expect(s.fake, "migrate-continue", "{\"state\": \"pre-switchover\"}");
        fake_reply(s.fake, "{\"return\": {}}");
        assert_int_equal(qmp_migrate(s.m, 2000, "tcp:localhost:12345", false), 0);
        assert_int_equal(qmp_migrate(s.m, 2000, "tcp:localhost:12345", true), -EREMOTEIO);
        assert_int_equal(qmp_migrate_recover(s.m, 2000, "tcp:localhost:12345"), 0);
        assert_int_equal(qmp_migrate_recover(s.m, 2000, "tcp:localhost:12345"), -EREMOTEIO);
        assert_int_equal(qmp_migrate_start_postcopy(s.m, 2000), 0);
        assert_int_equal(qmp_migrate_continue(s.m, 2000, "pre-switchover"), 0);
        session_close(&s, "simple");
        json_object_put(root);
        free(text);
}

/* ---- qemucapabilitiesdata excerpts ------------------------------------- */

/* Pretty-printed objects separated by blank lines, request then reply. */
static json_object *parse_stream(const char *text) {
        json_object *arr = json_object_new_array();
        json_tokener *tok = json_tokener_new();
        const char *p = text;
        size_t left = strlen(text);
        while (left > 0) {
                size_t skip = strspn(p, " \t\r\n");
                json_object *o;
                p += skip;
                left -= skip;
                if (!left)
                        break;
                json_tokener_reset(tok);
                o = json_tokener_parse_ex(tok, p, (int) left);
                assert_non_null(o);
                json_object_array_add(arr, o);
                p += json_tokener_get_parse_end(tok);
                left -= json_tokener_get_parse_end(tok);
        }
        json_tokener_free(tok);
        return arr;
}

static void replay_caps(const char *file, int want_major, int want_minor, int n_caps) {
        char *text = qt_data(file);
        json_object *msgs = parse_stream(text), *version_ret = NULL;
        char greeting[512];
        size_t n = json_object_array_length(msgs);
        Session s;

        assert_true(n % 2 == 0);
        /* the excerpts have no greeting: build one from query-version */
        for (size_t i = 0; i < n; i += 2)
                if (strcmp(str_or(json_object_array_get_idx(msgs, i), "execute", ""), "query-version") == 0)
                        version_ret = member(json_object_array_get_idx(msgs, i + 1), "return");
        assert_non_null(version_ret);
        snprintf(greeting, sizeof(greeting), "{\"QMP\": {\"version\": %s, \"capabilities\": [\"oob\"]}}",
                 json_object_to_json_string(version_ret));

        s.fake = qt_fake(&s.path);
        fake_set_greeting(s.fake, greeting);
        for (size_t i = 0; i < n; i += 2) {
                json_object *req = json_object_array_get_idx(msgs, i);
                json_object *args = member(req, "arguments");
                fake_expect(s.fake, str_or(req, "execute", ""), args ? json_object_to_json_string(args) : NULL);
                /* one line on the wire, like QEMU without pretty=on */
                fake_reply(s.fake, json_object_to_json_string_ext(json_object_array_get_idx(msgs, i + 1),
                                                                  JSON_C_TO_STRING_PLAIN));
        }
        fake_start(s.fake);
        s.m = qt_connect(s.path, NULL);

        for (size_t i = 2; i < n; i += 2) {
                json_object *req = json_object_array_get_idx(msgs, i);
                json_object *reply = json_object_array_get_idx(msgs, i + 1), *err = member(reply, "error");
                const char *cmd = str_or(req, "execute", "");
                if (strcmp(cmd, "query-version") == 0) {
                        QmpVersion v;
                        assert_int_equal(qmp_query_version(s.m, 2000, &v), 0);
                        assert_int_equal(v.major, want_major);
                        assert_int_equal(v.minor, want_minor);
                        assert_int_equal(v.micro, 0);
                        assert_string_equal(v.package, str_or(member(reply, "return"), "package", "?"));
                } else if (strcmp(cmd, "query-migrate-capabilities") == 0) {
                        MigrationCaps caps;
                        assert_int_equal(qmp_query_migrate_capabilities(s.m, 2000, &caps), 0);
                        assert_int_equal(caps.known, (UINT64_C(1) << n_caps) - 1);
                        assert_int_equal(caps.enabled, 0);
                } else {
                        char *ret = NULL, want[512];
                        int r = qmp_call(s.m, cmd, NULL, 2000, &ret);
                        if (err) {
                                snprintf(want, sizeof(want), "QEMU error %s: %s", str_or(err, "class", ""),
                                         str_or(err, "desc", ""));
                                assert_int_equal(r, -EREMOTEIO);
                                assert_string_equal(err_msg(), want);
                                assert_null(ret);
                        } else {
                                json_object *got;
                                assert_int_equal(r, 0);
                                got = json_tokener_parse(ret);
                                assert_true(json_object_equal(got, member(reply, "return")));
                                json_object_put(got);
                                free(ret);
                        }
                }
        }
        session_close(&s, file);
        json_object_put(msgs);
        free(text);
}

static void test_caps_7_2(void **state) {
        (void) state;
        replay_caps("caps_7.2.0_x86_64.excerpt.replies", 7, 2, 21);
}

static void test_caps_4_2(void **state) {
        (void) state;
        replay_caps("caps_4.2.0_x86_64.excerpt.replies", 4, 2, 18);
}

/* ---- qemumigparamsdata ------------------------------------------------- */

/* Members of libvirt's parameter set that Drover's MigrationParams does not
 * carry (compression is not used by Drover). */
static bool unsupported_param(const char *name) {
        return strcmp(name, "compress-level") == 0 || strcmp(name, "compress-threads") == 0 ||
               strcmp(name, "decompress-threads") == 0;
}

static void run_migparams(const char *name, bool has_json) {
        char file[128];
        char *reply_text, *json_text = NULL;
        json_object *reply, *ret, *want = NULL;
        MigrationParams p;
        Session s;

        snprintf(file, sizeof(file), "migparams/%s.reply", name);
        reply_text = qt_data(file);
        reply = json_tokener_parse(reply_text);
        ret = member(reply, "return");
        if (has_json) {
                json_object *full;
                snprintf(file, sizeof(file), "migparams/%s.json", name);
                json_text = qt_data(file);
                full = json_tokener_parse(json_text);
                want = json_object_new_object();
                json_object_object_foreach(full, k, v) if (!unsupported_param(k))
                        json_object_object_add(want, k, json_object_get(v));
                json_object_put(full);
        }

        session_open(&s, NULL);
        fake_expect(s.fake, "query-migrate-parameters", NULL);
        fake_reply(s.fake, reply_text);
        if (want) {
                fake_expect(s.fake, "migrate-set-parameters", json_object_to_json_string(want));
                fake_reply(s.fake, "{\"return\": {}}");
        }
        assert_int_equal(qmp_query_migrate_parameters(s.m, 2000, &p), 0);

        /* every member Drover knows is read with its value */
        assert_int_equal(p.has_max_bandwidth, member(ret, "max-bandwidth") != NULL);
        assert_int_equal(p.has_downtime_limit, member(ret, "downtime-limit") != NULL);
        assert_int_equal(p.has_cpu_throttle_initial, member(ret, "cpu-throttle-initial") != NULL);
        assert_int_equal(p.has_cpu_throttle_increment, member(ret, "cpu-throttle-increment") != NULL);
        assert_int_equal(p.has_tls_creds, member(ret, "tls-creds") != NULL);
        assert_int_equal(p.has_tls_hostname, member(ret, "tls-hostname") != NULL);
        assert_false(p.has_multifd_channels);
        assert_false(p.has_max_postcopy_bandwidth);
        if (p.has_max_bandwidth)
                assert_int_equal(p.max_bandwidth, json_object_get_int64(member(ret, "max-bandwidth")));
        if (p.has_downtime_limit)
                assert_int_equal(p.downtime_limit, json_object_get_int64(member(ret, "downtime-limit")));
        if (p.has_cpu_throttle_initial)
                assert_int_equal(p.cpu_throttle_initial, json_object_get_int64(member(ret, "cpu-throttle-initial")));
        if (p.has_cpu_throttle_increment)
                assert_int_equal(p.cpu_throttle_increment,
                                 json_object_get_int64(member(ret, "cpu-throttle-increment")));
        if (p.has_tls_creds)
                assert_string_equal(p.tls_creds, str_or(ret, "tls-creds", "?"));
        if (p.has_tls_hostname)
                assert_string_equal(p.tls_hostname, str_or(ret, "tls-hostname", "?"));

        /* and sent back as libvirt would (compared as objects by the fake) */
        if (want) {
                char *built = NULL;
                json_object *got;
                assert_int_equal(qmp_build_migrate_set_parameters(&p, &built), 0);
                got = json_tokener_parse(built);
                assert_true(json_object_equal(got, want));
                json_object_put(got);
                free(built);
                assert_int_equal(qmp_migrate_set_parameters(s.m, 2000, &p), 0);
        }
        session_close(&s, name);
        json_object_put(want);
        json_object_put(reply);
        free(reply_text);
        free(json_text);
}

static void test_migparams(void **state) {
        (void) state;
        run_migparams("basic", true);
        run_migparams("tls", true);
        run_migparams("tls-enabled", true);
        run_migparams("tls-hostname", true);
        run_migparams("empty", false);
}

static void test_migparams_unsupported(void **state) {
        char *text = qt_data("migparams/unsupported.reply");
        MigrationParams p;
        Session s;
        (void) state;
        session_open(&s, NULL);
        fake_expect(s.fake, "query-migrate-parameters", NULL);
        fake_reply(s.fake, text);
        assert_int_equal(qmp_query_migrate_parameters(s.m, 2000, &p), -EOPNOTSUPP);
        assert_string_equal(err_msg(), "QEMU error CommandNotFound: The command query-migrate-parameters "
                                       "has not been found");
        session_close(&s, "unsupported");
        free(text);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_monitorjson_cases),
                cmocka_unit_test(test_monitorjson_simple_commands),
                cmocka_unit_test(test_caps_7_2),
                cmocka_unit_test(test_caps_4_2),
                cmocka_unit_test(test_migparams),
                cmocka_unit_test(test_migparams_unsupported),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
