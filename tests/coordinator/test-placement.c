/* Unit tests for placement (coordinator/placement.h).
 *
 * One test per rule (state, health, source, memory, vCPUs, CPU model,
 * anti-affinity with residents and with earlier placements), the requested
 * destination with every reason it can be refused, the order (first-fit
 * decreasing), the tie-break, the estimate formula, bad input, and a
 * property test: 200 random clusters planned, then replayed guest by guest
 * by a naive reference that re-checks every rule against the state at that
 * guest's turn, so a blocked guest really had no valid host and a placed one
 * went to the best; and a second reference, a sorted list of the hosts per
 * guest, rebuilds every reason, compared byte for byte.  That is the proof
 * that placement.c's indexes (its bitsets over the ranking) change nothing:
 * the reference is the plain scan placement.c used to do.  One cluster in
 * eight is large (up to 400 hosts, 3,000 guests, 40 groups), so bitsets
 * span several words and groups get bitsets of their own, and one in four
 * has guests of more than 64 vCPUs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "placement.h"
#include "testutil.h"

#define GIB 1024

static PlaceHost mkhost(const char *name, const char *model, uint64_t mem_mib, uint32_t vcpus) {
        PlaceHost h = { .state = PLACE_HOST_ENABLED, .healthy = true, .memory_mib = mem_mib, .vcpus = vcpus };
        snprintf(h.name, sizeof(h.name), "%s", name);
        snprintf(h.cpu_model, sizeof(h.cpu_model), "%s", model);
        return h;
}

static PlaceGuest mkguest(const char *name, const char *source, const char *model, uint64_t mem_mib,
                          uint32_t vcpus) {
        PlaceGuest g = { .memory_mib = mem_mib, .vcpus = vcpus };
        snprintf(g.name, sizeof(g.name), "%s", name);
        snprintf(g.source, sizeof(g.source), "%s", source);
        snprintf(g.cpu_model, sizeof(g.cpu_model), "%s", model);
        return g;
}

static PlaceResident mkresident(const char *host, const char *group) {
        PlaceResident r;
        memset(&r, 0, sizeof(r));
        snprintf(r.host, sizeof(r.host), "%s", host);
        snprintf(r.anti_affinity, sizeof(r.anti_affinity), "%s", group);
        return r;
}

#define assert_contains(s, sub)                                                            \
        do {                                                                               \
                if (!strstr((s), (sub)))                                                   \
                        fail_msg("\"%s\" does not contain \"%s\"", (s), (sub));            \
        } while (0)

/* Plan and return the number placed; asserts no error. */
static int plan(const PlaceHost *hosts, size_t nh, const PlaceGuest *guests, size_t ng,
                const PlaceResident *residents, size_t nr, PlaceResult *results) {
        int r = place_guests(hosts, nh, guests, ng, residents, nr, NULL, results);
        if (r < 0)
                fail_msg("place_guests: %s", err_str(r));
        return r;
}

/* ---- the rules, one by one ---------------------------------------------- */

static void test_most_free_memory(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 32), mkhost("a", "X", 16 * GIB, 32),
                              mkhost("b", "X", 32 * GIB, 32), mkhost("c", "X", 24 * GIB, 32) };
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 2);
        PlaceResult res;

        assert_int_equal(plan(hosts, 4, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 2);
        assert_string_equal(res.reason, "most free memory after the move (28672 MiB) among hosts with CPU model X");
        assert_true(res.estimated_s > 0.5);
}

static void test_rule_state(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 8 * GIB, 8), mkhost("drain", "X", 64 * GIB, 32),
                              mkhost("maint", "X", 64 * GIB, 32), mkhost("ok", "X", 8 * GIB, 8) };
        hosts[1].state = PLACE_HOST_DRAINING;
        hosts[2].state = PLACE_HOST_MAINTENANCE;
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 2);
        PlaceResult res;

        assert_int_equal(plan(hosts, 4, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 3);

        /* without "ok", nothing is left: the reason counts the others */
        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 0);
        assert_int_equal(res.host, -1);
        assert_string_equal(res.reason, "no enabled healthy host with CPU model X: 1 draining, 1 in maintenance");
        assert_true(res.estimated_s == 0);
}

static void test_rule_health(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 8 * GIB, 8), mkhost("sick", "X", 64 * GIB, 32),
                              mkhost("ok", "X", 8 * GIB, 8) };
        hosts[1].healthy = false;
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 2);
        PlaceResult res;

        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 2);
        assert_int_equal(plan(hosts, 2, &g, 1, NULL, 0, &res), 0);
        assert_string_equal(res.reason, "no enabled healthy host with CPU model X: 1 unhealthy");
}

static void test_rule_source_excluded(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 32), mkhost("other", "X", 8 * GIB, 8) };
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 2);
        PlaceResult res;

        assert_int_equal(plan(hosts, 2, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 1);
        assert_int_equal(plan(hosts, 1, &g, 1, NULL, 0, &res), 0);
        assert_string_equal(res.reason, "no host other than the source has CPU model X");
}

static void test_rule_memory(void **state) {
        PlaceHost hosts[] = { mkhost("src", "Skylake-Server", 64 * GIB, 32),
                              mkhost("host-a", "Skylake-Server", 16 * GIB, 32),
                              mkhost("host-b", "Skylake-Server", 16 * GIB, 32),
                              mkhost("host-c", "Cascadelake", 64 * GIB, 32) };
        hosts[1].memory_used_mib = 15 * GIB;
        hosts[2].memory_used_mib = 14 * GIB;
        PlaceGuest g = mkguest("db1", "src", "Skylake-Server", 4 * GIB, 2);
        PlaceResult res;

        assert_int_equal(plan(hosts, 4, &g, 1, NULL, 0, &res), 0);
        assert_int_equal(res.host, -1);
        assert_string_equal(res.reason, "no enabled healthy host with 4096 MiB free and CPU model Skylake-Server "
                                        "(best: host-b, 2048 MiB free)");

        /* exactly enough memory is enough */
        g.memory_mib = 2 * GIB;
        assert_int_equal(plan(hosts, 4, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 2);
}

static void test_rule_memory_accumulates(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("a", "X", 10 * GIB, 64) };
        PlaceGuest g[] = { mkguest("g1", "src", "X", 4 * GIB, 1), mkguest("g2", "src", "X", 4 * GIB, 1),
                           mkguest("g3", "src", "X", 4 * GIB, 1) };
        PlaceResult res[3];

        assert_int_equal(plan(hosts, 2, g, 3, NULL, 0, res), 2);
        assert_int_equal(res[0].host, 1);
        assert_int_equal(res[1].host, 1);
        assert_int_equal(res[2].host, -1);
        assert_string_equal(res[1].reason, "most free memory after the move (2048 MiB) among hosts with CPU model X");
        assert_string_equal(res[2].reason,
                            "no enabled healthy host with 4096 MiB free and CPU model X (best: a, 2048 MiB free)");
}

