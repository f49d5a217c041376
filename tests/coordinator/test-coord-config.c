/* The coordinator's configuration file (coordinator/coord-config.c):
 * defaults, the worker lanes ("rpc_lanes"), the old "rpc_threads" accepted
 * and flagged, and refusals that name the member and change nothing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "coord.h"
#include "err.h"
#include "testutil.h"

static const char *dir;

/* Write @text to a file and load it into *ret; returns the loader's code. */
static int load(const char *text, CoordConfig *ret) {
        char path[512];
        snprintf(path, sizeof(path), "%s/coordinator.json", dir);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        return coord_config_load(path, ret);
}

static void test_lane_defaults(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{}", &c), 0);
        assert_int_equal(c.lane_queries, 4);
        assert_int_equal(c.lane_control, 4);
        assert_int_equal(c.lane_streams, 8);
        assert_false(c.rpc_threads_given);
}

static void test_lanes_set(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{\"rpc_lanes\": {\"queries\": 2, \"streams\": 32}}", &c), 0);
        assert_int_equal(c.lane_queries, 2);
        assert_int_equal(c.lane_control, 4); /* not given: default */
        assert_int_equal(c.lane_streams, 32);
}

static void test_old_rpc_threads_flagged(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{\"rpc_threads\": 16}", &c), 0);
        assert_true(c.rpc_threads_given);
        assert_int_equal(c.lane_queries, 4);
}

/* metrics_listen: off by default, read from the file, and validated:
 * a bad address refuses the configuration naming the member. */
static void test_metrics_listen(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{}", &c), 0);
        assert_string_equal(c.metrics_listen, "");
        assert_int_equal(load("{\"dev_mode\": true, \"metrics_listen\": \"127.0.0.1:9465\"}", &c), 0);
        assert_string_equal(c.metrics_listen, "127.0.0.1:9465");
        assert_int_equal(coord_config_validate(&c), 0);
        assert_int_equal(load("{\"dev_mode\": true, \"metrics_listen\": \"coordinator:9465\"}", &c), 0);
        assert_int_equal(coord_config_validate(&c), -EINVAL);
        assert_non_null(strstr(err_msg(), "'metrics_listen'"));
        assert_true(load("{\"metrics_listen\": 9465}", &c) < 0);
}

static void test_lane_refusals(void **state) {
        static const struct { const char *text, *says; } bad[] = {
                { "{\"rpc_lanes\": {\"peer\": 4}}", "peer" },
                { "{\"rpc_lanes\": {\"queries\": 0}}", "queries" },
                { "{\"rpc_lanes\": {\"control\": 257}}", "control" },
                { "{\"rpc_lanes\": {\"streams\": \"8\"}}", "streams" },
                { "{\"rpc_lanes\": 8}", "rpc_lanes" },
        };
        (void) state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                CoordConfig c;
                assert_int_equal(load(bad[i].text, &c), -EINVAL);
                if (!strstr(err_msg(), bad[i].says))
                        fail_msg("%s: error '%s' does not name '%s'", bad[i].text, err_msg(), bad[i].says);
                err_clear();
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lane_defaults),
                cmocka_unit_test(test_lanes_set),
                cmocka_unit_test(test_old_rpc_threads_flagged),
                cmocka_unit_test(test_lane_refusals),
                cmocka_unit_test(test_metrics_listen),
        };
        dir = tu_tmpdir("coord-config");
        return cmocka_run_group_tests_name("coord-config", tests, NULL, NULL);
}
