/* Unit tests for the time limits of core/migparams.c: the completion
 * timeout and MigrateFinish's limit, which the source uses as its call's
 * deadline and the destination as the bound of its own waits (the last
 * pages of a post-copy), so the two sides can never disagree about how long
 * a finish may take; the stream transport's and compression's JSON form
 * and validation; and the default count of multifd channels. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "converge.h"
#include "err.h"
#include "migparams.h"

/* completion_s_per_gib for each started GiB; 0 means the default. */
static void test_completion_timeout_per_started_gib(void **state) {
        (void) state;
        MigParams p = { .completion_s_per_gib = 10 };
        assert_int_equal(mig_params_completion_ms(&p, 1), 10000);
        assert_int_equal(mig_params_completion_ms(&p, 1024), 10000);
        assert_int_equal(mig_params_completion_ms(&p, 1025), 20000);
        assert_int_equal(mig_params_completion_ms(&p, 4096), 40000);
        MigParams none = { 0 };
        assert_int_equal(mig_params_completion_ms(&none, 1024), MIG_COMPLETION_S_PER_GIB_DEFAULT * 1000);
        MigParams def = { 0 };
        mig_params_defaults(&def);
        assert_int_equal(mig_params_completion_ms(&def, 3000), mig_params_completion_ms(&none, 3000));
}

/* The convergence policy's budget is the same number (one home). */
static void test_converge_uses_the_same_completion_timeout(void **state) {
        (void) state;
        for (uint32_t per = 1; per <= 300; per += 37)
                for (uint64_t mib = 1; mib <= 9000; mib += 997) {
                        MigParams p = { .completion_s_per_gib = per };
                        mig_params_defaults(&p);
                        ConvergeState s;
                        converge_init(&p, mib, 0, &s);
                        assert_int_equal(s.completion_ms, mig_params_completion_ms(&p, mib));
                }
}

/* Without post-copy a finish is the stream's end, cont and the guest time. */
static void test_finish_limit_precopy_is_the_base(void **state) {
        (void) state;
        MigParams p = { .completion_s_per_gib = 150 };
        assert_int_equal(mig_params_finish_limit_ms(&p, 512, false), MIG_FINISH_BASE_MS);
        assert_int_equal(mig_params_finish_limit_ms(&p, 65536, false), MIG_FINISH_BASE_MS);
}

/* In post-copy the destination's finish lasts until the last page arrived,
 * up to the completion timeout: the limit adds it, so a post-copy of a
 * 1 GiB guest may take its 150 s (well past 60 s and 120 s) without the
 * source's call timing out first. */
static void test_finish_limit_postcopy_adds_the_completion_timeout(void **state) {
        (void) state;
        MigParams p = { 0 };
        mig_params_defaults(&p);
        int64_t l = mig_params_finish_limit_ms(&p, 1024, true);
        assert_int_equal(l, MIG_FINISH_BASE_MS + 150000);
        assert_true(l > 120000 + MIG_FINISH_BASE_MS);
        /* grows with the guest and the parameter */
        assert_true(mig_params_finish_limit_ms(&p, 8192, true) == MIG_FINISH_BASE_MS + 8 * 150000);
        MigParams fast = { .completion_s_per_gib = 20 };
        assert_int_equal(mig_params_finish_limit_ms(&fast, 2048, true), MIG_FINISH_BASE_MS + 40000);
        /* a destination that lost the parameter (restart) uses the default,
         * never a shorter limit than a source with defaults */
        MigParams lost = { 0 };
        assert_int_equal(mig_params_finish_limit_ms(&lost, 1024, true), l);
        /* always at least the pre-copy limit */
        for (uint32_t per = 1; per <= 86400; per = per * 3 + 1)
                assert_true(mig_params_finish_limit_ms(&(MigParams){ .completion_s_per_gib = per }, 1, true) >
                            mig_params_finish_limit_ms(&(MigParams){ .completion_s_per_gib = per }, 1, false));
}

/* "transport" is written only when chosen (older documents compare alike),
 * read back by name, and an unknown name or number is refused. */