static void test_rule_vcpus(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("big", "X", 64 * GIB, 4),
                              mkhost("small", "X", 16 * GIB, 16) };
        hosts[1].vcpus_used = 2;
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 4);
        PlaceResult res;

        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 2);
        assert_string_equal(res.reason, "most free memory after the move (12288 MiB) among hosts with CPU model X; "
                                        "passed over big (2 vCPUs free)");

        /* vCPUs run out over the plan too */
        PlaceGuest two[] = { mkguest("g1", "src", "X", GIB, 10), mkguest("g2", "src", "X", GIB, 10) };
        PlaceResult r2[2];
        assert_int_equal(plan(hosts, 3, two, 2, NULL, 0, r2), 1);
        assert_int_equal(r2[0].host, 2);
        assert_int_equal(r2[1].host, -1);
        assert_string_equal(r2[1].reason, "no enabled healthy host with 10 vCPUs and 1024 MiB free and CPU model X "
                                          "(best: small, 6 vCPUs free)");
}

static void test_rule_cpu_model(void **state) {
        PlaceHost hosts[] = { mkhost("src", "Skylake", 64 * GIB, 64), mkhost("epyc", "EPYC", 64 * GIB, 64),
                              mkhost("sky", "Skylake", 8 * GIB, 8) };
        PlaceGuest g = mkguest("web1", "src", "Skylake", 4 * GIB, 2);
        PlaceResult res;

        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 2);

        PlaceGuest odd = mkguest("web2", "src", "Haswell", GIB, 1);
        assert_int_equal(plan(hosts, 3, &odd, 1, NULL, 0, &res), 0);
        assert_string_equal(res.reason, "no host has CPU model Haswell");

        /* an empty model matches only hosts with an empty model, and shows */
        PlaceGuest none = mkguest("web3", "src", "", GIB, 1);
        assert_int_equal(plan(hosts, 3, &none, 1, NULL, 0, &res), 0);
        assert_string_equal(res.reason, "no host has CPU model \"\"");
}

static void test_anti_affinity_residents(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("host-a", "X", 32 * GIB, 32),
                              mkhost("host-b", "X", 24 * GIB, 32), mkhost("host-c", "X", 16 * GIB, 32) };
        PlaceResident res_in[] = { mkresident("host-a", "db"), mkresident("host-b", "db"),
                                   mkresident("host-c", "web"), mkresident("gone", "db") };
        PlaceGuest g = mkguest("db3", "src", "X", 4 * GIB, 2);
        snprintf(g.anti_affinity, sizeof(g.anti_affinity), "db");
        PlaceResult res;

        assert_int_equal(plan(hosts, 4, &g, 1, res_in, 4, &res), 1);
        assert_int_equal(res.host, 3);
        assert_string_equal(res.reason, "most free memory after the move (12288 MiB) among hosts with CPU model X; "
                                        "passed over host-a (anti-affinity group db) and 1 more");

        /* without host-c only hosts with the group are left */
        assert_int_equal(plan(hosts, 3, &g, 1, res_in, 4, &res), 0);
        assert_string_equal(res.reason, "anti-affinity group db already on host-a and host-b, all the hosts with room");

        /* a guest without a group ignores groups */
        g.anti_affinity[0] = '\0';
        assert_int_equal(plan(hosts, 3, &g, 1, res_in, 4, &res), 1);
        assert_int_equal(res.host, 1);
}

static void test_anti_affinity_in_plan(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("a", "X", 64 * GIB, 64),
                              mkhost("b", "X", 8 * GIB, 64) };
        PlaceGuest g[] = { mkguest("db1", "src", "X", 2 * GIB, 1), mkguest("db2", "src", "X", 2 * GIB, 1),
                           mkguest("db3", "src", "X", 2 * GIB, 1), mkguest("web", "src", "X", 2 * GIB, 1) };
        for (int i = 0; i < 3; i++)
                snprintf(g[i].anti_affinity, sizeof(g[i].anti_affinity), "db");
        PlaceResult res[4];

        assert_int_equal(plan(hosts, 3, g, 4, NULL, 0, res), 3);
        assert_int_equal(res[0].host, 1);
        assert_int_equal(res[1].host, 2);
        assert_int_equal(res[2].host, -1);
        assert_string_equal(res[2].reason, "anti-affinity group db already on a and b, all the hosts with room");
        assert_int_equal(res[3].host, 1);

        /* the only host with room */
        PlaceGuest two[] = { mkguest("db1", "src", "X", 2 * GIB, 1), mkguest("db2", "src", "X", 2 * GIB, 1) };
        snprintf(two[0].anti_affinity, sizeof(two[0].anti_affinity), "db");
        snprintf(two[1].anti_affinity, sizeof(two[1].anti_affinity), "db");
        assert_int_equal(plan(hosts, 2, two, 2, NULL, 0, res), 1);
        assert_string_equal(res[1].reason, "anti-affinity group db already on a, the only host with room");
}

static void test_anti_affinity_many_hosts(void **state) {
        PlaceHost hosts[7];
        PlaceResident res_in[6];
        char name[16];
        hosts[0] = mkhost("src", "X", 64 * GIB, 64);
        for (int i = 1; i < 7; i++) {
                snprintf(name, sizeof(name), "h%d", i);
                hosts[i] = mkhost(name, "X", (uint64_t) (10 - i) * GIB, 64);
                res_in[i - 1] = mkresident(name, "db");
        }
        PlaceGuest g = mkguest("db9", "src", "X", GIB, 1);
        snprintf(g.anti_affinity, sizeof(g.anti_affinity), "db");
        PlaceResult res;

        assert_int_equal(plan(hosts, 7, &g, 1, res_in, 6, &res), 0);
        assert_string_equal(res.reason, "anti-affinity group db already on h1, h2, h3 and 3 more, all the hosts with room");
}

