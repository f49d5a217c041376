/* The coordinator's configuration file (coordinator/coord-config.c):
 * defaults, the worker lanes ("rpc_lanes"), the old "rpc_threads" accepted
 * and flagged, the store ("store": sqlite or etcd, "etcd", "advertise",
 * the old "db"), and refusals that name the member and change nothing. */
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

/* "compressible": guest names for the stream choice; none by default; a
 * name that is not a string is refused naming its place. */
static void test_compressible(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{}", &c), 0);
        assert_int_equal(c.n_compressible, 0);
        assert_int_equal(load("{\"compressible\": [\"web1\", \"cache2\"]}", &c), 0);
        assert_int_equal(c.n_compressible, 2);
        assert_string_equal(c.compressible[0], "web1");
        assert_string_equal(c.compressible[1], "cache2");
        assert_int_equal(load("{\"compressible\": [\"web1\", 7]}", &c), -EINVAL);
        assert_non_null(strstr(err_msg(), "compressible[1]"));
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

/* "store": SQLite by default, "sqlite:PATH", the old "db" still read (and
 * flagged), both at once refused. */
static void test_store_sqlite(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{}", &c), 0);
        assert_int_equal(c.store_kind, COORD_STORE_SQLITE);
        assert_string_equal(c.db_path, "/var/lib/drover/coordinator.db");
        assert_false(c.db_given);
        assert_int_equal(load("{\"store\": \"sqlite:/srv/c.db\"}", &c), 0);
        assert_int_equal(c.store_kind, COORD_STORE_SQLITE);
        assert_string_equal(c.db_path, "/srv/c.db");
        assert_int_equal(load("{\"db\": \"/srv/old.db\"}", &c), 0);
        assert_string_equal(c.db_path, "/srv/old.db");
        assert_true(c.db_given);
        assert_int_equal(load("{\"db\": \"/a.db\", \"store\": \"sqlite:/b.db\"}", &c), -EINVAL);
        assert_non_null(strstr(err_msg(), "'db' and 'store'"));
        assert_int_equal(load("{\"dev_mode\": true, \"store\": \"sqlite:relative.db\"}", &c), 0);
        assert_int_equal(coord_config_validate(&c), -EINVAL);
        assert_non_null(strstr(err_msg(), "'store'"));
}

/* "store": "etcd:...": endpoints, the "etcd" member with its defaults, and
 * "advertise" defaulting to the first listen address. */
static void test_store_etcd(void **state) {
        CoordConfig c;
        (void) state;
        assert_int_equal(load("{\"dev_mode\": true, \"listen\": [\"127.0.0.1:7500\"], "
                              "\"store\": \"etcd:127.0.0.1:2379,[::1]:2379,localhost:2381\"}", &c), 0);
        assert_int_equal(c.store_kind, COORD_STORE_ETCD);
        assert_string_equal(c.etcd_endpoints, "127.0.0.1:2379,[::1]:2379,localhost:2381");
        assert_string_equal(c.etcd_prefix, "/drover");
        assert_int_equal(c.etcd_lease_ttl_s, 3);
        assert_string_equal(c.advertise, "127.0.0.1:7500");
        assert_int_equal(coord_config_validate(&c), 0);
        assert_int_equal(load("{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:2379\", \"advertise\": \"10.0.0.1:7500\", "
                              "\"etcd\": {\"prefix\": \"/drover-b\", \"lease_ttl_s\": 5}}", &c), 0);
        assert_string_equal(c.etcd_prefix, "/drover-b");
        assert_int_equal(c.etcd_lease_ttl_s, 5);
        assert_string_equal(c.advertise, "10.0.0.1:7500");
        assert_int_equal(coord_config_validate(&c), 0);
        /* etcd URLs as etcd prints them (plaintext: http://). */
        assert_int_equal(load("{\"dev_mode\": true, \"store\": \"etcd:http://127.0.0.1:2379/,http://[::1]:2379\", "
                              "\"advertise\": \"10.0.0.1:7500\"}", &c), 0);
        assert_int_equal(coord_config_validate(&c), 0);
}

/* Each refusal names the member at fault. */
static void test_store_refusals(void **state) {
        static const struct { const char *text, *says; bool at_load; } bad[] = {
                { "{\"store\": \"mysql:x\"}", "'store' must be", true },
                { "{\"store\": \"sqlite:/a.db\", \"etcd\": {}}", "'etcd' is read only", true },
                { "{\"store\": \"etcd:127.0.0.1:2379\", \"etcd\": {\"lease_ttl_s\": 1}}", "lease_ttl_s", true },
                { "{\"store\": \"etcd:127.0.0.1:2379\", \"etcd\": {\"peer\": 1}}", "peer", true },
                { "{\"dev_mode\": true, \"store\": \"etcd:\"}", "'store'", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1\"}", "endpoint 1", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:2379,,127.0.0.1:2380\"}", "endpoint 2", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:99999\"}", "endpoint 1", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:10.0.0.5:2379\"}", "'etcd' needs cert, key and ca", false },
                { "{\"store\": \"etcd:127.0.0.1:2379\", \"tls\": {\"cert\": \"/dev/null\", \"key\": \"/dev/null\", "
                  "\"ca\": \"/dev/null\"}}", "'etcd' needs cert, key and ca", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:2379\", \"etcd\": {\"cert\": \"/dev/null\"}}",
                  "together", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:2379\", \"etcd\": {\"prefix\": \"drover\"}}",
                  "'etcd.prefix'", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:2379\", \"etcd\": {\"prefix\": \"/drover/\"}}",
                  "'etcd.prefix'", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:127.0.0.1:2379\", \"advertise\": \"nowhere\"}", "'advertise'",
                  false },
                { "{\"dev_mode\": true, \"store\": \"etcd:1:1,1:2,1:3,1:4,1:5,1:6,1:7,1:8,1:9\"}", "at most 8", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:https://127.0.0.1:2379\"}", "https:// needs", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:ftp://127.0.0.1:2379\"}", "endpoint 1", false },
                { "{\"dev_mode\": true, \"store\": \"etcd:http://\"}", "endpoint 1", false },
        };
        (void) state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                CoordConfig c;
                int r = load(bad[i].text, &c);
                if (!bad[i].at_load) {
                        assert_int_equal(r, 0);
                        r = coord_config_validate(&c);
                }
                assert_int_equal(r, -EINVAL);
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
                cmocka_unit_test(test_compressible),
                cmocka_unit_test(test_lane_refusals),
                cmocka_unit_test(test_metrics_listen),
                cmocka_unit_test(test_store_sqlite),
                cmocka_unit_test(test_store_etcd),
                cmocka_unit_test(test_store_refusals),
        };
        dir = tu_tmpdir("coord-config");
        return cmocka_run_group_tests_name("coord-config", tests, NULL, NULL);
}
