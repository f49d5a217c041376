/* Unit tests for the plan's estimated makespan (place_makespan_s(),
 * coordinator/placement-makespan.c).
 *
 * Each case has a closed form worked out by hand from the scheduler's
 * rules, and most are ones the old estimate (the largest per-source sum of
 * the guests' estimates, each alone on the links) got wrong: many small
 * guests whose fixed cost overlaps in waves (the 21.9 s predicted for a
 * 6.5 s evacuation), guests to destinations whose links are the narrow
 * ones moving side by side, the cluster limit binding across sources, the
 * incoming limit of one destination binding, a shared link slowing a
 * dirtying guest, and bad input.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "placement.h"

#define MIB 1048576.0

static PlaceHost host(uint64_t link) {
        PlaceHost h = { .state = PLACE_HOST_ENABLED, .healthy = true, .link_bytes_per_s = link };
        return h;
}

static double makespan(const PlaceHost *hosts, size_t nh, const PlaceFlow *flows, size_t nf, const PlaceLimits *lim) {
        double s = -1;
        int r = place_makespan_s(hosts, nh, flows, nf, lim, &s);
        if (r < 0)
                fail_msg("place_makespan_s: %s", err_str(r));
        return s;
}

/* What the old estimate said: the largest per-source sum of the guests'
 * estimates, each alone on the narrower of its two links. */
static double serial_sum(const PlaceHost *hosts, const PlaceFlow *flows, size_t nf) {
        double per[16] = { 0 }, worst = 0;
        for (size_t i = 0; i < nf; i++) {
                uint64_t a = hosts[flows[i].source].link_bytes_per_s, b = hosts[flows[i].destination].link_bytes_per_s;
                per[flows[i].source] += place_estimate_s(flows[i].memory_mib, flows[i].dirty_bytes_per_s, a < b ? a : b);
                worst = per[flows[i].source] > worst ? per[flows[i].source] : worst;
        }
        return worst;
}

/* 40 guests of 64 MiB off one host to 4 others, 10 GB/s links, 8 at once
 * (out 8, in 8, cluster 8): 5 waves of 8 sharing the source link, each
 * wave 8 x 64 MiB / 10 GB/s plus one fixed 0.5 s, not 40 of them. */
static void test_makespan_many_small_guests_pay_the_fixed_cost_per_wave(void **state) {
        PlaceHost hosts[5];
        PlaceFlow flows[40];
        unsigned out[5] = { 8, 8, 8, 8, 8 }, in[5] = { 8, 8, 8, 8, 8 };
        for (size_t h = 0; h < 5; h++)
                hosts[h] = host(10000000000ULL);
        for (size_t i = 0; i < 40; i++)
                flows[i] = (PlaceFlow){ .source = 0, .destination = (int32_t) (1 + i % 4), .memory_mib = 64 };
        PlaceLimits lim = { .max_outgoing = out, .max_incoming = in, .cluster = 8 };
        double wave = 8 * 64 * MIB / 10e9 + 0.5;
        assert_float_equal(makespan(hosts, 5, flows, 40, &lim), 5 * wave, 1e-6);
        /* the old estimate: 40 x (64 MiB / 10 GB/s + 0.5), about 7 times as long */
        assert_true(serial_sum(hosts, flows, 40) > 7 * 5 * wave * 0.9);
}

/* One slot per host: the scheduler runs them one after the other, and
 * the estimate is the sum. */
static void test_makespan_one_slot_is_the_sum(void **state) {
        PlaceHost hosts[2] = { host(125000000), host(125000000) };
        PlaceFlow flows[3] = {
                { .source = 0, .destination = 1, .memory_mib = 1024 },
                { .source = 0, .destination = 1, .memory_mib = 256, .dirty_bytes_per_s = 25000000 },
                { .source = 0, .destination = 1, .memory_mib = 512 },
        };
        unsigned one[2] = { 1, 1 };
        PlaceLimits lim = { .max_outgoing = one, .max_incoming = one, .cluster = 8 };
        assert_float_equal(makespan(hosts, 2, flows, 3, &lim), serial_sum(hosts, flows, 3), 1e-6);
        /* NULL limits count as one slot */
        PlaceLimits none = { .cluster = 0 };
        assert_float_equal(makespan(hosts, 2, flows, 3, &none), serial_sum(hosts, flows, 3), 1e-6);
}