/* A guest wider than the vCPU bitsets (64): a host with 64 to 71 free is
 * not one with room for 72, neither in the count nor as the best. */
static void test_wide_guest_reasons(void **state) {
        PlaceHost hosts[8];
        PlaceResident res_in[5];
        char name[16];
        hosts[0] = mkhost("src", "X", 64 * GIB, 128);
        for (int i = 1; i < 8; i++) {
                snprintf(name, sizeof(name), "h%d", i);
                hosts[i] = mkhost(name, "X", (uint64_t) (20 - i) * GIB, 128);
                if (i <= 5)
                        res_in[i - 1] = mkresident(name, "db");
        }
        hosts[6].vcpus_used = 58; /* 70 free: at least 64, short of 72 */
        hosts[7].vcpus_used = 60; /* 68 free */
        PlaceGuest g = mkguest("db9", "src", "X", GIB, 72);
        snprintf(g.anti_affinity, sizeof(g.anti_affinity), "db");
        PlaceResult res;

        assert_int_equal(plan(hosts, 8, &g, 1, res_in, 5, &res), 0);
        assert_string_equal(res.reason, "anti-affinity group db already on h1, h2, h3 and 2 more, all the hosts with room");

        /* no group: the best of the hosts short of vCPUs, past 64 */
        for (int i = 1; i <= 5; i++)
                hosts[i].vcpus_used = 128;
        g.anti_affinity[0] = '\0';
        assert_int_equal(plan(hosts, 8, &g, 1, NULL, 0, &res), 0);
        assert_string_equal(res.reason, "no enabled healthy host with 72 vCPUs and 1024 MiB free and CPU model X "
                                        "(best: h6, 70 vCPUs free)");
}

/* ---- requested destination ---------------------------------------------- */

static void test_requested_valid(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("a", "X", 64 * GIB, 64),
                              mkhost("b", "X", 8 * GIB, 8) };
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 2);
        snprintf(g.requested, sizeof(g.requested), "b");
        PlaceResult res;

        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 2);
        assert_string_equal(res.reason, "requested destination; 4096 MiB and 6 vCPUs free after the move");
}

/* Plan @g, requested to @dest, on a fresh copy of the cluster; return the reason. */
static void check_requested_refused(const char *dest, PlaceGuest g, const char *want) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64),      mkhost("ok", "X", 64 * GIB, 64),
                              mkhost("host-c", "X", 64 * GIB, 64),   mkhost("maint", "X", 64 * GIB, 64),
                              mkhost("sick", "X", 64 * GIB, 64),     mkhost("epyc", "EPYC", 64 * GIB, 64),
                              mkhost("small", "X", 2 * GIB, 64),     mkhost("fewcpu", "X", 64 * GIB, 1),
                              mkhost("db-here", "X", 64 * GIB, 64) };
        hosts[2].state = PLACE_HOST_DRAINING;
        hosts[3].state = PLACE_HOST_MAINTENANCE;
        hosts[4].healthy = false;
        PlaceResident r = mkresident("db-here", "db");
        PlaceResult res;

        snprintf(g.requested, sizeof(g.requested), "%s", dest);
        assert_int_equal(place_guests(hosts, ELEMENTSOF(hosts), &g, 1, &r, 1, NULL, &res), 0);
        assert_int_equal(res.host, -1);
        assert_string_equal(res.reason, want);
}

static void test_requested_invalid(void **state) {
        PlaceGuest g = mkguest("db1", "src", "X", 4 * GIB, 2);
        snprintf(g.anti_affinity, sizeof(g.anti_affinity), "db");

        check_requested_refused("nowhere", g, "requested destination nowhere unknown");
        check_requested_refused("src", g, "requested destination src is the source");
        check_requested_refused("host-c", g, "requested destination host-c is draining");
        check_requested_refused("maint", g, "requested destination maint is in maintenance");
        check_requested_refused("sick", g, "requested destination sick is unhealthy");
        check_requested_refused("epyc", g, "requested destination epyc has CPU model EPYC, the guest needs X");
        check_requested_refused("small", g, "requested destination small has 2048 MiB free, the guest needs 4096 MiB");
        check_requested_refused("fewcpu", g, "requested destination fewcpu has 1 vCPUs free, the guest needs 2");
        check_requested_refused("db-here", g, "requested destination db-here already has anti-affinity group db");
}

static void test_requested_after_earlier_placement(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("a", "X", 10 * GIB, 64),
                              mkhost("b", "X", 64 * GIB, 64) };
        /* all to "a" (like MigrateGuests' to_host): the largest first, while
         * each passes the checks against what the plan already put there */
        PlaceGuest g[] = { mkguest("g1", "src", "X", 2 * GIB, 1), mkguest("g2", "src", "X", 6 * GIB, 1),
                           mkguest("g3", "src", "X", 5 * GIB, 1), mkguest("g4", "src", "X", 1 * GIB, 1) };
        for (int i = 0; i < 4; i++)
                snprintf(g[i].requested, sizeof(g[i].requested), "a");
        snprintf(g[0].anti_affinity, sizeof(g[0].anti_affinity), "db");
        snprintf(g[3].anti_affinity, sizeof(g[3].anti_affinity), "db");
        PlaceResult res[4];

        assert_int_equal(plan(hosts, 3, g, 4, NULL, 0, res), 2);
        assert_int_equal(res[1].host, 1); /* 6 GiB first: 4 GiB left */
        assert_int_equal(res[2].host, -1);
        assert_string_equal(res[2].reason, "requested destination a has 4096 MiB free, the guest needs 5120 MiB");
        assert_int_equal(res[0].host, 1); /* 2 GiB left, and group db */
        assert_int_equal(res[3].host, -1);
        assert_string_equal(res[3].reason, "requested destination a already has anti-affinity group db");

        /* the group placed by this plan refuses the next one of the group */
        PlaceGuest two[] = { mkguest("db1", "src", "X", GIB, 1), mkguest("db2", "src", "X", GIB, 1) };
        for (int i = 0; i < 2; i++) {
                snprintf(two[i].requested, sizeof(two[i].requested), "a");
                snprintf(two[i].anti_affinity, sizeof(two[i].anti_affinity), "db");
        }
        assert_int_equal(plan(hosts, 3, two, 2, NULL, 0, res), 1);
        assert_int_equal(res[0].host, 1);
        assert_string_equal(res[1].reason, "requested destination a already has anti-affinity group db");
}

