/* Unit tests for the time limits of core/migparams.c: the completion
 * timeout and MigrateFinish's limit, which the source uses as its call's
 * deadline and the destination as the bound of its own waits (the last
 * pages of a post-copy), so the two sides can never disagree about how long
 * a finish may take; and the stream transport's JSON form. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "converge.h"
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_completion_timeout_per_started_gib),
                cmocka_unit_test(test_converge_uses_the_same_completion_timeout),
                cmocka_unit_test(test_finish_limit_precopy_is_the_base),
                cmocka_unit_test(test_finish_limit_postcopy_adds_the_completion_timeout),
                cmocka_unit_test(test_transport_json_round_trip),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
