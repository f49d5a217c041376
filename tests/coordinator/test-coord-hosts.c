/* The coordinator's inventory changes (UpdateHost) and the report of a
 * configuration that disagrees with the store, in-process on the real
 * SQLite store with FAKE agents (see coord-harness.h).
 *
 * Each test states a rule of docs/coordinator.md ("Changing a host",
 * "Configuration and store"): a change reaches memory and the store and
 * leaves the other members alone; a change unsafe while the host works is
 * refused and changes nothing anywhere (a new address while a migration
 * leaves or enters it, memory or vCPUs below what its guests use, a new
 * CPU model under running guests); a new address is where the agent is
 * asked from then on; a seed host the store knows with other values is
 * reported member by member, naming both values, and the store's wins.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "coord-harness.h"
#include "err.h"
#include "log.h"

#define GIB 1024

static void assert_contains(const char *text, const char *part) {
        if (!strstr(text, part))
                fail_msg("'%s' does not contain '%s'", text, part);
}

/* Host @name's record as the store has it. */
static StoreHost stored(Coordinator *c, const char *name) {
        StoreHost *hs = NULL, h = { 0 };
        size_t n = 0;
        bool found = false;
        assert_int_equal(c->store->ops->host_list(c->store, &hs, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (strcmp(hs[i].name, name) == 0) {
                        h = hs[i];
                        found = true;
                }
        free(hs);
        assert_true(found);
        return h;
}

static CoordHostView view(Coordinator *c, const char *name) {
        CoordHostView *v, out = { 0 };
        size_t n;
        bool found = false;
        assert_int_equal(coord_hosts(c, &v, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].h.name, name) == 0) {
                        out = v[i];
                        found = true;
                }
        free(v);
        assert_true(found);
        return out;
}

/* The fields given change, in memory and in the store; the others stay. */
static void test_update_changes_only_the_fields_given(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("hosts-update", 2, mem);
        StoreHost want = { .memory_mib = 12 * GIB, .link_bytes_per_s = 1000, .max_outgoing = 3,
                           .cpu_model = "EPYC" /* not in the fields: must not reach the record */ };
        CoordHostView v;
        assert_int_equal(coord_host_update(c, "h1", &want,
                                           COORD_HOST_FIELD_MEMORY_MIB | COORD_HOST_FIELD_LINK_BYTES_PER_S |
                                                   COORD_HOST_FIELD_MAX_OUTGOING,
                                           &v),
                         0);
        assert_int_equal(v.h.memory_mib, 12 * GIB);
        assert_int_equal(v.h.max_outgoing, 3);
        assert_string_equal(v.h.address, "h1:7400");
        assert_string_equal(v.h.cpu_model, "");
        StoreHost s = stored(c, "h1");
        assert_int_equal(s.memory_mib, 12 * GIB);
        assert_int_equal(s.link_bytes_per_s, 1000);
        assert_int_equal(s.max_outgoing, 3);
        assert_string_equal(s.address, "h1:7400");
        assert_string_equal(s.cpu_model, "");
        assert_int_equal(s.state, COORD_HOST_STATE_ENABLED);
        /* malformed requests change nothing */
        assert_int_equal(coord_host_update(c, "h1", &want, 0, NULL), -EINVAL);
        assert_int_equal(coord_host_update(c, "nope", &want, COORD_HOST_FIELD_VCPUS, NULL), -ENOENT);
        StoreHost bad = { .address = "no-port" };
        assert_int_equal(coord_host_update(c, "h1", &bad, COORD_HOST_FIELD_ADDRESS, NULL), -EINVAL);
        StoreHost taken = { .address = "h2:7400" };
        assert_int_equal(coord_host_update(c, "h1", &taken, COORD_HOST_FIELD_ADDRESS, NULL), -EEXIST);
        assert_contains(err_msg(), "h2");
        assert_string_equal(stored(c, "h1").address, "h1:7400");
        assert_int_equal(coord_host_field_from_string("memory_mib"), COORD_HOST_FIELD_MEMORY_MIB);
        assert_int_equal(coord_host_field_from_string("state"), 0);
        ch_free(c);
}

/* A new address while a migration leaves or enters the host: refused
 * (-EBUSY, FAILED_PRECONDITION at the API), nothing changes; once the
 * migration ended it is taken, and the agent is asked there. */
static void test_address_change_waits_for_migrations(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("hosts-address", 2, mem);
        char id[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        assert_int_equal(ch_migrate(c, "a1", "h2", id), 0);
        ch_tick(c);
        assert_int_equal(ch_sub(c, id, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        StoreHost want = { .address = "h1-new:7400", .migration_address = "10.9.9.9" };
        assert_int_equal(coord_host_update(c, "h1", &want, COORD_HOST_FIELD_ADDRESS, NULL), -EBUSY);
        assert_contains(err_msg(), "in flight");
        assert_int_equal(coord_host_update(c, "h2", &want, COORD_HOST_FIELD_MIGRATION_ADDRESS, NULL), -EBUSY);
        assert_string_equal(stored(c, "h1").address, "h1:7400");
        assert_string_equal(view(c, "h1").h.address, "h1:7400");
        assert_string_equal(stored(c, "h2").migration_address, "");
        /* other members may change meanwhile */
        StoreHost link = { .link_bytes_per_s = 5000 };
        assert_int_equal(coord_host_update(c, "h1", &link, COORD_HOST_FIELD_LINK_BYTES_PER_S, NULL), 0);
        fake_mig_end("a1", true, NULL, true);
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(ch_job(c, id).phase, COORD_JOB_PHASE_SUCCEEDED);
        /* the agent now answers at the new address only */
        fake_host_add("h1-new:7400", 32 * GIB, 8);
        fake_host_down("h1:7400", true);
        CoordHostView v;
        assert_int_equal(coord_host_update(c, "h1", &want, COORD_HOST_FIELD_ADDRESS, &v), 0);
        assert_string_equal(v.h.address, "h1-new:7400");
        assert_int_equal(v.h.link_bytes_per_s, 5000);
        assert_string_equal(stored(c, "h1").address, "h1-new:7400");
        ch_heartbeats(c, COORD_MISSES_UNHEALTHY + 1);
        v = view(c, "h1");
        assert_int_equal(v.health, COORD_HOST_HEALTH_HEALTHY);
        assert_int_equal(v.h.memory_mib, 32 * GIB); /* the figures of the agent at the new address */
        /* the old address is free again for another host */
        StoreHost old = { .name = "h9", .address = "h1:7400" };
        assert_int_equal(coord_host_add(c, &old), 0);
        ch_free(c);
}

/* Capacity below what the guests use, or a new CPU model under running
 * guests: refused, nothing changes. */
static void test_capacity_and_cpu_model_guarded_by_guests(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("hosts-capacity", 2, mem);
        ch_guest("h1", "a1", 4 * GIB);
        ch_guest("h1", "a2", 4 * GIB);
        ch_heartbeats(c, 1);
        StoreHost small = { .memory_mib = 6 * GIB, .vcpus = 1, .cpu_model = "EPYC" };
        assert_int_equal(coord_host_update(c, "h1", &small, COORD_HOST_FIELD_MEMORY_MIB, NULL), -EBUSY);
        assert_contains(err_msg(), "8192 MiB its guests use");
        assert_int_equal(coord_host_update(c, "h1", &small, COORD_HOST_FIELD_VCPUS, NULL), -EBUSY);
        assert_int_equal(coord_host_update(c, "h1", &small, COORD_HOST_FIELD_CPU_MODEL, NULL), -EBUSY);
        StoreHost s = stored(c, "h1");
        assert_int_equal(s.memory_mib, 0);
        assert_int_equal(s.vcpus, 0);
        assert_string_equal(s.cpu_model, "");
        /* enough room, and an empty host may change its model */
        small.memory_mib = 8 * GIB;
        assert_int_equal(coord_host_update(c, "h1", &small, COORD_HOST_FIELD_MEMORY_MIB, NULL), 0);
        assert_int_equal(coord_host_update(c, "h2", &small, COORD_HOST_FIELD_CPU_MODEL, NULL), 0);
        assert_string_equal(stored(c, "h2").cpu_model, "EPYC");
        ch_free(c);
}

static char captured[8][1024];
static size_t n_captured;

static void capture(LogLevel level, const char *line, void *opaque) {
        (void) opaque;
        if (level == LOG_LEVEL_WARNING && n_captured < 8)
                snprintf(captured[n_captured++], sizeof(captured[0]), "%s", line);
}

/* A seed host whose address or memory the store has otherwise (changed
 * through the API) is reported at start, one warning per member naming
 * host, member, both values and the winner; the store's values are used. */
static void test_config_disagreement_is_reported(void **state) {
        static CoordConfig cfg;
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("hosts-config", 2, mem);
        StoreHost want = { .memory_mib = 12 * GIB };
        assert_int_equal(coord_host_update(c, "h1", &want, COORD_HOST_FIELD_MEMORY_MIB, NULL), 0);
        cfg = c->cfg;
        ch_free(c);
        /* the configuration now says otherwise for h1's memory and h2's address */
        cfg.hosts[0].memory_mib = 20 * GIB;
        snprintf(cfg.hosts[1].address, sizeof(cfg.hosts[1].address), "h2-other:7400");
        n_captured = 0;
        log_set_sink(capture, NULL);
        int r = coord_new(&cfg, &c);
        log_set_sink(NULL, NULL);
        assert_int_equal(r, 0);
        assert_int_equal(n_captured, 2);
        assert_contains(captured[0], "host h1");
        assert_contains(captured[0], "memory_mib 20480");
        assert_contains(captured[0], "store's 12288");
        assert_contains(captured[0], "the store's value wins");
        assert_contains(captured[1], "host h2");
        assert_contains(captured[1], "address 'h2-other:7400'");
        assert_contains(captured[1], "store's 'h2:7400'");
        assert_int_equal(view(c, "h1").h.memory_mib, 12 * GIB);
        assert_string_equal(view(c, "h2").h.address, "h2:7400");
        /* an agreeing configuration says nothing */
        StoreHost same = stored(c, "h1");
        assert_int_equal(coord_host_config_report(&same, &same), 0);
        coord_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_update_changes_only_the_fields_given),
                cmocka_unit_test(test_address_change_waits_for_migrations),
                cmocka_unit_test(test_capacity_and_cpu_model_guarded_by_guests),
                cmocka_unit_test(test_config_disagreement_is_reported),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
