/* Unit tests of the protobuf form of migration parameters
 * (proto/migparams-pb.c): every member survives MigParams -> protobuf ->
 * wire bytes -> protobuf -> MigParams, compression included, and an
 * unknown compression number from a newer peer is kept so that validation
 * refuses it instead of silently migrating uncompressed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent.pb-c.h"
#include "migparams-pb.h"

static void round_trip(const MigParams *in, MigParams *out) {
        Drover__V1__MigrationParams m;
        mig_params_to_pb(in, &m);
        size_t n = drover__v1__migration_params__get_packed_size(&m);
        uint8_t *buf = malloc(n ? n : 1);
        assert_non_null(buf);
        drover__v1__migration_params__pack(&m, buf);
        Drover__V1__MigrationParams *u = drover__v1__migration_params__unpack(NULL, n, buf);
        assert_non_null(u);
        mig_params_from_pb(u, out);
        drover__v1__migration_params__free_unpacked(u, NULL);
        free(buf);
}

static void test_every_member_round_trips(void **state) {
        (void) state;
        MigParams p = { .bandwidth = 123456789, .downtime_ms = 250, .max_downtime_ms = 900, .auto_converge = true,
                        .postcopy = POSTCOPY_POLICY_NEVER, .multifd_channels = 4, .completion_s_per_gib = 60,
                        .progress_timeout_s = 20, .skip_time_sync = true, .transport = MIG_TRANSPORT_SSH,
                        .compression = MIG_COMPRESSION_ZSTD, .zstd_level = 3 },
                  q;
        round_trip(&p, &q);
        assert_memory_equal(&p, &q, sizeof(p));
        MigParams none = { 0 };
        round_trip(&none, &q);
        assert_int_equal(q.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(q.zstd_level, 0);
}

static void test_unknown_compression_is_refused(void **state) {
        (void) state;
        Drover__V1__MigrationParams m;
        MigParams q;
        mig_params_to_pb(&(MigParams){ 0 }, &m);
        m.compression = (Drover__V1__MigrationCompression) 5; /* a newer peer's zlib, say */
        mig_params_from_pb(&m, &q);
        assert_int_equal(mig_params_validate(&q), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_member_round_trips),
                cmocka_unit_test(test_unknown_compression_is_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