/* ---- order, ties ---------------------------------------------------------- */

static void test_first_fit_decreasing(void **state) {
        /* In input order the small guest would take "a" (most free) and the
         * big one would fit nowhere; largest first, both move. */
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("a", "X", 8 * GIB, 64),
                              mkhost("b", "X", 6 * GIB, 64) };
        PlaceGuest g[] = { mkguest("small", "src", "X", 4 * GIB, 1), mkguest("big", "src", "X", 8 * GIB, 1) };
        PlaceResult res[2];

        assert_int_equal(plan(hosts, 3, g, 2, NULL, 0, res), 2);
        assert_int_equal(res[1].host, 1);
        assert_int_equal(res[0].host, 2);

        /* naive order strands it: shown by planning one at a time */
        PlaceResult one;
        assert_int_equal(plan(hosts, 3, &g[0], 1, NULL, 0, &one), 1);
        assert_int_equal(one.host, 1);
        hosts[1].memory_used_mib += g[0].memory_mib;
        assert_int_equal(plan(hosts, 3, &g[1], 1, NULL, 0, &one), 0);
}

static void test_tie_break(void **state) {
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("host-b", "X", 16 * GIB, 16),
                              mkhost("host-c", "X", 16 * GIB, 16), mkhost("host-a", "X", 16 * GIB, 16) };
        PlaceGuest g[] = { mkguest("g1", "src", "X", GIB, 1), mkguest("g2", "src", "X", GIB, 1),
                           mkguest("g3", "src", "X", GIB, 1), mkguest("g4", "src", "X", GIB, 1) };
        PlaceResult res[4];

        /* equal free memory: by name; equal guests: in input order */
        assert_int_equal(plan(hosts, 4, g, 4, NULL, 0, res), 4);
        assert_string_equal(hosts[res[0].host].name, "host-a");
        assert_string_equal(hosts[res[1].host].name, "host-b");
        assert_string_equal(hosts[res[2].host].name, "host-c");
        assert_string_equal(hosts[res[3].host].name, "host-a");

        /* the same plan whatever the order of the hosts */
        for (int perm = 0; perm < 6; perm++) {
                PlaceHost h2[4] = { hosts[0] };
                int order[6][3] = { { 1, 2, 3 }, { 1, 3, 2 }, { 2, 1, 3 }, { 2, 3, 1 }, { 3, 1, 2 }, { 3, 2, 1 } };
                for (int i = 0; i < 3; i++)
                        h2[i + 1] = hosts[order[perm][i]];
                PlaceResult r2[4];
                assert_int_equal(plan(h2, 4, g, 4, NULL, 0, r2), 4);
                for (int i = 0; i < 4; i++) {
                        assert_string_equal(h2[r2[i].host].name, hosts[res[i].host].name);
                        assert_string_equal(r2[i].reason, res[i].reason);
                }
        }
}

/* ---- estimate ------------------------------------------------------------- */

static void test_estimate_formula(void **state) {
        const double mib = 1048576.0;

        /* clean guest: memory / rate + 0.5 */
        assert_float_equal(place_estimate_s(1024, 0, 125000000), 1024 * mib / 125e6 + 0.5, 1e-9);
        /* dirtying: memory / (rate - dirty) */
        assert_float_equal(place_estimate_s(1024, 25000000, 125000000), 1024 * mib / 100e6 + 0.5, 1e-9);
        /* rate - dirty below rate/10: the floor */
        assert_float_equal(place_estimate_s(1024, 120000000, 125000000), 1024 * mib / 12.5e6 + 0.5, 1e-9);
        /* dirty == rate and dirty > rate: the floor */
        assert_float_equal(place_estimate_s(1024, 125000000, 125000000), 1024 * mib / 12.5e6 + 0.5, 1e-9);
        assert_float_equal(place_estimate_s(1024, UINT64_MAX, 125000000), 1024 * mib / 12.5e6 + 0.5, 1e-9);
        /* unknown link: 1 Gbit/s */
        assert_float_equal(place_estimate_s(1024, 0, 0), 1024 * mib / 125e6 + 0.5, 1e-9);
        /* empty guest: the fixed part */
        assert_float_equal(place_estimate_s(0, 0, 1250000000), 0.5, 1e-12);
        /* 10 Gbit/s, 16 GiB */
        assert_float_equal(place_estimate_s(16384, 0, 1250000000), 16384 * mib / 1.25e9 + 0.5, 1e-9);
}

static void test_estimate_in_plan(void **state) {
        const double mib = 1048576.0;
        PlaceHost hosts[] = { mkhost("src", "X", 64 * GIB, 64), mkhost("fast", "X", 64 * GIB, 64),
                              mkhost("unknown", "X", 32 * GIB, 64) };
        hosts[0].link_bytes_per_s = 2500000000; /* 20 Gbit/s */
        hosts[1].link_bytes_per_s = 1250000000; /* 10 Gbit/s */
        PlaceGuest g = mkguest("web1", "src", "X", 4 * GIB, 1);
        g.dirty_bytes_per_s = 250000000;
        PlaceResult res;

        /* the smaller of the two links */
        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 1);
        assert_int_equal(res.host, 1);
        assert_float_equal(res.estimated_s, 4096 * mib / 1e9 + 0.5, 1e-9);

        /* the destination's link unknown: the default, 1 Gbit/s, and the floor */
        snprintf(g.requested, sizeof(g.requested), "unknown");
        assert_int_equal(plan(hosts, 3, &g, 1, NULL, 0, &res), 1);
        assert_float_equal(res.estimated_s, 4096 * mib / 12.5e6 + 0.5, 1e-9);

        /* or the caller's default */
        PlaceOptions opts = { .default_link_bytes_per_s = 625000000 };
        assert_int_equal(place_guests(hosts, 3, &g, 1, NULL, 0, &opts, &res), 1);
        assert_float_equal(res.estimated_s, 4096 * mib / 375e6 + 0.5, 1e-9);
}

/* ---- bad input ------------------------------------------------------------ */