/* Four guests of 1 GiB to four destinations of 1 Gbit/s from a source of
 * 10 GB/s, 4 out at once: the destinations' links are the narrow ones and
 * all four move side by side; the old sum said four times as long. */
static void test_makespan_narrow_destinations_move_side_by_side(void **state) {
        PlaceHost hosts[5] = { host(10000000000ULL), host(125000000), host(125000000), host(125000000),
                               host(125000000) };
        PlaceFlow flows[4];
        unsigned out[5] = { 4, 2, 2, 2, 2 }, in[5] = { 2, 2, 2, 2, 2 };
        for (int i = 0; i < 4; i++)
                flows[i] = (PlaceFlow){ .source = 0, .destination = 1 + i, .memory_mib = 1024 };
        PlaceLimits lim = { .max_outgoing = out, .max_incoming = in, .cluster = 8 };
        double one = 1024 * MIB / 125e6 + 0.5;
        assert_float_equal(makespan(hosts, 5, flows, 4, &lim), one, 1e-6);
        assert_float_equal(serial_sum(hosts, flows, 4), 4 * one, 1e-6);
}

/* Two at once on one 1 Gbit/s link: the bytes take as long as one after
 * the other, but the fixed cost is paid once per wave. */
static void test_makespan_shared_link_overlaps_only_the_fixed_cost(void **state) {
        PlaceHost hosts[3] = { host(125000000), host(125000000), host(125000000) };
        PlaceFlow flows[4];
        unsigned out[3] = { 2, 2, 2 }, in[3] = { 2, 2, 2 };
        for (int i = 0; i < 4; i++)
                flows[i] = (PlaceFlow){ .source = 0, .destination = 1 + i % 2, .memory_mib = 1024 };
        PlaceLimits lim = { .max_outgoing = out, .max_incoming = in, .cluster = 8 };
        assert_float_equal(makespan(hosts, 3, flows, 4, &lim), 2 * (2 * 1024 * MIB / 125e6 + 0.5), 1e-6);
}

/* Two sources of four guests each, 4 out each, but a cluster limit of 4:
 * two waves of four (two per source), each source link shared by two. */
static void test_makespan_cluster_limit_binds_across_sources(void **state) {
        PlaceHost hosts[4] = { host(125000000), host(125000000), host(1000000000), host(1000000000) };
        PlaceFlow flows[8];
        unsigned out[4] = { 4, 4, 4, 4 }, in[4] = { 8, 8, 8, 8 };
        for (int i = 0; i < 8; i++)
                flows[i] = (PlaceFlow){ .source = i % 2, .destination = 2 + i % 2, .memory_mib = 512 };
        PlaceLimits lim = { .max_outgoing = out, .max_incoming = in, .cluster = 4 };
        double wave = 2 * 512 * MIB / 125e6 + 0.5;
        assert_float_equal(makespan(hosts, 4, flows, 8, &lim), 2 * wave, 1e-6);
        /* without the cluster limit: one wave of four per source */
        lim.cluster = 0;
        assert_float_equal(makespan(hosts, 4, flows, 8, &lim), 4 * 512 * MIB / 125e6 + 0.5, 1e-6);
}

/* The destination's incoming limit: 4 guests from 4 sources into one host
 * that takes 1 at a time run one after the other. */