static void test_transport_json_round_trip(void **state) {
        char buf[MIG_PARAMS_JSON_MAX];
        MigParams p = { 0 }, q;
        assert_int_equal(mig_params_to_json(&p, buf, sizeof(buf)), 0);
        assert_null(strstr(buf, "transport"));
        for (int t = MIG_TRANSPORT_TLS; t < _MIG_TRANSPORT_MAX; t++) {
                p.transport = (MigTransport) t;
                assert_int_equal(mig_params_to_json(&p, buf, sizeof(buf)), 0);
                assert_non_null(strstr(buf, mig_transport_to_string(p.transport)));
                assert_int_equal(mig_params_from_json(buf, strlen(buf), &q), 0);
                assert_int_equal(q.transport, t);
        }
        assert_int_equal(mig_params_from_json("{\"transport\":\"scp\"}", 19, &q), -EINVAL);
        assert_int_equal(mig_params_from_json("{\"transport\":2}", 15, &q), -EINVAL);
        p.transport = (MigTransport) 9; /* a newer peer's number */
        assert_int_equal(mig_params_validate(&p), -EINVAL);
}

/* "compression" and "zstd_level" are written only when set (older
 * documents compare alike), read back by name; unknown names, levels above
 * the maximum and the combinations compression cannot run with are
 * refused with a message naming the member. */
static void test_compression_json_round_trip_and_validation(void **state) {
        (void) state;
        char buf[MIG_PARAMS_JSON_MAX];
        MigParams p = { 0 }, q;
        assert_int_equal(mig_params_to_json(&p, buf, sizeof(buf)), 0);
        assert_null(strstr(buf, "compression"));
        assert_null(strstr(buf, "zstd_level"));
        p.compression = MIG_COMPRESSION_ZSTD;
        mig_params_defaults(&p);
        assert_int_equal(p.zstd_level, MIG_ZSTD_LEVEL_DEFAULT);
        p.zstd_level = 3;
        assert_int_equal(mig_params_validate(&p), 0);
        assert_int_equal(mig_params_to_json(&p, buf, sizeof(buf)), 0);
        assert_non_null(strstr(buf, "\"compression\":\"zstd\""));
        assert_int_equal(mig_params_from_json(buf, strlen(buf), &q), 0);
        assert_int_equal(q.compression, MIG_COMPRESSION_ZSTD);
        assert_int_equal(q.zstd_level, 3);
        assert_memory_equal(&p, &q, sizeof(p));
        /* every member set at once still fits the documented bound */
        MigParams all = { .bandwidth = UINT64_MAX, .downtime_ms = UINT32_MAX, .max_downtime_ms = UINT32_MAX,
                          .auto_converge = true, .postcopy = POSTCOPY_POLICY_ALLOWED, .postcopy_after_s = UINT32_MAX,
                          .multifd_channels = UINT32_MAX, .completion_s_per_gib = UINT32_MAX,
                          .progress_timeout_s = UINT32_MAX, .skip_time_sync = true, .transport = MIG_TRANSPORT_PLAIN,
                          .compression = MIG_COMPRESSION_ZSTD, .zstd_level = UINT32_MAX };
        assert_int_equal(mig_params_to_json(&all, buf, sizeof(buf)), 0);

        assert_int_equal(mig_params_from_json("{\"compression\":\"zlib\"}", 22, &q), -EINVAL);
        assert_string_equal(err_msg(), "params: 'compression' must be none or zstd, not 'zlib'");
        assert_int_equal(mig_params_from_json("{\"compression\":1}", 17, &q), -EINVAL);

        q = p;
        q.zstd_level = MIG_ZSTD_LEVEL_MAX + 1;
        assert_int_equal(mig_params_validate(&q), -EINVAL);
        assert_non_null(strstr(err_msg(), "'zstd_level'"));
        q = p;
        q.multifd_channels = 1;
        assert_int_equal(mig_params_validate(&q), -EINVAL);
        assert_non_null(strstr(err_msg(), "needs multifd"));
        q.multifd_channels = 4;
        assert_int_equal(mig_params_validate(&q), 0);
        q.postcopy = POSTCOPY_POLICY_ALLOWED;
        assert_int_equal(mig_params_validate(&q), -EINVAL);
        assert_non_null(strstr(err_msg(), "'postcopy' never"));
        /* several channels and post-copy exclude each other, compressed or not */
        q = p;
        q.compression = MIG_COMPRESSION_NONE;
        q.multifd_channels = 2;
        q.postcopy = POSTCOPY_POLICY_AFTER;
        assert_int_equal(mig_params_validate(&q), -EINVAL);
        assert_non_null(strstr(err_msg(), "'multifd_channels' above 1 needs 'postcopy' never"));
        q.multifd_channels = 1;
        assert_int_equal(mig_params_validate(&q), 0);
        q.multifd_channels = 0;
        assert_int_equal(mig_params_validate(&q), 0);
        q = p;
        q.compression = (MigCompression) 7; /* a newer peer's number */
        assert_int_equal(mig_params_validate(&q), -EINVAL);
}