static void expect_einval(const PlaceHost *hosts, size_t nh, const PlaceGuest *guests, size_t ng,
                          const PlaceResident *residents, size_t nr, PlaceResult *results, const char *detail) {
        err_clear();
        if (results)
                for (size_t i = 0; i < ng; i++)
                        results[i].host = 42;
        assert_int_equal(place_guests(hosts, nh, guests, ng, residents, nr, NULL, results), -EINVAL);
        assert_contains(err_msg(), detail);
        if (results) /* nothing written */
                for (size_t i = 0; i < ng; i++)
                        assert_int_equal(results[i].host, 42);
}

static void test_bad_input(void **state) {
        PlaceHost hosts[] = { mkhost("a", "X", 64 * GIB, 64), mkhost("b", "X", 64 * GIB, 64) };
        PlaceGuest g[] = { mkguest("web1", "a", "X", GIB, 1), mkguest("web2", "zz", "X", GIB, 1) };
        PlaceResident r = mkresident("a", "db");
        PlaceResult res[2];

        expect_einval(NULL, 2, g, 1, NULL, 0, res, "2 hosts but no host array");
        expect_einval(hosts, 2, NULL, 1, NULL, 0, NULL, "1 guests but no guest array");
        expect_einval(hosts, 2, g, 1, NULL, 3, res, "3 residents but no resident array");
        expect_einval(hosts, 2, g, 1, &r, 1, NULL, "1 guests but no result array");
        expect_einval(hosts, 2, g, 2, NULL, 0, res, "guest web2: source host zz unknown");

        PlaceGuest nosrc = mkguest("web3", "", "X", GIB, 1);
        expect_einval(hosts, 2, &nosrc, 1, NULL, 0, res, "guest web3: source host (none) unknown");

        PlaceHost dup[] = { hosts[0], hosts[1], hosts[0] };
        expect_einval(dup, 3, g, 1, NULL, 0, res, "duplicate host name a");

        PlaceHost bad = hosts[0];
        bad.state = (PlaceHostState) 3; /* in the enum's range, so UBSan accepts the load */
        expect_einval(&bad, 1, g, 1, NULL, 0, res, "host a: state 3 unknown");

        PlaceHost unnamed = mkhost("", "X", GIB, 1);
        expect_einval(&unnamed, 1, g, 1, NULL, 0, res, "host 0 has an empty name");

        PlaceHost long_name = hosts[0];
        memset(long_name.name, 'x', sizeof(long_name.name));
        expect_einval(&long_name, 1, g, 1, NULL, 0, res, "host 0: a string is not NUL-terminated");

        PlaceGuest long_group = g[0];
        memset(long_group.anti_affinity, 'g', sizeof(long_group.anti_affinity));
        expect_einval(hosts, 2, &long_group, 1, NULL, 0, res, "guest 0: a string is not NUL-terminated");

        PlaceResident long_res = r;
        memset(long_res.host, 'h', sizeof(long_res.host));
        expect_einval(hosts, 2, g, 1, &long_res, 1, res, "resident 0: a string is not NUL-terminated");

        /* nothing to place is no error */
        assert_int_equal(place_guests(NULL, 0, NULL, 0, NULL, 0, NULL, NULL), 0);
        assert_int_equal(place_guests(hosts, 2, NULL, 0, NULL, 0, NULL, NULL), 0);
}

/* ---- property test -------------------------------------------------------- */

typedef struct Cluster {
        PlaceHost *hosts;
        size_t nh;
        PlaceGuest *guests;
        size_t ng;
        PlaceResident *residents;
        size_t nr;
} Cluster;

static const char *const models[] = { "A", "B", "" };
static const uint64_t links[] = { 0, 25000000, 125000000, 1250000000 };

/* Mostly small clusters; one in eight large (past one bitset word, and
 * groups large enough for their own bitsets), some with wide guests. */
static void cluster_random(TuRng *rng, Cluster *c) {
        bool large = tu_rng_below(rng, 8) == 0, wide = tu_rng_below(rng, 4) == 0;
        c->nh = 1 + tu_rng_below(rng, large ? 400 : 40);
        c->ng = tu_rng_below(rng, large ? 3000 : 120);
        c->nr = tu_rng_below(rng, large ? 1500 : 60);
        c->hosts = calloc(c->nh, sizeof(PlaceHost));
        c->guests = calloc(c->ng ? c->ng : 1, sizeof(PlaceGuest));
        c->residents = calloc(c->nr ? c->nr : 1, sizeof(PlaceResident));
        assert_non_null(c->hosts);
        assert_non_null(c->guests);
        assert_non_null(c->residents);
        uint32_t n_models = 1 + tu_rng_below(rng, 3);

        /* names in an order unrelated to the indexes, so ties test the names */
        uint32_t base = tu_rng_below(rng, 1000);
        for (size_t i = 0; i < c->nh; i++) {
                PlaceHost *h = &c->hosts[i];
                snprintf(h->name, sizeof(h->name), "h%04u", (unsigned) ((base + i * 7919) % 10007));
                snprintf(h->cpu_model, sizeof(h->cpu_model), "%s", models[tu_rng_below(rng, n_models)]);
                uint32_t s = tu_rng_below(rng, 20);
                h->state = s < 16 ? PLACE_HOST_ENABLED : s < 18 ? PLACE_HOST_DRAINING : PLACE_HOST_MAINTENANCE;
                h->healthy = tu_rng_below(rng, 10) != 0;
                h->memory_mib = (uint64_t) (1 + tu_rng_below(rng, 16)) * 2 * GIB; /* coarse: many ties */
                h->memory_used_mib = (uint64_t) tu_rng_below(rng, 5) * GIB;
                if (tu_rng_below(rng, 20) == 0)
                        h->memory_used_mib = h->memory_mib + GIB; /* overcommitted already */
                h->vcpus = 1 + tu_rng_below(rng, wide ? 160 : 32);
                h->vcpus_used = tu_rng_below(rng, h->vcpus + 2);
                h->link_bytes_per_s = links[tu_rng_below(rng, ELEMENTSOF(links))];
        }
        for (size_t i = 0; i < c->ng; i++) {
                PlaceGuest *g = &c->guests[i];
                snprintf(g->name, sizeof(g->name), "g%zu", i);
                snprintf(g->source, sizeof(g->source), "%s", c->hosts[tu_rng_below(rng, (uint32_t) c->nh)].name);
                snprintf(g->cpu_model, sizeof(g->cpu_model), "%s",
                         tu_rng_below(rng, 30) ? models[tu_rng_below(rng, n_models)] : "Z");
                g->memory_mib = tu_rng_below(rng, 4) ? (uint64_t) (1 + tu_rng_below(rng, 8)) * 512
                                                  : 64 + tu_rng_below(rng, 16321);
                g->vcpus = wide && tu_rng_below(rng, 4) == 0 ? 60 + tu_rng_below(rng, 20) : tu_rng_below(rng, 9);
                if (tu_rng_below(rng, 3) == 0)
                        snprintf(g->anti_affinity, sizeof(g->anti_affinity), "grp%u",
                                 tu_rng_below(rng, large ? 40 : 6));
                uint32_t q = tu_rng_below(rng, 12);
                if (q == 0)
                        snprintf(g->requested, sizeof(g->requested), "%s",
                                 c->hosts[tu_rng_below(rng, (uint32_t) c->nh)].name);
                else if (q == 1)
                        snprintf(g->requested, sizeof(g->requested), "nohost");
                g->dirty_bytes_per_s = tu_rng_below(rng, 4) ? 0 : tu_rng_next(rng) % 200000000;
        }
        for (size_t i = 0; i < c->nr; i++) {
                PlaceResident *r = &c->residents[i];
                if (tu_rng_below(rng, 20))
                        snprintf(r->host, sizeof(r->host), "%s", c->hosts[tu_rng_below(rng, (uint32_t) c->nh)].name);
                else
                        snprintf(r->host, sizeof(r->host), "elsewhere");
                if (tu_rng_below(rng, 4))
                        snprintf(r->anti_affinity, sizeof(r->anti_affinity), "grp%u", tu_rng_below(rng, 8));
        }
}

