/* The fake QEMU's schema checker is itself tested: every replay test relies
 * on it to prove that Drover sends only what QEMU 7.2 accepts, so it must
 * accept what real QEMU accepted and reject what real QEMU rejected.  The
 * commands Drover's typed calls build are checked here too, without a
 * socket.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "qmp-priv.h"
#include "every-param.h"
#include "qmptest.h"

static void expect_ok(const char *cmd) {
        char why[512] = "";
        bool ok = qapi_schema_check_command_text(qt_schema(), cmd, why, sizeof(why));
        if (!ok)
                fprintf(stderr, "rejected %s: %s\n", cmd, why);
        assert_true(ok);
}

static void expect_bad(const char *cmd, const char *reason_part) {
        char why[512] = "";
        bool ok = qapi_schema_check_command_text(qt_schema(), cmd, why, sizeof(why));
        if (ok || !strstr(why, reason_part))
                fprintf(stderr, "for %s: ok=%d why='%s', wanted '%s'\n", cmd, ok, why, reason_part);
        assert_false(ok);
        assert_non_null(strstr(why, reason_part));
}

static void test_schema_loads(void **state) {
        (void) state;
        assert_int_equal(qapi_schema_size(qt_schema()), 1051);
}

static void test_accepts_valid(void **state) {
        (void) state;
        expect_ok("{\"execute\": \"qmp_capabilities\", \"id\": 1}");
        expect_ok("{\"execute\": \"query-status\"}");
        expect_ok("{\"execute\": \"query-status\", \"arguments\": {}, \"id\": \"x\"}");
        expect_ok("{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:127.0.0.1:4444\"}}");
        expect_ok("{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"unix:/x\", \"resume\": true}}");
        expect_ok("{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
                  "[{\"capability\": \"events\", \"state\": true}, {\"capability\": \"postcopy-ram\", \"state\": false}]}}");
        /* StrOrNull alternate: both branches */
        expect_ok("{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"tls-creds\": null}}");
        expect_ok("{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"tls-creds\": \"tls0\", "
                  "\"max-bandwidth\": 33554432, \"downtime-limit\": 300}}");
        expect_ok("{\"execute\": \"migrate-continue\", \"arguments\": {\"state\": \"pre-switchover\"}}");
        /* flat union with a discriminator (BlockdevOptions) */
        expect_ok("{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"raw\", "
                  "\"file\": \"drive0-file\", \"node-name\": \"drive0-raw\"}}");
        expect_ok("{\"execute\": \"blockdev-snapshot\", \"arguments\": {\"node\": \"drive0-backing\", "
                  "\"overlay\": \"drive0\"}}");
}

static void test_rejects_what_qemu_rejects(void **state) {
        (void) state;
        /* the three rejections recorded from QEMU 7.2 (seq 22, 24, 26) */
        expect_bad("{\"execute\": \"no-such-command\", \"id\": \"e1\"}", "has not been found");
        expect_bad("{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": \"fast\"}}",
                   "expected int, got string");
        expect_bad("{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
                   "[{\"capability\": \"bogus\", \"state\": true}]}}",
                   "'bogus' is not a value of the enum");
        expect_bad("{\"execute\": \"migrate\", \"arguments\": {}}", "required member 'uri' missing");
        expect_bad("{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"x\", \"speed\": 1}}",
                   "member 'speed' is unexpected");
        expect_bad("{\"execute\": \"migrate\", \"arguments\": {\"uri\": 5}}", "expected string, got int");
        expect_bad("{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
                   "[{\"capability\": \"events\"}]}}", "required member 'state' missing");
        expect_bad("{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": {}}}",
                   "expected an array");
        expect_bad("{\"execute\": \"migrate-continue\", \"arguments\": {\"state\": \"sideways\"}}",
                   "not a value of the enum");
        expect_bad("{\"execute\": \"query-status\", \"arguments\": [1]}", "must be an object");
        expect_bad("{\"execute\": \"query-status\", \"exec-oob\": \"x\"}", "'exec-oob' is unexpected");
        expect_bad("[1, 2]", "must be a JSON object");
        expect_bad("{\"id\": 1}", "lacks member 'execute'");
        expect_bad("{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"raw\", \"node-name\": \"n\"}}",
                   "required member 'file' missing");
        expect_bad("{\"execute\": \"MIGRATION\"}", "has not been found"); /* an event, not a command */
}

