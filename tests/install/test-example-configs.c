/* The example configurations installed as /etc/drover/agent.json.example
 * and coordinator.json.example (docs/examples/), and coordinator-ha.json
 * (etcd): each passes its daemon's
 * reader and validator as written, but for the TLS files, which cannot
 * exist on a machine that is not the cluster's (the test shows that is the
 * one complaint, then points them at files that exist), and keeps the
 * default paths that the systemd units make writable (tests/install/
 * check-units.py checks the units' side). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-config.h"
#include "coord.h"
#include "err.h"
#include "testutil.h"

static const char *dir;

/* An empty file that exists and can be read, as a stand-in TLS file. */
static const char *stand_in(const char *name) {
        const char *p = tu_path(dir, name);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs("-----BEGIN CERTIFICATE-----\n", f);
        fclose(f);
        return p;
}

static void test_agent_example_is_valid(void **state) {
        AgentConfig c, d;
        (void) state;
        if (agent_config_load(tu_source_path("docs/examples/agent.json"), &c) < 0)
                fail_msg("%s", err_msg());
        /* where QEMU is not installed, only that check is stood in for */
        if (access(c.qemu_binary, X_OK) < 0)
                assert_int_equal(agent_config_set(&c, "qemu_binary", "/bin/sh"), 0);
        assert_int_equal(agent_config_validate(&c), -EINVAL);
        if (!strstr(err_msg(), "tls.cert"))
                fail_msg("the example's only complaint should be its TLS files, not: %s", err_msg());
        err_clear();
        assert_int_equal(agent_config_set(&c, "tls.cert", stand_in("agent.crt")), 0);
        assert_int_equal(agent_config_set(&c, "tls.key", stand_in("agent.key")), 0);
        assert_int_equal(agent_config_set(&c, "tls.ca", stand_in("ca.crt")), 0);
        if (agent_config_validate(&c) < 0)
                fail_msg("%s", err_msg());

        agent_config_defaults(&d);
        assert_string_equal(c.state_dir, d.state_dir);
        assert_string_equal(c.run_dir, d.run_dir);
        assert_string_equal(c.listen[0], d.listen[0]);
        assert_int_equal(c.n_image_roots, 1);
        assert_string_equal(c.image_roots[0], d.image_roots[0]);
        assert_false(c.dev_mode);
}

static void test_coordinator_example_is_valid(void **state) {
        CoordConfig c, d;
        (void) state;
        if (coord_config_load(tu_source_path("docs/examples/coordinator.json"), &c) < 0)
                fail_msg("%s", err_msg());
        assert_int_not_equal(coord_config_validate(&c), 0);
        if (!strstr(err_msg(), "tls"))
                fail_msg("the example's only complaint should be its TLS files, not: %s", err_msg());
        err_clear();
        snprintf(c.tls_cert, sizeof(c.tls_cert), "%s", stand_in("coordinator.crt"));
        snprintf(c.tls_key, sizeof(c.tls_key), "%s", stand_in("coordinator.key"));
        snprintf(c.tls_ca, sizeof(c.tls_ca), "%s", stand_in("ca.crt"));
        if (coord_config_validate(&c) < 0)
                fail_msg("%s", err_msg());

        coord_config_defaults(&d);
        assert_string_equal(c.db_path, d.db_path);
        assert_string_equal(c.listen[0], d.listen[0]);
        assert_false(c.dev_mode);
        assert_int_equal(c.n_hosts, 2);
}

/* The HA example (two or more coordinators on etcd): valid once its TLS
 * files exist, both the API's and etcd's. */
static void test_coordinator_ha_example_is_valid(void **state) {
        CoordConfig c;
        (void) state;
        if (coord_config_load(tu_source_path("docs/examples/coordinator-ha.json"), &c) < 0)
                fail_msg("%s", err_msg());
        assert_int_equal(c.store_kind, COORD_STORE_ETCD);
        snprintf(c.tls_cert, sizeof(c.tls_cert), "%s", stand_in("coordinator.crt"));
        snprintf(c.tls_key, sizeof(c.tls_key), "%s", stand_in("coordinator.key"));
        snprintf(c.tls_ca, sizeof(c.tls_ca), "%s", stand_in("ca.crt"));
        assert_int_not_equal(coord_config_validate(&c), 0);
        if (!strstr(err_msg(), "etcd"))
                fail_msg("the example's only complaint should be its etcd TLS files, not: %s", err_msg());
        err_clear();
        snprintf(c.etcd_cert, sizeof(c.etcd_cert), "%s", stand_in("etcd-client.crt"));
        snprintf(c.etcd_key, sizeof(c.etcd_key), "%s", stand_in("etcd-client.key"));
        snprintf(c.etcd_ca, sizeof(c.etcd_ca), "%s", stand_in("etcd-ca.crt"));
        if (coord_config_validate(&c) < 0)
                fail_msg("%s", err_msg());
        assert_string_equal(c.advertise, "10.0.0.10:7500");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_agent_example_is_valid),
                cmocka_unit_test(test_coordinator_example_is_valid),
                cmocka_unit_test(test_coordinator_ha_example_is_valid),
        };
        dir = tu_tmpdir("example-configs");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