static void cluster_free(Cluster *c) {
        free(c->hosts);
        free(c->guests);
        free(c->residents);
}

static int host_by_name(const Cluster *c, const char *name) {
        for (size_t h = 0; h < c->nh; h++)
                if (strcmp(c->hosts[h].name, name) == 0)
                        return (int) h;
        return -1;
}

/* The reference state: free memory and vCPUs (may go "negative" never), and
 * the anti-affinity groups on each host, as flat lists. */
#define PLACE_TEST_AA 3 /* hosts a reason names for anti-affinity */

typedef struct Ref {
        int64_t *free_mem;
        int64_t *free_vcpus;
        const char **group_host_name; /* group of entry i */
        int *group_host;              /* host of entry i */
        size_t n_groups;
} Ref;

static bool ref_has_group(const Ref *ref, const char *group, int h) {
        for (size_t i = 0; i < ref->n_groups; i++)
                if (ref->group_host[i] == h && strcmp(ref->group_host_name[i], group) == 0)
                        return true;
        return false;
}

static bool ref_valid(const Cluster *c, const Ref *ref, const PlaceGuest *g, int h) {
        const PlaceHost *host = &c->hosts[h];
        return host->state == PLACE_HOST_ENABLED && host->healthy && strcmp(host->name, g->source) != 0 &&
               ref->free_mem[h] >= (int64_t) g->memory_mib && ref->free_vcpus[h] >= (int64_t) g->vcpus &&
               strcmp(host->cpu_model, g->cpu_model) == 0 &&
               !(g->anti_affinity[0] && ref_has_group(ref, g->anti_affinity, h));
}

/* A reference host list: the hosts that receive and have @g's CPU model,
 * but for its source, best first (most free memory, then name). */
typedef struct RefList {
        const Cluster *c;
        const Ref *ref;
        int *h;
        size_t n;
} RefList;

static int cmp_host_ref(const void *x, const void *y, void *userdata) {
        const RefList *l = userdata;
        int a = *(const int *) x, b = *(const int *) y;
        if (l->ref->free_mem[a] != l->ref->free_mem[b])
                return l->ref->free_mem[a] > l->ref->free_mem[b] ? -1 : 1;
        return strcmp(l->c->hosts[a].name, l->c->hosts[b].name);
}

static void ref_list(RefList *l, const PlaceGuest *g) {
        l->n = 0;
        for (size_t h = 0; h < l->c->nh; h++) {
                const PlaceHost *host = &l->c->hosts[h];
                if (host->state == PLACE_HOST_ENABLED && host->healthy && strcmp(host->cpu_model, g->cpu_model) == 0 &&
                    strcmp(host->name, g->source) != 0)
                        l->h[l->n++] = (int) h;
        }
        qsort_r(l->h, l->n, sizeof(int), cmp_host_ref, l);
}

#define REF_ADD(buf, ...) snprintf((buf) + strlen(buf), 512 - strlen(buf), __VA_ARGS__)

static const char *ref_model(const char *m) {
        return m[0] ? m : "\"\"";
}

/* The reference decision for @g against the state in @ref: the host (or
 * -1) and, in @why (512 bytes), the reason placement.h promises. */