/* What Drover builds for the typed calls is what QEMU 7.2 accepts. */
static void test_drover_builders_valid(void **state) {
        (void) state;
        MigrationParams p = {
                .has_max_bandwidth = true, .max_bandwidth = UINT64_C(1) << 40,
                .has_downtime_limit = true, .downtime_limit = 300,
                .has_cpu_throttle_initial = true, .cpu_throttle_initial = 20,
                .has_cpu_throttle_increment = true, .cpu_throttle_increment = 10,
                .has_multifd_channels = true, .multifd_channels = 4,
                .has_max_postcopy_bandwidth = true, .max_postcopy_bandwidth = 0,
                .has_tls_creds = true, .tls_creds = "",
                .has_tls_hostname = true, .tls_hostname = "dst.example",
        };
        char *args = NULL, cmd[4096];

        assert_int_equal(qmp_build_migrate_set_parameters(&p, &args), 0);
        snprintf(cmd, sizeof(cmd), "{\"execute\": \"migrate-set-parameters\", \"arguments\": %s, \"id\": 3}", args);
        expect_ok(cmd);
        free(args);

        assert_int_equal(qmp_build_migrate_set_capabilities((UINT64_C(1) << MIGRATION_CAP_MAX) - 1, true, &args), 0);
        snprintf(cmd, sizeof(cmd), "{\"execute\": \"migrate-set-capabilities\", \"arguments\": %s}", args);
        expect_ok(cmd);
        free(args);

        /* an empty or out-of-range mask is refused before anything is sent */
        assert_int_equal(qmp_build_migrate_set_capabilities(0, true, &args), -EINVAL);
        assert_int_equal(qmp_build_migrate_set_capabilities(UINT64_C(1) << MIGRATION_CAP_MAX, true, &args),
                         -EINVAL);
}

/* typed -> migrate-set-parameters arguments -> QEMU 7.2's schema -> parsed
 * back as a query-migrate-parameters reply -> the same typed value. */
static void round_trip(const MigrationParams *p, const char *label) {
        MigrationParams back;
        char *args = NULL, cmd[4096];

        assert_int_equal(qmp_build_migrate_set_parameters(p, &args), 0);
        snprintf(cmd, sizeof(cmd), "{\"execute\": \"migrate-set-parameters\", \"arguments\": %s, \"id\": 3}", args);
        expect_ok(cmd);
        memset(&back, 0xa5, sizeof(back));
        assert_int_equal(qmp_parse_migrate_params(args, &back), 0);
        if (memcmp(p, &back, sizeof(back)) != 0)
                fail_msg("%s: %s did not read back as sent", label, args);
        free(args);
}

static void test_every_param_round_trips(void **state) {
        MigrationParams all;
        (void) state;

        tu_fill_every_param(&all);
        round_trip(&all, "every member");
        /* each member alone: its own key, QEMU accepts it, nothing else set */
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                MigrationParams one;
                char *args = NULL, want[96];

                memset(&one, 0, sizeof(one));
                *migration_param_has_ref(&one, i) = true;
                memcpy((char *) &one + i->value_offset, (const char *) &all + i->value_offset,
                       i->value_size);
                round_trip(&one, i->name);
                assert_int_equal(qmp_build_migrate_set_parameters(&one, &args), 0);
                snprintf(want, sizeof(want), "{\"%s\":", i->name);
                if (strncmp(args, want, strlen(want)) != 0 || strchr(args + strlen(want), ','))
                        fail_msg("%s alone built %s", i->name, args);
                free(args);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_schema_loads),
                cmocka_unit_test(test_accepts_valid),
                cmocka_unit_test(test_rejects_what_qemu_rejects),
                cmocka_unit_test(test_drover_builders_valid),
                cmocka_unit_test(test_every_param_round_trips),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