/* One channel per started Gbit/s, capped by the CPUs and 8; 1 = none. */
static void test_multifd_default_channels(void **state) {
        (void) state;
        assert_int_equal(mig_multifd_default_channels(0, 16), 1);           /* unknown: 1 Gbit/s */
        assert_int_equal(mig_multifd_default_channels(12500000, 16), 1);    /* 100 Mbit/s */
        assert_int_equal(mig_multifd_default_channels(125000000, 16), 1);   /* 1 Gbit/s */
        assert_int_equal(mig_multifd_default_channels(125000001, 16), 2);
        assert_int_equal(mig_multifd_default_channels(1250000000, 16), 8); /* 10 Gbit/s: the cap */
        assert_int_equal(mig_multifd_default_channels(625000000, 16), 5);
        assert_int_equal(mig_multifd_default_channels(1250000000, 2), 2);  /* the CPUs */
        assert_int_equal(mig_multifd_default_channels(1250000000, 1), 1);
        assert_int_equal(mig_multifd_default_channels(1250000000, 0), 1);
        assert_int_equal(mig_multifd_default_channels(UINT64_MAX, 64), 8);
}

/* The source settles the count before prepare: an explicit count stays,
 * an unset one follows the link unless QEMU or post-copy rules it out, and
 * compression always gets multifd or a clear refusal. */
static void test_multifd_resolve(void **state) {
        (void) state;
        MigParams p = { .bandwidth = 500000000 };
        assert_int_equal(mig_multifd_resolve(&p, p.bandwidth, 8, true), 0);
        assert_int_equal(p.multifd_channels, 4);
        p = (MigParams){ .bandwidth = 500000000 };
        assert_int_equal(mig_multifd_resolve(&p, p.bandwidth, 8, false), 0);
        assert_int_equal(p.multifd_channels, 1);
        p = (MigParams){ .bandwidth = 500000000, .postcopy = POSTCOPY_POLICY_AFTER };
        assert_int_equal(mig_multifd_resolve(&p, p.bandwidth, 8, true), 0);
        assert_int_equal(p.multifd_channels, 1);
        p = (MigParams){ .multifd_channels = 3, .postcopy = POSTCOPY_POLICY_ALLOWED };
        assert_int_equal(mig_multifd_resolve(&p, 0, 8, true), 0);
        assert_int_equal(p.multifd_channels, 3); /* explicit: kept, as before */
        p = (MigParams){ .multifd_channels = 1 };
        assert_int_equal(mig_multifd_resolve(&p, 10000000000, 8, true), 0);
        assert_int_equal(p.multifd_channels, 1);
        /* compression on a slow link still gets two channels */
        p = (MigParams){ .compression = MIG_COMPRESSION_ZSTD };
        assert_int_equal(mig_multifd_resolve(&p, 12500000, 8, true), 0);
        assert_int_equal(p.multifd_channels, 2);
        p = (MigParams){ .compression = MIG_COMPRESSION_ZSTD };
        assert_int_equal(mig_multifd_resolve(&p, 0, 8, false), -EOPNOTSUPP);
        assert_non_null(strstr(err_msg(), "compression needs multifd"));
        p = (MigParams){ .multifd_channels = 4 };
        assert_int_equal(mig_multifd_resolve(&p, 0, 8, false), -EOPNOTSUPP);
}

/* A cap reaches QEMU as given, none as "unlimited", and a compressed
 * stream keeps none (QEMU 7.2 would meter its pages before compression). */
static void test_qemu_bandwidth(void **state) {
        (void) state;
        MigParams p = { 0 };
        assert_true(mig_params_qemu_bandwidth(&p, 0) == MIG_QEMU_BANDWIDTH_UNLIMITED);
        assert_true(mig_params_qemu_bandwidth(&p, 25000000) == 25000000);
        p.compression = MIG_COMPRESSION_ZSTD;
        assert_true(mig_params_qemu_bandwidth(&p, 25000000) == MIG_QEMU_BANDWIDTH_UNLIMITED);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_completion_timeout_per_started_gib),
                cmocka_unit_test(test_converge_uses_the_same_completion_timeout),
                cmocka_unit_test(test_finish_limit_precopy_is_the_base),
                cmocka_unit_test(test_finish_limit_postcopy_adds_the_completion_timeout),
                cmocka_unit_test(test_transport_json_round_trip),
                cmocka_unit_test(test_compression_json_round_trip_and_validation),
                cmocka_unit_test(test_multifd_default_channels),
                cmocka_unit_test(test_multifd_resolve),
                cmocka_unit_test(test_qemu_bandwidth),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