static int ref_decide(const Cluster *c, const Ref *ref, const PlaceGuest *g, RefList *l, char *why) {
        const char *model = ref_model(g->cpu_model);
        why[0] = '\0';
        if (g->requested[0]) {
                int h = host_by_name(c, g->requested);
                if (h < 0) {
                        REF_ADD(why, "requested destination %s unknown", g->requested);
                        return -1;
                }
                const PlaceHost *host = &c->hosts[h];
                const char *n = host->name;
                if (strcmp(n, g->source) == 0)
                        REF_ADD(why, "requested destination %s is the source", n);
                else if (host->state == PLACE_HOST_DRAINING)
                        REF_ADD(why, "requested destination %s is draining", n);
                else if (host->state == PLACE_HOST_MAINTENANCE)
                        REF_ADD(why, "requested destination %s is in maintenance", n);
                else if (!host->healthy)
                        REF_ADD(why, "requested destination %s is unhealthy", n);
                else if (strcmp(host->cpu_model, g->cpu_model) != 0)
                        REF_ADD(why, "requested destination %s has CPU model %s, the guest needs %s", n,
                                ref_model(host->cpu_model), model);
                else if (ref->free_mem[h] < (int64_t) g->memory_mib)
                        REF_ADD(why, "requested destination %s has %" PRId64 " MiB free, the guest needs %" PRIu64 " MiB",
                                n, ref->free_mem[h], g->memory_mib);
                else if (ref->free_vcpus[h] < (int64_t) g->vcpus)
                        REF_ADD(why, "requested destination %s has %" PRId64 " vCPUs free, the guest needs %" PRIu32, n,
                                ref->free_vcpus[h], g->vcpus);
                else if (g->anti_affinity[0] && ref_has_group(ref, g->anti_affinity, h))
                        REF_ADD(why, "requested destination %s already has anti-affinity group %s", n, g->anti_affinity);
                else {
                        REF_ADD(why, "requested destination; %" PRId64 " MiB and %" PRId64 " vCPUs free after the move",
                                ref->free_mem[h] - (int64_t) g->memory_mib, ref->free_vcpus[h] - (int64_t) g->vcpus);
                        return h;
                }
                return -1;
        }

        ref_list(l, g);
        int room[PLACE_TEST_AA + 1], best_vcpus = -1;
        size_t n_room = 0;
        for (size_t i = 0; i < l->n; i++) {
                int h = l->h[i];
                if (ref->free_mem[h] < (int64_t) g->memory_mib)
                        break;
                if (ref->free_vcpus[h] >= (int64_t) g->vcpus &&
                    !(g->anti_affinity[0] && ref_has_group(ref, g->anti_affinity, h))) {
                        REF_ADD(why, "most free memory after the move (%" PRId64 " MiB) among hosts with CPU model %s",
                                ref->free_mem[h] - (int64_t) g->memory_mib, model);
                        if (i > 0) {
                                int s = l->h[0];
                                if (ref->free_vcpus[s] < (int64_t) g->vcpus)
                                        REF_ADD(why, "; passed over %s (%" PRId64 " vCPUs free)", c->hosts[s].name,
                                                ref->free_vcpus[s]);
                                else
                                        REF_ADD(why, "; passed over %s (anti-affinity group %s)", c->hosts[s].name,
                                                g->anti_affinity);
                                if (i > 1)
                                        REF_ADD(why, " and %zu more", i - 1);
                        }
                        return h;
                }
                if (best_vcpus < 0 || ref->free_vcpus[h] > ref->free_vcpus[best_vcpus])
                        best_vcpus = h;
                if (ref->free_vcpus[h] >= (int64_t) g->vcpus && n_room++ < PLACE_TEST_AA)
                        room[n_room - 1] = h;
        }

        /* blocked */
        if (l->n == 0) {
                size_t d = 0, m = 0, u = 0, same = 0;
                for (size_t h = 0; h < c->nh; h++) {
                        const PlaceHost *host = &c->hosts[h];
                        if (strcmp(host->cpu_model, g->cpu_model) != 0)
                                continue;
                        same++;
                        if (strcmp(host->name, g->source) == 0)
                                continue;
                        d += host->state == PLACE_HOST_DRAINING;
                        m += host->state == PLACE_HOST_MAINTENANCE;
                        u += host->state == PLACE_HOST_ENABLED;
                }
                if (same == 0)
                        REF_ADD(why, "no host has CPU model %s", model);
                else if (d + m + u == 0)
                        REF_ADD(why, "no host other than the source has CPU model %s", model);
                else {
                        REF_ADD(why, "no enabled healthy host with CPU model %s:", model);
                        const char *sep = " ";
                        if (d) {
                                REF_ADD(why, "%s%zu draining", sep, d);
                                sep = ", ";
                        }
                        if (m) {
                                REF_ADD(why, "%s%zu in maintenance", sep, m);
                                sep = ", ";
                        }
                        if (u)
                                REF_ADD(why, "%s%zu unhealthy", sep, u);
                }
        } else if (n_room > 0) {
                REF_ADD(why, "anti-affinity group %s already on %s", g->anti_affinity, c->hosts[room[0]].name);
                for (size_t i = 1; i < n_room && i < PLACE_TEST_AA; i++)
                        REF_ADD(why, "%s%s", i + 1 == n_room ? " and " : ", ", c->hosts[room[i]].name);
                if (n_room > PLACE_TEST_AA)
                        REF_ADD(why, " and %zu more", n_room - PLACE_TEST_AA);
                REF_ADD(why, n_room == 1 ? ", the only host with room" : ", all the hosts with room");
        } else if (best_vcpus >= 0)
                REF_ADD(why,
                        "no enabled healthy host with %" PRIu32 " vCPUs and %" PRIu64
                        " MiB free and CPU model %s (best: %s, %" PRId64 " vCPUs free)",
                        g->vcpus, g->memory_mib, model, c->hosts[best_vcpus].name, ref->free_vcpus[best_vcpus]);
        else
                REF_ADD(why, "no enabled healthy host with %" PRIu64 " MiB free and CPU model %s (best: %s, %" PRId64
                        " MiB free)", g->memory_mib, model, c->hosts[l->h[0]].name, ref->free_mem[l->h[0]]);
        return -1;
}

static int cmp_guest_ref(const void *x, const void *y, void *userdata) {
        const Cluster *c = userdata;
        size_t a = *(const size_t *) x, b = *(const size_t *) y;
        uint64_t ma = c->guests[a].memory_mib, mb = c->guests[b].memory_mib;
        if (ma != mb)
                return ma > mb ? -1 : 1;
        return a < b ? -1 : a > b;
}

