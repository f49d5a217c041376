/* Unit tests of the coordinator's stream choice (coordinator/coord-stream.c):
 * compression only for a compressible guest on a link slower than the
 * source's spare cores compress, never with post-copy, and never over an
 * operator's explicit choice; channels follow the link and the smaller
 * host's CPUs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "coord-stream.h"

#define MBPS(x) (UINT64_C(x) * 1000000 / 8) /* megabits/s in bytes/s */

static CoordStreamChoice choose(CoordStreamInput in) {
        CoordStreamChoice c;
        memset(&c, 0xa5, sizeof(c));
        coord_stream_choose(&in, &c);
        assert_non_null(memchr(c.why, '\0', sizeof(c.why)));
        return c;
}

static void test_slow_link_compressible_guest_compresses(void **state) {
        (void) state;
        CoordStreamChoice c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(1000), .source_cpus = 8,
                                                         .dest_cpus = 8, .compressible = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_ZSTD);
        assert_int_equal(c.multifd_channels, 7);
        assert_non_null(strstr(c.why, "zstd"));
        /* two cores: one compresses 400 MB/s, above 100 Mbit/s; still two channels */
        c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(100), .source_cpus = 2, .compressible = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_ZSTD);
        assert_int_equal(c.multifd_channels, 2);
}

static void test_fast_link_or_few_cores_does_not(void **state) {
        (void) state;
        /* 10 Gbit/s = 1250 MB/s; one spare core compresses 400 MB/s */
        CoordStreamChoice c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(10000), .source_cpus = 2,
                                                         .dest_cpus = 2, .compressible = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(c.multifd_channels, 2); /* the link wants 8, the CPUs allow 2 */
        assert_non_null(strstr(c.why, "CPU would be the bottleneck"));
        /* 4 spare cores (1600 MB/s) beat the same link */
        c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(10000), .source_cpus = 5, .compressible = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_ZSTD);
        /* the boundary: a link exactly as fast as the cores is not slower */
        c = choose((CoordStreamInput){ .link_bytes_per_s = COORD_ZSTD_BYTES_PER_S_PER_CORE, .source_cpus = 2,
                                       .compressible = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
}

static void test_not_compressible_or_postcopy_does_not(void **state) {
        (void) state;
        CoordStreamChoice c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(100), .source_cpus = 8 });
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(c.multifd_channels, 1);
        c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(5000), .source_cpus = 16, .dest_cpus = 4 });
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(c.multifd_channels, 4); /* the smaller host */
        c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(100), .source_cpus = 8, .compressible = true,
                                       .postcopy = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(c.multifd_channels, 1);
        /* post-copy keeps one stream for any guest, however fast the link
         * (an explicit count would turn multifd on next to post-copy) */
        c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(10000), .source_cpus = 16, .dest_cpus = 16,
                                       .postcopy = true });
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(c.multifd_channels, 1);
        assert_non_null(strstr(c.why, "post-copy"));
        /* unknown link and CPUs: one stream, as the agent's own default */
        c = choose((CoordStreamInput){ 0 });
        assert_int_equal(c.multifd_channels, 1);
        assert_int_equal(c.compression, MIG_COMPRESSION_NONE);
}

/* The operator's explicit choice wins; the choice always validates. */
static void test_apply_respects_explicit_params(void **state) {
        (void) state;
        CoordStreamChoice c = choose((CoordStreamInput){ .link_bytes_per_s = MBPS(100), .source_cpus = 4,
                                                         .compressible = true });
        MigParams p = { 0 };
        assert_true(coord_stream_apply(&c, &p));
        assert_int_equal(p.compression, MIG_COMPRESSION_ZSTD);
        assert_int_equal(p.multifd_channels, 3);
        mig_params_defaults(&p);
        assert_int_equal(mig_params_validate(&p), 0);
        MigParams one = { .multifd_channels = 1 };
        assert_false(coord_stream_apply(&c, &one));
        assert_int_equal(one.compression, MIG_COMPRESSION_NONE);
        MigParams z = { .compression = MIG_COMPRESSION_ZSTD };
        assert_false(coord_stream_apply(&c, &z));
        assert_int_equal(z.multifd_channels, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_slow_link_compressible_guest_compresses),
                cmocka_unit_test(test_fast_link_or_few_cores_does_not),
                cmocka_unit_test(test_not_compressible_or_postcopy_does_not),
                cmocka_unit_test(test_apply_respects_explicit_params),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