static void test_makespan_incoming_limit_binds(void **state) {
        PlaceHost hosts[5] = { host(125000000), host(125000000), host(125000000), host(125000000),
                               host(10000000000ULL) };
        PlaceFlow flows[4];
        unsigned out[5] = { 2, 2, 2, 2, 2 }, in[5] = { 2, 2, 2, 2, 1 };
        for (int i = 0; i < 4; i++)
                flows[i] = (PlaceFlow){ .source = i, .destination = 4, .memory_mib = 256 };
        PlaceLimits lim = { .max_outgoing = out, .max_incoming = in, .cluster = 8 };
        assert_float_equal(makespan(hosts, 5, flows, 4, &lim), 4 * (256 * MIB / 125e6 + 0.5), 1e-6);
}

/* A dirtying guest next to another on a shared link: its share is half the
 * link, less its dirty rate, and it ends after the clean one, which leaves
 * it the whole link for the rest. */
static void test_makespan_dirty_guest_on_a_shared_link(void **state) {
        PlaceHost hosts[2] = { host(100000000), host(100000000) };
        PlaceFlow flows[2] = {
                { .source = 0, .destination = 1, .memory_mib = 100 },
                { .source = 0, .destination = 1, .memory_mib = 100, .dirty_bytes_per_s = 25000000 },
        };
        unsigned two[2] = { 2, 2 };
        PlaceLimits lim = { .max_outgoing = two, .max_incoming = two, .cluster = 8 };
        double b = 100 * MIB;
        double t1 = b / 50e6;                        /* the clean one: half the link */
        double left = b - 25e6 * t1;                 /* the dirty one sent at 50 - 25 MB/s */
        double t2 = t1 + left / 75e6;                /* then the whole link less 25 MB/s */
        assert_float_equal(makespan(hosts, 2, flows, 2, &lim), t2 + 0.5, 1e-6);
}

static void test_makespan_edge_cases_and_bad_input(void **state) {
        PlaceHost hosts[2] = { host(0), host(0) };
        PlaceFlow empty = { .source = 0, .destination = 1, .memory_mib = 0 };
        PlaceLimits lim = { .cluster = 8 };
        double s = -1;
        /* nothing to move: 0 s; an empty guest: the fixed cost */
        assert_float_equal(makespan(hosts, 2, NULL, 0, &lim), 0, 0);
        assert_float_equal(makespan(hosts, 2, &empty, 1, &lim), 0.5, 1e-12);
        /* unknown links: the default of the limits, else 1 Gbit/s */
        PlaceFlow g = { .source = 0, .destination = 1, .memory_mib = 1024 };
        assert_float_equal(makespan(hosts, 2, &g, 1, &lim), 1024 * MIB / 125e6 + 0.5, 1e-6);
        lim.default_link_bytes_per_s = 250000000;
        assert_float_equal(makespan(hosts, 2, &g, 1, &lim), 1024 * MIB / 250e6 + 0.5, 1e-6);
        /* a flow naming no host, missing arrays */
        PlaceFlow bad = { .source = 0, .destination = 2 };
        assert_int_equal(place_makespan_s(hosts, 2, &bad, 1, &lim, &s), -EINVAL);
        bad.destination = -1;
        assert_int_equal(place_makespan_s(hosts, 2, &bad, 1, &lim, &s), -EINVAL);
        assert_int_equal(place_makespan_s(hosts, 2, NULL, 1, &lim, &s), -EINVAL);
        assert_int_equal(place_makespan_s(hosts, 2, &g, 1, NULL, &s), -EINVAL);
        assert_float_equal(s, -1, 0); /* untouched on failure */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_makespan_many_small_guests_pay_the_fixed_cost_per_wave),
                cmocka_unit_test(test_makespan_one_slot_is_the_sum),
                cmocka_unit_test(test_makespan_narrow_destinations_move_side_by_side),
                cmocka_unit_test(test_makespan_shared_link_overlaps_only_the_fixed_cost),
                cmocka_unit_test(test_makespan_cluster_limit_binds_across_sources),
                cmocka_unit_test(test_makespan_incoming_limit_binds),
                cmocka_unit_test(test_makespan_dirty_guest_on_a_shared_link),
                cmocka_unit_test(test_makespan_edge_cases_and_bad_input),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