/* Replay @res against the naive rules. */
static void check_plan(const Cluster *c, const PlaceResult *res, int placed, uint32_t seed) {
        Ref ref = {
                .free_mem = calloc(c->nh, sizeof(int64_t)),
                .free_vcpus = calloc(c->nh, sizeof(int64_t)),
                .group_host_name = calloc(c->nr + c->ng + 1, sizeof(char *)),
                .group_host = calloc(c->nr + c->ng + 1, sizeof(int)),
        };
        size_t *order = calloc(c->ng + 1, sizeof(size_t));
        RefList list = { .c = c, .ref = &ref, .h = calloc(c->nh, sizeof(int)) };
        int64_t *cap_mem = calloc(c->nh, sizeof(int64_t)), *cap_vcpus = calloc(c->nh, sizeof(int64_t));
        int n_placed = 0;

        for (size_t h = 0; h < c->nh; h++) {
                const PlaceHost *host = &c->hosts[h];
                cap_mem[h] = ref.free_mem[h] = MAX((int64_t) host->memory_mib - (int64_t) host->memory_used_mib, 0);
                cap_vcpus[h] = ref.free_vcpus[h] = MAX((int64_t) host->vcpus - (int64_t) host->vcpus_used, 0);
        }
        for (size_t i = 0; i < c->nr; i++) {
                int h = host_by_name(c, c->residents[i].host);
                if (h >= 0 && c->residents[i].anti_affinity[0]) {
                        ref.group_host_name[ref.n_groups] = c->residents[i].anti_affinity;
                        ref.group_host[ref.n_groups++] = h;
                }
        }
        for (size_t i = 0; i < c->ng; i++)
                order[i] = i;
        qsort_r(order, c->ng, sizeof(size_t), cmp_guest_ref, (void *) c);

        for (size_t k = 0; k < c->ng; k++) {
                size_t gi = order[k];
                const PlaceGuest *g = &c->guests[gi];
                int want = -1;
                if (g->requested[0]) {
                        int r = host_by_name(c, g->requested);
                        if (r >= 0 && ref_valid(c, &ref, g, r))
                                want = r;
                } else {
                        for (size_t h = 0; h < c->nh; h++) {
                                if (!ref_valid(c, &ref, g, (int) h))
                                        continue;
                                if (want < 0 || ref.free_mem[h] > ref.free_mem[want] ||
                                    (ref.free_mem[h] == ref.free_mem[want] &&
                                     strcmp(c->hosts[h].name, c->hosts[want].name) < 0))
                                        want = (int) h;
                        }
                }
                if (res[gi].host != want)
                        fail_msg("seed %u guest %s (%" PRIu64 " MiB): placed on %d, reference says %d (%s)", seed,
                                 g->name, g->memory_mib, res[gi].host, want, res[gi].reason);
                /* the list-based reference, with its reason, agrees to the byte */
                char why[512];
                assert_int_equal(ref_decide(c, &ref, g, &list, why), want);
                assert_true(strlen(why) < sizeof(res[gi].reason) - 1); /* never cut here */
                if (strcmp(res[gi].reason, why) != 0)
                        fail_msg("seed %u guest %s: reason\n  \"%s\"\nreference\n  \"%s\"", seed, g->name,
                                 res[gi].reason, why);
                if (want < 0) {
                        assert_true(res[gi].estimated_s == 0);
                        continue;
                }
                n_placed++;
                ref.free_mem[want] -= (int64_t) g->memory_mib;
                ref.free_vcpus[want] -= g->vcpus;
                if (g->anti_affinity[0]) {
                        ref.group_host_name[ref.n_groups] = g->anti_affinity;
                        ref.group_host[ref.n_groups++] = want;
                }
                int src = host_by_name(c, g->source);
                uint64_t ls = c->hosts[src].link_bytes_per_s ? c->hosts[src].link_bytes_per_s : 125000000;
                uint64_t ld = c->hosts[want].link_bytes_per_s ? c->hosts[want].link_bytes_per_s : 125000000;
                assert_float_equal(res[gi].estimated_s, place_estimate_s(g->memory_mib, g->dirty_bytes_per_s, MIN(ls, ld)),
                                   1e-9);
        }
        assert_int_equal(placed, n_placed);

        /* and from the results alone: no host overcommitted, no group twice */
        for (size_t h = 0; h < c->nh; h++) {
                int64_t mem = 0, vcpus = 0;
                for (size_t i = 0; i < c->ng; i++) {
                        if (res[i].host != (int) h)
                                continue;
                        mem += (int64_t) c->guests[i].memory_mib;
                        vcpus += c->guests[i].vcpus;
                        for (size_t j = 0; j < c->ng && c->guests[i].anti_affinity[0]; j++)
                                if (j != i && res[j].host == (int) h &&
                                    strcmp(c->guests[j].anti_affinity, c->guests[i].anti_affinity) == 0)
                                        fail_msg("seed %u: group %s twice on %s", seed, c->guests[i].anti_affinity,
                                                 c->hosts[h].name);
                }
                assert_true(mem <= cap_mem[h]);
                assert_true(vcpus <= cap_vcpus[h]);
        }
        free(ref.free_mem);
        free(ref.free_vcpus);
        free(ref.group_host_name);
        free(ref.group_host);
        free(order);
        free(list.h);
        free(cap_mem);
        free(cap_vcpus);
}

static void test_property_random(void **state) {
        size_t total_placed = 0, total_blocked = 0;

        for (uint32_t seed = 1; seed <= 200; seed++) {
                TuRng rng = { .s = 0x9e3779b97f4a7c15ULL * seed };
                Cluster c;
                cluster_random(&rng, &c);
                PlaceResult *res = calloc(c.ng + 1, sizeof(PlaceResult));
                assert_non_null(res);
                int placed = place_guests(c.hosts, c.nh, c.guests, c.ng, c.residents, c.nr, NULL, res);
                if (placed < 0)
                        fail_msg("seed %u: %s", seed, err_str(placed));
                check_plan(&c, res, placed, seed);
                total_placed += (size_t) placed;
                total_blocked += c.ng - (size_t) placed;
                free(res);
                cluster_free(&c);
        }
        /* the generator must exercise both outcomes */
        print_message("property: %zu placed, %zu blocked over 200 clusters\n", total_placed, total_blocked);
        assert_true(total_placed > 1000);
        assert_true(total_blocked > 1000);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_most_free_memory),
                cmocka_unit_test(test_rule_state),
                cmocka_unit_test(test_rule_health),
                cmocka_unit_test(test_rule_source_excluded),
                cmocka_unit_test(test_rule_memory),
                cmocka_unit_test(test_rule_memory_accumulates),
                cmocka_unit_test(test_rule_vcpus),
                cmocka_unit_test(test_rule_cpu_model),
                cmocka_unit_test(test_anti_affinity_residents),
                cmocka_unit_test(test_anti_affinity_in_plan),
                cmocka_unit_test(test_anti_affinity_many_hosts),
                cmocka_unit_test(test_wide_guest_reasons),
                cmocka_unit_test(test_requested_valid),
                cmocka_unit_test(test_requested_invalid),
                cmocka_unit_test(test_requested_after_earlier_placement),
                cmocka_unit_test(test_first_fit_decreasing),
                cmocka_unit_test(test_tie_break),
                cmocka_unit_test(test_estimate_formula),
                cmocka_unit_test(test_estimate_in_plan),
                cmocka_unit_test(test_bad_input),
                cmocka_unit_test(test_property_random),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
